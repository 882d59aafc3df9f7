"""Variates: u01 boundaries, AS241 accuracy, exact Poisson and gamma inverses, and goodness-of-fit of the draws.

Statistical tests use fixed Philox streams; each states the probability that a correct generator fails it
(the false-failure probability, α ≤ 1e-6), with critical values computed here, not looked up:
KS by the Dvoretzky–Kiefer–Wolfowitz–Massart bound, chi-square from the regularised incomplete gamma.
"""
from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from arrival_core import parallel
from arrival_core.pipeline import rng_failure
from arrival_core.rng import gamma_kernels, poisson_kernels
from arrival_core.rng.errors import RngArgumentError
from arrival_core.rng.streams import blocks, stream_base
from arrival_core.rng.variates import box_muller, gamma_inv, normal_icdf, poisson_inv, u01

DATA = Path(__file__).resolve().parents[1] / "data"
ALPHA = 1e-6
Z_TWO_SIDED = 4.891638475699  # Φ⁻¹(1 - α/2) for α = 1e-6
MF, PH = "5a" * 32, "c3" * 32


def reference_rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text().splitlines()
    return [line.split(",") for line in lines if line and not line.startswith("#")]


def stream_words(label: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n consecutive Philox blocks of a fixed test stream (its domain key names the test)."""
    key, hi, lo = stream_base("S3.bucket_count.v1", MF, PH, 20240607, "baseline_v1", f"test={label}")
    return blocks(np.uint64(key), np.uint64(hi), np.uint64(lo), np.arange(n, dtype=np.uint64))


# ---- critical values ------------------------------------------------------------------------------------------

def upper_gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series below a+1, Lentz continued fraction above)."""
    if x < a + 1:
        term = total = 1.0 / a
        k = a
        while term > total * 1e-17:
            k += 1
            term *= x / k
            total += term
        return 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    b, c, d = x + 1 - a, 1e300, 1 / (x + 1 - a)
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = 1 / (an * d + b)
        c = b + an / c
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_critical(df: int, alpha: float = ALPHA) -> float:
    """x with P(χ²_df > x) = alpha, by bisection on Q(df/2, x/2)."""
    lo, hi = 0.0, 10.0 * df + 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if upper_gamma_q(df / 2, mid / 2) > alpha else (lo, mid)
    return hi


def chi_square(draws: np.ndarray, pmf: np.ndarray, min_expected: float = 20.0) -> tuple[float, int]:
    """(statistic, df) with single-value cells where n·p ≥ min_expected and the two tails lumped."""
    n = len(draws)
    big = np.flatnonzero(pmf * n >= min_expected)
    k_lo, k_hi = int(big[0]), int(big[-1])
    expected = np.concatenate(([pmf[:k_lo + 1].sum()], pmf[k_lo + 1:k_hi], [1.0 - pmf[:k_hi].sum()])) * n
    counts = np.bincount(np.clip(draws, k_lo, k_hi) - k_lo, minlength=k_hi - k_lo + 1)
    return float(((counts - expected) ** 2 / expected).sum()), len(expected) - 1


def ks_threshold(n: int, alpha: float = ALPHA) -> float:
    """DKW–Massart: P(sup |F_n - F| > ε) ≤ 2 exp(-2 n ε²) for every n, so ε = √(ln(2/α) / 2n)."""
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def ks_statistic(sorted_cdf: np.ndarray) -> float:
    n = len(sorted_cdf)
    i = np.arange(1, n + 1)
    return float(max((i / n - sorted_cdf).max(), (sorted_cdf - (i - 1) / n).max()))


# ---- u01 and normals ------------------------------------------------------------------------------------------

def test_u01_is_never_0_or_1_at_the_boundaries():
    x = np.array([0, 2**64 - 2048, 2**64 - 1024, 2**64 - 1, 2047, 4096], dtype=np.uint64)
    u = u01(x)
    assert u.tolist() == [2.0**-53, 1 - 2.0**-53, 1 - 2.0**-53, 1 - 2.0**-53, 2.0**-53, 3 * 2.0**-53]
    assert (u > 0).all() and (u < 1).all()
    # the laws it replaces reach exactly 1.0 at the top of the range
    assert (float(2**64 - 1024) + 0.5) / 2.0**64 == 1.0


def test_u01_gives_odd_multiples_of_2_pow_minus_53():
    x0, _ = stream_words("u01_lattice", 10_000)
    m = u01(x0) * 2.0**53
    assert (m == np.floor(m)).all() and (m.astype(np.int64) % 2 == 1).all()


def test_uniforms_pass_ks_on_a_million_draws():
    """KS on 2e6 uniforms; false-failure probability ≤ 1e-6 (DKW–Massart, valid for every n)."""
    x0, x1 = stream_words("ks_uniform", 1_000_000)
    u = np.sort(np.concatenate((u01(x0), u01(x1))))
    assert ks_statistic(u) <= ks_threshold(len(u))


def test_uniforms_have_no_lag_one_autocorrelation():
    """√n·r₁ ≈ N(0, 1) for iid uniforms; |·| ≤ 4.89 fails with probability ≈ 1e-6."""
    x0, _ = stream_words("lag1", 2_000_000)
    u = u01(x0) - 0.5
    r1 = float((u[1:] * u[:-1]).sum() / (u * u).sum())
    assert abs(r1) * math.sqrt(len(u)) <= Z_TWO_SIDED


def test_box_muller_is_the_cosine_law_of_one_block():
    x0, x1 = stream_words("box_muller_law", 2000)
    z = box_muller(x0, x1)
    u0, u1 = u01(x0), u01(x1)
    want = np.array([math.sqrt(-2.0 * math.log(a)) * math.cos(2.0 * math.pi * b) for a, b in zip(u0, u1)])
    assert np.allclose(z, want, rtol=4e-16, atol=4e-16)


def test_normals_pass_ks_mean_and_variance():
    """n = 1e6 Box–Muller normals. KS: ≤ 1e-6 (DKW–Massart). Mean √n·z̄ and variance √(n/2)(s²-1) are
    asymptotically N(0, 1): each bound 4.89 fails with probability ≈ 1e-6."""
    n = 1_000_000
    x0, x1 = stream_words("normals", n)
    z = box_muller(x0, x1)
    cdf = 0.5 * np.frompyfunc(math.erfc, 1, 1)(-np.sort(z) / math.sqrt(2.0)).astype(np.float64)
    assert ks_statistic(cdf) <= ks_threshold(n)
    assert abs(z.mean()) * math.sqrt(n) <= Z_TWO_SIDED
    assert abs(z.var(ddof=1) - 1.0) * math.sqrt(n / 2) <= Z_TWO_SIDED


def test_normal_icdf_is_within_1e_15_relative_of_the_mpmath_reference():
    rows = reference_rows("normal_icdf_reference.csv")
    u = np.array([float(r[0]) for r in rows])
    z = normal_icdf(u)
    worst = Fraction(0)
    for got, (_, ref) in zip(z.tolist(), rows):
        exact = Fraction(Decimal(ref))
        if exact == 0:
            assert got == 0.0
            continue
        worst = max(worst, abs((Fraction(got) - exact) / exact))
    assert u.min() <= 1e-300 and u.max() == 1 - 2.0**-53  # both tails are on the grid
    assert worst <= Fraction(1, 10**15)


def test_normal_icdf_edges_and_symmetry():
    assert normal_icdf(np.array([0.0, 1.0])).tolist() == [-math.inf, math.inf]
    assert np.isnan(normal_icdf(np.array([-0.1, 1.5, math.nan]))).all()
    u = np.linspace(0.5, 1.0, 1001)[1:-1]
    assert (normal_icdf(u) == -normal_icdf(1.0 - u)).all()  # 1 - u is exact on [½, 1]


# ---- Poisson --------------------------------------------------------------------------------------------------

def test_poisson_inv_matches_the_exact_reference_grid():
    rows = reference_rows("poisson_inv_reference.csv")
    lam = np.array([float(r[0]) for r in rows])
    u = np.array([float(r[1]) for r in rows])
    want = np.array([int(r[2]) for r in rows])
    for r in rows:  # the reference itself brackets u: F(n-1) < u <= F(n)
        assert Fraction(Decimal(r[3])) < Fraction(float(r[1])) <= Fraction(Decimal(r[4]))
    assert {0.0, 1e-6, 0.3, 3.0, 13.5, 13.6, 40.0, 100.0, 500.0, 1e4, 1e5, 1e7} <= set(lam.tolist())
    assert {2.0**-53, 1 - 2.0**-53} <= set(u.tolist())
    got = poisson_inv(lam, u)
    assert got.dtype == np.int64
    bad = np.flatnonzero(got != want)
    assert not len(bad), [(lam[i], u[i], got[i], want[i]) for i in bad[:5]]


def test_poisson_fast_path_equals_the_cdf_checked_path():
    """The no-CDF shortcut (guess far from an integer) must agree with evaluating the CDF at every draw."""
    rng = np.random.default_rng(7)
    n = 1_000_000
    lam = np.exp(rng.uniform(math.log(1e-3), math.log(3e3), n))
    u = u01(rng.integers(0, 2**64, n, dtype=np.uint64))
    fast, checked = np.empty(n, np.int64), np.empty(n, np.int64)
    poisson_kernels.poisson_inv_array(lam, u, True, fast)
    poisson_kernels.poisson_inv_array(lam, u, False, checked)
    assert (fast == checked).all()


@pytest.mark.slow
def test_poisson_fast_path_equals_the_cdf_checked_path_up_to_1e7():
    rng = np.random.default_rng(8)
    n = 400_000
    lam = np.exp(rng.uniform(math.log(3e3), math.log(1e7), n))
    u = u01(rng.integers(0, 2**64, n, dtype=np.uint64))
    fast, checked = np.empty(n, np.int64), np.empty(n, np.int64)
    poisson_kernels.poisson_inv_array(lam, u, True, fast)
    poisson_kernels.poisson_inv_array(lam, u, False, checked)
    assert (fast == checked).all()


def poisson_pmf(lam: float, kmax: int) -> np.ndarray:
    k = np.arange(kmax + 1)
    return np.exp(-lam + k * math.log(lam) - np.array([math.lgamma(i + 1.0) for i in k]))


@pytest.mark.parametrize("lam", [0.5, 4.0, 13.6, 40.0, 250.0, 5000.0])
def test_poisson_draws_pass_chi_square(lam):
    """1e6 draws per λ; false-failure probability 1e-6 (exact χ² quantile at the cell count's df)."""
    x0, _ = stream_words(f"poisson_chi2_{lam}", 1_000_000)
    draws = poisson_inv(np.full(len(x0), lam), u01(x0))
    stat, df = chi_square(draws, poisson_pmf(lam, int(lam + 40 * math.sqrt(lam) + 40)))
    assert df >= 4
    assert stat <= chi2_critical(df), (stat, df)


def test_poisson_inv_lambda_zero_is_zero_and_bad_arguments_are_refused():
    assert poisson_inv(np.zeros(3), np.array([2.0**-53, 0.5, 1 - 2.0**-53])).tolist() == [0, 0, 0]
    for lam, u in ((-1.0, 0.5), (math.nan, 0.5), (1.0000001e7, 0.5), (math.inf, 0.5)):
        with pytest.raises(RngArgumentError) as err:
            poisson_inv(np.array([1.0, lam]), np.array([0.5, u]))
        assert (err.value.function, err.value.argument, err.value.element) == ("poisson_inv", "lam", 1)
        assert rng_failure("S3", err.value).code == "5B.S3.COUNTS_NUMERIC_INVALID"
    for u in (0.0, 1.0, math.nan):
        with pytest.raises(RngArgumentError) as err:
            poisson_inv(3.0, u)
        assert "poisson_inv: u" in str(err.value)


def test_series_coefficients_of_the_continuous_quantile_are_the_exact_rationals():
    """r(s) solving sign(r-1)·√(2(1 - r + r ln r)) = s, and Δ(s) = ln(√r·s/(r-1))/ln r, by exact series reversion."""
    n = 24

    def mul(a, b):
        out = [Fraction(0)] * n
        for i, x in enumerate(a):
            if x:
                for j in range(n - i):
                    out[i + j] += x * b[j]
        return out

    def inverse(a):
        out = [Fraction(0)] * n
        out[0] = 1 / a[0]
        for m in range(1, n):
            out[m] = -sum(a[k] * out[m - k] for k in range(1, m + 1)) / a[0]
        return out

    def sqrt1(a):
        out = [Fraction(1)] + [Fraction(0)] * (n - 1)
        for m in range(1, n):
            out[m] = (a[m] - sum(out[k] * out[m - k] for k in range(1, m))) / 2
        return out

    def compose(a, e):
        out, power = [Fraction(0)] * n, [Fraction(1)] + [Fraction(0)] * (n - 1)
        for k in range(n):
            if k:
                power = mul(power, e)
            out = [o + a[k] * p for o, p in zip(out, power)]
        return out

    log1p = [Fraction(0)] + [Fraction((-1) ** (k + 1), k) for k in range(1, n)]
    g = mul([Fraction(1), Fraction(1)] + [Fraction(0)] * (n - 2), log1p)
    g[1] -= 1  # 1 - r + r ln r with r = 1 + e
    big_g = sqrt1([2 * g[k + 2] for k in range(n - 2)] + [Fraction(0)] * 2)  # F(e) = e·G(e)
    e = [Fraction(0), Fraction(1)] + [Fraction(0)] * (n - 2)
    for _ in range(n):
        e = [Fraction(0)] + compose(inverse(big_g), e)[:n - 1]
    lnh = compose(log1p, [Fraction(0)] + [2 * g[k + 2] for k in range(1, n - 2)] + [Fraction(0)] * 2)
    numerator = [log1p[k] / 2 + lnh[k] / 2 for k in range(n)]  # ln(√(1+e) G(e))
    delta = compose(mul(numerator[1:] + [Fraction(0)], inverse(log1p[1:] + [Fraction(0)])), e)
    np.testing.assert_allclose(poisson_kernels.EC, [float(x) for x in e[:len(poisson_kernels.EC)]], rtol=1e-15, atol=0)
    np.testing.assert_allclose(poisson_kernels.DC, [float(x) for x in delta[:len(poisson_kernels.DC)]], rtol=1e-15, atol=0)


def test_stirling_error_table_matches_its_definition():
    n = np.arange(1, 16)
    want = [math.lgamma(k + 1.0) - (k + 0.5) * math.log(k) + k - 0.5 * math.log(2 * math.pi) for k in n]
    np.testing.assert_allclose(poisson_kernels.STIRLERR[1:], want, rtol=0, atol=2e-14)


# ---- gamma and the NB2 mixture --------------------------------------------------------------------------------

def test_gamma_inv_is_within_1e_10_relative_of_the_reference():
    rows = reference_rows("gamma_inv_reference.csv")
    shape = np.array([float(r[0]) for r in rows])
    u = np.array([float(r[1]) for r in rows])
    got = gamma_inv(shape, u)
    rel = [abs(Fraction(g) / Fraction(Decimal(r[2])) - 1) for g, r in zip(got.tolist(), rows)]
    assert shape.min() == 0.5 and shape.max() == 200.0 and {2.0**-53, 1 - 2.0**-53} <= set(u.tolist())
    assert max(rel) <= Fraction(1, 10**10)


def test_gamma_tables_agree_with_the_direct_solve():
    rng = np.random.default_rng(11)
    shapes = np.round(np.exp(rng.uniform(math.log(0.5), math.log(200.0), 20)), 3)
    n = 200_000
    a = shapes[rng.integers(0, 20, n)]
    u = u01(rng.integers(0, 2**64, n, dtype=np.uint64))
    direct = np.empty(n)
    gamma_kernels.gamma_inv_array(a, u, direct)
    assert np.max(np.abs(gamma_inv(a, u) / direct - 1.0)) <= 1e-11


def test_gamma_inv_refuses_bad_shapes_and_uniforms():
    for shape in (0.0, math.nan):
        with pytest.raises(RngArgumentError) as err:
            gamma_inv(np.array([2.0, shape]), 0.5)
        assert "gamma_inv: shape" in str(err.value)
        assert rng_failure("S3", err.value).code == "5B.S3.COUNT_CONFIG_INVALID"
    with pytest.raises(RngArgumentError) as err:
        gamma_inv(2.0, np.array([0.5, 1.0]))
    assert rng_failure("S3", err.value).code == "5B.S3.COUNTS_NUMERIC_INVALID"


def nb2_pmf(kappa: float, mu: float, kmax: int) -> np.ndarray:
    k = np.arange(kmax + 1)
    log_p = (np.array([math.lgamma(i + kappa) - math.lgamma(i + 1.0) for i in k]) - math.lgamma(kappa)
             + kappa * math.log(kappa / (kappa + mu)) + k * math.log(mu / (kappa + mu)))
    return np.exp(log_p)


@pytest.mark.parametrize(("kappa", "mu"), [(0.5, 10.0), (2.0, 50.0), (20.0, 5.0)])
def test_nb2_mixture_passes_chi_square(kappa, mu):
    """N = PoissonInv(GammaInv(κ, u0)·μ/κ, u1) is NB2(μ, κ); 1e6 draws, false-failure probability 1e-6."""
    x0, x1 = stream_words(f"nb2_{kappa}_{mu}", 1_000_000)
    lam = gamma_inv(np.full(len(x0), kappa), u01(x0)) * (mu / kappa)
    draws = poisson_inv(lam, u01(x1))
    stat, df = chi_square(draws, nb2_pmf(kappa, mu, int(mu * 60 + 200)))
    assert df >= 4
    assert stat <= chi2_critical(df), (stat, df)


# ---- determinism ----------------------------------------------------------------------------------------------

def test_results_do_not_depend_on_thread_count_or_chunking():
    x0, x1 = stream_words("threads", 300_000)
    lam = np.exp(u01(x1) * 12.0)
    kappa = np.where(x1 % np.uint64(3) == np.uint64(0), 0.5, 25.0)

    def run() -> tuple[np.ndarray, ...]:
        return (box_muller(x0, x1), normal_icdf(u01(x0)), poisson_inv(lam, u01(x0)), gamma_inv(kappa, u01(x1)))

    try:
        parallel.set_threads(1)
        one = run()
        parallel.set_threads(3)
        many = run()
    finally:
        parallel.set_threads(None)
    for a, b in zip(one, many):
        assert a.tobytes() == b.tobytes()
    chunked = np.concatenate([poisson_inv(lam[i:i + 7001], u01(x0[i:i + 7001])) for i in range(0, len(lam), 7001)])
    assert chunked.tobytes() == many[2].tobytes()

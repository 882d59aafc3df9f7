"""Stationary latent kernels: ρ values, exact circulant embeddings, doubling, the field law and whitening."""
from __future__ import annotations

import math
import pickle
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from arrival_core import kernels
from arrival_core.rng import streams, variates

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "kernel_reference.txt"
TOL, MAX_FACTOR = 1e-10, 8.0
QP = {"period_buckets": 24.0, "periodic_length": 1.0}
SE = "squared_exponential_v1"

# Test-local ρ, written from the definitions independently of the module (d = τ/L, P = 24, ℓ_p = 1).
RHO = {
    "matern32_v1": lambda t, L: (1.0 + math.sqrt(3.0) * t / L) * np.exp(-math.sqrt(3.0) * t / L),
    "matern52_v1": lambda t, L: (1.0 + math.sqrt(5.0) * t / L + 5.0 * t * t / (3.0 * L * L))
    * np.exp(-math.sqrt(5.0) * t / L),
    SE: lambda t, L: np.exp(-t * t / (2.0 * L * L)),
    "quasi_periodic_v1": lambda t, L: np.exp(-2.0 * np.sin(np.pi * t / 24.0) ** 2 - t / L),
}
EMBED_CASES = [(k, h, L) for k in kernels.KERNELS for h, L in ((168, 6.0), (672, 12.0), (2160, 24.0))]


def _embed(kernel: str, length: float, buckets: int, **kw) -> kernels.Embedding:
    kw = {"tolerance": TOL, "max_factor": MAX_FACTOR, **kw}
    return kernels.embed(kernel, length, buckets, **(QP if kernel == "quasi_periodic_v1" else {}), **kw)


def _cos_sums(rows: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Σ_j vec_j cos(2π row·j / M) per row by the direct O(rows·M) sum; the angle is reduced exactly mod M."""
    m = vec.shape[0]
    table = np.cos(2.0 * np.pi * np.arange(m) / m)
    j = np.arange(m, dtype=np.int64)
    chunks = [table[(rows[i:i + 256, None] * j[None, :]) % m] @ vec for i in range(0, rows.shape[0], 256)]
    return np.concatenate(chunks)


def _circulant_row(kernel: str, length: float, m: int) -> np.ndarray:
    k = np.arange(m, dtype=np.float64)
    return RHO[kernel](np.minimum(k, m - k), length)


@cache
def _direct_eigenvalues(kernel: str, length: float, m: int) -> np.ndarray:
    """λ_k = Σ_j r_j cos(2πjk/M) by the O(M²) sum, with r from the test-local ρ."""
    return _cos_sums(np.arange(m, dtype=np.int64), _circulant_row(kernel, length, m))


def _reference_rows() -> list[tuple[str, float, float, float, int, float]]:
    rows = []
    for line in REFERENCE.read_text().splitlines():
        if line and not line.startswith("#"):
            kernel, length, period, ell, lag, rho = line.split()
            rows.append((kernel, float(length), float(period), float(ell), int(lag), float(rho)))
    return rows


# ---------------------------------------------------------------- correlation and sizes


def test_correlation_matches_the_mpmath_reference_values():
    rows = _reference_rows()
    assert len(rows) == 156 and {r[0] for r in rows} == set(kernels.KERNELS)
    for kernel, length, period, ell, lag, expected in rows:
        extra = {"period_buckets": period, "periodic_length": ell} if kernel == "quasi_periodic_v1" else {}
        got = float(kernels.correlation(kernel, np.array([lag]), length, **extra)[0])
        assert abs(got - expected) <= 1e-12 * abs(expected) + 1e-300, (kernel, length, lag, got, expected)


def test_correlation_refuses_an_unknown_kernel_and_quasi_periodic_without_its_period():
    with pytest.raises(ValueError, match="ou_ar1_buckets_v1"):
        kernels.correlation("ou_ar1_buckets_v1", [0, 1], 6.0)
    with pytest.raises(ValueError, match="period_buckets"):
        kernels.correlation("quasi_periodic_v1", [0, 1], 6.0)


@pytest.mark.parametrize("buckets, size", [(1, 1), (2, 2), (3, 4), (129, 256), (130, 512), (168, 512),
                                           (672, 2048), (2160, 8192)])
def test_initial_size_is_the_smallest_power_of_two_covering_twice_h_minus_one(buckets, size):
    assert kernels.initial_size(buckets) == size


def test_events_cost_is_four_m_draws_and_two_m_blocks():
    assert kernels.events_cost(512) == (2048, 1024)
    emb = _embed("matern32_v1", 6.0, 168)
    assert (emb.size, emb.draws, emb.blocks) == (512, 2048, 1024)


# ---------------------------------------------------------------- exactness of the embedding


@pytest.mark.parametrize("kernel, buckets, length", EMBED_CASES)
def test_fft_eigenvalues_equal_the_direct_cosine_sums(kernel, buckets, length):
    emb = _embed(kernel, length, buckets)
    direct = _direct_eigenvalues(kernel, length, emb.size)
    top = direct.max()
    assert emb.eigenvalues.shape == (emb.size,) and (emb.eigenvalues >= 0).all()
    assert np.abs(emb.eigenvalues - direct).max() <= 1e-9 * top
    np.testing.assert_allclose(emb.sqrt_scaled, np.sqrt(emb.eigenvalues / emb.size), rtol=1e-15, atol=0)


@pytest.mark.parametrize("kernel, buckets, length", EMBED_CASES)
def test_embedding_reproduces_the_toeplitz_correlation(kernel, buckets, length):
    emb = _embed(kernel, length, buckets)
    reproduced = _cos_sums(np.arange(buckets, dtype=np.int64), emb.eigenvalues) / emb.size
    exact = RHO[kernel](np.arange(buckets, dtype=np.float64), length)
    assert np.abs(reproduced - exact).max() <= 1e-10


@pytest.mark.parametrize("kernel, buckets, length", EMBED_CASES)
def test_embedding_size_is_the_first_admissible_power_of_two(kernel, buckets, length):
    emb = _embed(kernel, length, buckets)
    m = kernels.initial_size(buckets)
    while m < emb.size:  # every smaller size tried must be too negative
        lam = _direct_eigenvalues(kernel, length, m)
        assert lam.min() < -TOL * lam.max(), (m, lam.min() / lam.max())
        m *= 2
    lam = _direct_eigenvalues(kernel, length, emb.size)
    assert lam.min() >= -TOL * lam.max() and emb.size <= MAX_FACTOR * 2 * (buckets - 1)


def test_a_long_squared_exponential_doubles_until_non_negative():
    emb = _embed(SE, 24.0, 48)  # 128 and 256 are too negative (direct sums), 512 is not
    assert emb.size == 512
    for m in (128, 256):
        lam = _direct_eigenvalues(SE, 24.0, m)
        assert lam.min() < -TOL * lam.max()


@pytest.mark.parametrize("max_factor, last", [(1.0, 128), (4.0, 256)])
def test_embedding_past_max_factor_raises_kernel_embedding_error_naming_kernel_and_length(max_factor, last):
    with pytest.raises(kernels.KernelEmbeddingError) as err:
        _embed(SE, 24.0, 48, max_factor=max_factor)
    lam = _direct_eigenvalues(SE, 24.0, last)
    e = err.value
    assert isinstance(e, ValueError) and "squared_exponential_v1" in str(e) and "L=24.0" in str(e)
    assert f"M={last}" in str(e) and "H=48" in str(e)
    assert (e.kernel_id, e.length_scale, e.buckets, e.size) == (SE, 24.0, 48, last)
    assert e.negative_mass == pytest.approx(-lam[lam < 0].sum() / np.abs(lam).sum(), rel=1e-9)
    assert e.negative_mass > 0 and e.min_ratio == pytest.approx(lam.min() / lam.max(), rel=1e-9)


def test_kernel_embedding_error_survives_pickling():
    with pytest.raises(kernels.KernelEmbeddingError) as err:
        _embed(SE, 24.0, 48, max_factor=1.0)
    copy = pickle.loads(pickle.dumps(err.value))
    assert str(copy) == str(err.value) and copy.negative_mass == err.value.negative_mass


def test_negatives_within_tolerance_are_clipped_and_the_largest_is_reported():
    lam = _direct_eigenvalues(SE, 24.0, 128)  # min λ / max λ ≈ −2.2e-3: accepted under tolerance 1e-2
    emb = _embed(SE, 24.0, 48, tolerance=1e-2, max_factor=1.0)
    assert emb.size == 128 and (emb.eigenvalues >= 0).all() and (emb.eigenvalues[lam < 0] == 0).all()
    assert emb.largest_clipped == pytest.approx(-lam.min(), rel=1e-9)
    assert emb.largest_clipped > 1e-3 * lam.max()
    assert np.abs(emb.eigenvalues - np.maximum(lam, 0.0)).max() <= 1e-9 * lam.max()


def test_an_embedding_without_negative_eigenvalues_reports_zero_clipped():
    emb = _embed("matern32_v1", 6.0, 2)  # M = 2: λ = (1 + ρ(1), 1 − ρ(1)) > 0
    assert emb.size == 2 and emb.largest_clipped == 0.0
    rho1 = RHO["matern32_v1"](1.0, 6.0)
    np.testing.assert_allclose(emb.eigenvalues, [1 + rho1, 1 - rho1])


def test_a_single_bucket_uses_m_one_and_the_field_is_z1():
    emb = _embed(SE, 6.0, 1)
    z1, z2 = np.array([[0.7], [-1.3]]), np.array([[2.0], [5.0]])
    assert (emb.size, emb.blocks, emb.draws) == (1, 2, 4)
    np.testing.assert_array_equal(kernels.circulant_field(emb.sqrt_scaled, z1, z2, 1), z1)


# ---------------------------------------------------------------- field construction


def test_circulant_field_is_the_real_part_of_the_scaled_fft_truncated_to_h():
    emb = _embed("matern52_v1", 6.0, 20)
    rng = np.random.default_rng(5)
    z1, z2 = rng.standard_normal((3, emb.size)), rng.standard_normal((3, emb.size))
    m = emb.size
    k = np.arange(m)
    dft = np.exp(-2j * np.pi * np.outer(k, k) / m)  # the unnormalised forward DFT, as numpy.fft.fft
    expected = (dft @ (np.sqrt(emb.eigenvalues / m)[:, None] * (z1 + 1j * z2).T)).real.T[:, :20]
    np.testing.assert_allclose(kernels.circulant_field(emb.sqrt_scaled, z1, z2, 20), expected, atol=1e-12)


def test_embed_many_computes_each_distinct_length_once():
    lengths = [6.0, 12.0, 6.0, 24.0, 12.0]
    groups = kernels.embed_many("matern32_v1", lengths, 168, tolerance=TOL, max_factor=MAX_FACTOR)
    assert [e.length_scale for e in groups.embeddings] == [6.0, 12.0, 24.0]
    np.testing.assert_array_equal(groups.index, [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(groups.sizes, [512] * 5)
    assert groups.buckets == 168


def test_normal_layout_lists_each_groups_two_m_blocks_in_order():
    group, block = kernels.normal_layout([2, 1])
    np.testing.assert_array_equal(group, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(block, np.array([0, 1, 2, 3, 0, 1], dtype=np.uint64))


def test_grouped_field_takes_z1_from_blocks_below_m_and_z2_from_blocks_m_to_2m():
    groups = kernels.embed_many(SE, [6.0, 24.0, 6.0], 48, tolerance=TOL, max_factor=MAX_FACTOR)
    sizes = groups.sizes
    assert sizes.tolist() == [128, 512, 128]
    normals = np.random.default_rng(9).standard_normal(int(2 * sizes.sum()))
    field = kernels.grouped_field(groups, normals)
    start = 0
    for g, m in enumerate(sizes.tolist()):
        own = normals[start:start + 2 * m]
        emb = groups.embeddings[groups.index[g]]
        expected = kernels.circulant_field(emb.sqrt_scaled, own[None, :m], own[None, m:], 48)[0]
        np.testing.assert_array_equal(field[g], expected)
        start += 2 * m


# ---------------------------------------------------------------- whitening


def test_whitening_an_exponential_correlation_gives_the_ar1_innovations():
    phi, h = math.exp(-1.0 / 6.0), 40
    z = np.random.default_rng(3).standard_normal((4, h))  # the identity holds for any input series
    e = kernels.toeplitz_innovations(phi ** np.arange(h), z)
    np.testing.assert_allclose(e[:, 0], z[:, 0], rtol=1e-13)
    np.testing.assert_allclose(e[:, 1:], (z[:, 1:] - phi * z[:, :-1]) / math.sqrt(1 - phi * phi), atol=1e-12)


def test_whitening_equals_the_inverse_cholesky_factor():
    h = 168
    rho = RHO["matern52_v1"](np.arange(h, dtype=np.float64), 6.0)
    r = rho[np.abs(np.subtract.outer(np.arange(h), np.arange(h)))]
    z = np.random.default_rng(4).standard_normal((5, h))
    expected = np.linalg.solve(np.linalg.cholesky(r), z.T).T
    np.testing.assert_allclose(kernels.toeplitz_innovations(rho, z), expected, atol=1e-8)


def test_whitening_refuses_a_correlation_that_is_not_positive_definite():
    with pytest.raises(ValueError, match="not positive definite"):
        kernels.toeplitz_innovations([1.0, 0.9, 0.0], np.zeros((1, 3)))


# ---------------------------------------------------------------- the law of drawn fields
#
# Each kernel draws G = 1000 groups of H = 168 buckets (n = 168 000 values) from the project's Philox
# streams under fixed keys, through embed_many → normal_layout → streams.blocks → box_muller →
# grouped_field. The length scales keep the Toeplitz matrix well conditioned, so whitening is accurate in
# float64 (a long squared exponential is numerically singular: its innovation variances fall below rounding).
#
# False-failure budget: each statistical test function below fails wrongly with probability ≤ 1e-6 in total
# over its four kernels (≤ 2.5e-7 per kernel; the lag test splits its kernel share over six lags). The
# fields are exact in law, so the whitened values are iid N(0, 1) up to eigenvalue clipping below
# 1e-10 · max λ.

STAT_GROUPS, STAT_BUCKETS, STAT_SIGMA = 1000, 168, 0.3
STAT_LENGTH = {"matern32_v1": 12.0, "matern52_v1": 6.0, SE: 2.0, "quasi_periodic_v1": 24.0}
ALPHA_PER_KERNEL = 1e-6 / len(kernels.KERNELS)


@cache
def _drawn_field(kernel: str) -> np.ndarray:
    """σ-scaled fields Z (G×H) of one kernel from fixed Philox streams (the S2 layout: z1 = blocks 0..M−1)."""
    lengths = np.full(STAT_GROUPS, STAT_LENGTH[kernel])
    groups = kernels.embed_many(kernel, lengths, STAT_BUCKETS, tolerance=TOL, max_factor=MAX_FACTOR,
                                **(QP if kernel == "quasi_periodic_v1" else {}))
    domain_keys = [f"group_id=g{i:04d}" for i in range(STAT_GROUPS)]
    key, hi, lo = streams.stream_bases("S2.latent_vector.v1", "c" * 64, "d" * 64, 20240611,
                                       f"kernels_{kernel}", domain_keys)
    group, block = kernels.normal_layout(groups.sizes)
    normals = variates.box_muller(*streams.blocks(key[group], hi[group], lo[group], block))
    return STAT_SIGMA * kernels.grouped_field(groups, normals)


def _rho_stat(kernel: str) -> np.ndarray:
    return RHO[kernel](np.arange(STAT_BUCKETS, dtype=np.float64), STAT_LENGTH[kernel])


def _whitened(kernel: str, length: float | None = None) -> np.ndarray:
    rho = RHO[kernel](np.arange(STAT_BUCKETS, dtype=np.float64), length or STAT_LENGTH[kernel])
    return kernels.toeplitz_innovations(rho, _drawn_field(kernel) / STAT_SIGMA).reshape(-1)


def _laurent_massart_interval(n: int, alpha: float) -> tuple[float, float]:
    """[n − 2√(nx), n + 2√(nx) + 2x], x = ln(2/α): a χ²_n variable leaves it with probability ≤ α."""
    x = math.log(2.0 / alpha)
    return n - 2.0 * math.sqrt(n * x), n + 2.0 * math.sqrt(n * x) + 2.0 * x


@pytest.mark.parametrize("kernel", kernels.KERNELS)
def test_whitened_field_is_standard_normal_within_the_dkw_band(kernel):
    """KS distance of the n whitened values to Φ is ≤ ε = √(ln(2/α)/2n) (DKW–Massart), α = 2.5e-7 per kernel.

    sup|F_n − Φ| ≤ ε ⇔ Φ⁻¹(i/n − ε) ≤ e_(i) ≤ Φ⁻¹((i−1)/n + ε) for every order statistic e_(i); Φ⁻¹ is the
    project's AS241. False failure ≤ 2.5e-7 per kernel, ≤ 1e-6 over the four.
    """
    e = np.sort(_whitened(kernel))
    n = e.shape[0]
    eps = math.sqrt(math.log(2.0 / ALPHA_PER_KERNEL) / (2.0 * n))
    i = np.arange(1, n + 1)
    low = variates.normal_icdf(np.clip(i / n - eps, 0.0, 1.0))
    high = variates.normal_icdf(np.clip((i - 1) / n + eps, 0.0, 1.0))
    outside = (e < low) | (e > high)
    assert n >= 100_000
    assert not outside.any(), f"order statistic {int(np.argmax(outside))} leaves the DKW band"


@pytest.mark.parametrize("kernel", kernels.KERNELS)
def test_whitened_sum_of_squares_is_within_the_laurent_massart_chi_square_bounds(kernel):
    """Σe² ~ χ²_n; Laurent–Massart with e^{−x} = α/2 per side, α = 2.5e-7 per kernel (≤ 1e-6 over four)."""
    e = _whitened(kernel)
    low, high = _laurent_massart_interval(e.shape[0], ALPHA_PER_KERNEL)
    assert low <= float(e @ e) <= high, (float(e @ e) / e.shape[0], low / e.shape[0], high / e.shape[0])


@pytest.mark.parametrize("kernel", kernels.KERNELS)
def test_whitened_sum_of_squares_rejects_a_mistaken_length_scale(kernel):
    """Power check on the same fixed draws: whitening with 1.5·L (a wrong law) leaves the χ² interval."""
    e = _whitened(kernel, 1.5 * STAT_LENGTH[kernel])
    low, high = _laurent_massart_interval(e.shape[0], ALPHA_PER_KERNEL)
    assert not low <= float(e @ e) <= high


@pytest.mark.parametrize("kernel", kernels.KERNELS)
def test_field_autocovariance_at_lags_0_to_5_is_sigma_squared_rho(kernel):
    """ĉ(τ) = Σ_g Σ_t Z_t Z_{t+τ} / (G(H−τ)) lies within σ²ρ(τ) ± D_τ / (G(H−τ)) for τ = 0..5.

    S_τ = Σ_g Z_gᵀ B_τ Z_g (B_τ symmetric, ½ on the ±τ diagonals; B_0 = I) is a Gaussian quadratic form:
    S_τ − E S_τ = Σ μ_i (w_i² − 1), w iid N(0, 1), μ the eigenvalues of σ² Cᵀ B_τ C (R = C Cᵀ by Cholesky),
    each repeated G times. Laurent–Massart on the positive and negative parts separately gives
    P(|S_τ − E S_τ| ≥ 2(‖μ₊‖₂ + ‖μ₋‖₂)√x + 2‖μ‖_∞ x) ≤ 4e^{−x}. With 4e^{−x} = α/6, α = 2.5e-7 per kernel,
    the union over six lags and four kernels keeps the false failure ≤ 1e-6.
    """
    z = _drawn_field(kernel)
    rho = _rho_stat(kernel)
    h = STAT_BUCKETS
    chol = np.linalg.cholesky(rho[np.abs(np.subtract.outer(np.arange(h), np.arange(h)))])
    x = math.log(4.0 / (ALPHA_PER_KERNEL / 6))
    for tau in range(6):
        b = (np.eye(h, k=tau) + np.eye(h, k=-tau)) / 2.0
        mu = STAT_SIGMA**2 * np.linalg.eigvalsh(chol.T @ b @ chol)
        pos = math.sqrt(STAT_GROUPS * float(np.sum(mu[mu > 0] ** 2)))
        neg = math.sqrt(STAT_GROUPS * float(np.sum(mu[mu < 0] ** 2)))
        count = STAT_GROUPS * (h - tau)
        bound = (2.0 * (pos + neg) * math.sqrt(x) + 2.0 * float(np.abs(mu).max()) * x) / count
        estimate = float(np.sum(z[:, :h - tau] * z[:, tau:])) / count
        exact = STAT_SIGMA**2 * rho[tau]
        assert abs(estimate - exact) <= bound, (tau, estimate, exact, bound)


def test_the_coupled_size_is_the_first_doubling_size_at_which_every_length_scale_embeds():
    """matern32 over 168 buckets: L = 48 first embeds at M = 1024, L = 24 at 512; coupled, both embed at 1024, and
    the embedding of L = 24 started there is the 1024-point one (its own first row, clipped λ ≥ −tol·max λ)."""
    assert (_embed("matern32_v1", 48.0, 168).size, _embed("matern32_v1", 24.0, 168).size) == (1024, 512)
    size = kernels.coupled_size("matern32_v1", [24.0, 48.0], 168, tolerance=TOL, max_factor=MAX_FACTOR)
    assert size == 1024
    assert kernels.coupled_size("matern32_v1", [24.0], 168, tolerance=TOL, max_factor=MAX_FACTOR) == 512
    wide = _embed("matern32_v1", 24.0, 168, min_size=1024)
    k = np.arange(1024.0)
    lam = np.fft.fft(kernels.correlation("matern32_v1", np.minimum(k, 1024 - k), 24.0)).real
    assert wide.size == 1024 and np.array_equal(wide.eigenvalues, np.maximum(lam, 0.0))
    with pytest.raises(ValueError):
        _embed("matern32_v1", 24.0, 168, min_size=768)  # not a power of two
    with pytest.raises(ValueError):
        _embed("matern32_v1", 24.0, 168, min_size=1 << 14)  # beyond max_factor · 2(H−1)

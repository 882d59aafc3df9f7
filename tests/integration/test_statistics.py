"""Statistical properties of the demo world's S2 fields and S3 counts, each test with false-failure probability ≤ 1e-6.

Every bound here is rigorous (no normal approximation), for fixed inputs (demo world, seed 42):
- latent variance: per group, Q = Σ_t (Z_t/σ)² is a Gaussian quadratic form Σ λ_i w_i² with λ the eigenvalues of
  the AR(1) correlation matrix (identity for iid), so Laurent & Massart (2000) give
  P(Q − H ≥ 2‖λ‖₂√x + 2‖λ‖∞x) ≤ e^-x and P(Q − H ≤ −2‖λ‖₂√x) ≤ e^-x;
- lag-1: T = Σ_t w_t (w_{t+1} − φ w_t) (w = Z/σ) is a martingale whose increments are, given the past, normal with
  variance (1−φ²)w_t²; with V their sum, P(|T| ≥ a, V ≤ b) ≤ 2 exp(−a²/2b), and b bounds V by Laurent–Massart;
- counts: given μ the counts are independent; the Poisson total is Poisson(Σμ) (Bernstein:
  P(X − Λ ≥ t) ≤ exp(−t²/2(Λ + t/3)), P(Λ − X ≥ t) ≤ exp(−t²/2Λ)); sums W of centred terms use Markov on W⁴ with
  E W⁴ ≤ Σ E w_i⁴ + 3 (Σ E w_i²)², the moments computed exactly from the count law's cumulants.
Groups are combined by a union bound, so each test's total false-failure probability is ≤ ALPHA.
"""
from __future__ import annotations

import math
import shutil
from math import comb, factorial

import numpy as np
import polars as pl
import pytest
from s2s3lib import edited_config, read, run_all, store

from arrival_core.world import WorldInfo

ALPHA = 1e-6


@pytest.fixture(scope="module")
def demo_runs(demo_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """The demo world with the shipped policies (OU, Poisson), an iid latent model and the NB2 count law."""
    tmp = tmp_path_factory.mktemp("stats")
    root = tmp / "world"
    shutil.copytree(demo_world.root, root)
    runs = {}
    st = store(root)
    runs["ou"] = (st, {sid: run_all(st, scenario_id=sid, upto="run_s3") for sid in ("baseline_v1", "stress_v1")})
    iid = store(root, edited_config(tmp, "arrival_lgcp_config_5B",
                                    lambda d: d.update(latent_model_id="log_gaussian_iid_v1"), name="iid"))
    runs["iid"] = (iid, {"baseline_v1": run_all(iid, upto="run_s2")})
    nb2 = store(root, edited_config(tmp, "arrival_count_config_5B", lambda d: d.update(count_law_id="nb2"),
                                    name="nb2"))
    runs["nb2"] = (nb2, {"stress_v1": run_all(nb2, scenario_id="stress_v1", upto="run_s3")})
    return runs


# ---- latent fields -------------------------------------------------------------------------------------------------

def _fields(st, ident) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w = Z/σ as G×H, σ per group, φ per group) from the published latent field."""
    field = read(st, "s2_latent_field_5B", ident).sort("group_id", "bucket_index")
    h = read(st, "s1_time_grid_5B", ident).height
    g = field.height // h
    z = field["latent_value"].to_numpy().reshape(g, h)
    sigma = field["latent_std"].to_numpy()[::h]
    phi = np.exp(-1.0 / field["length_scale_buckets"].to_numpy()[::h])
    return z / sigma[:, None], sigma, phi


def _spectrum(phi: float, n: int) -> tuple[float, float]:
    """(‖λ‖₂, ‖λ‖∞) of the n×n correlation matrix φ^|i−j|."""
    lam = np.linalg.eigvalsh(phi ** np.abs(np.subtract.outer(np.arange(n), np.arange(n))))
    return float(np.sqrt((lam * lam).sum())), float(lam.max())


def _check_latent(w: np.ndarray, phi: np.ndarray) -> None:
    g, h = w.shape
    x = math.log(4 * g / ALPHA)  # variance: α/(4G) per side per group; lag-1: α/(2G) per group
    spectra = {p: (_spectrum(p, h), _spectrum(p, h - 1)) for p in np.unique(phi)}
    for i in range(g):
        p = phi[i]
        (l2, linf), (l2h, linfh) = spectra[p]
        q = float((w[i] ** 2).sum())
        assert h - 2 * l2 * math.sqrt(x) <= q <= h + 2 * l2 * math.sqrt(x) + 2 * linf * x, (i, q / h)
        head = w[i, :-1]
        t = float((head * (w[i, 1:] - p * head)).sum())
        b = (1 - p * p) * (h - 1 + 2 * l2h * math.sqrt(x) + 2 * linfh * x)
        a = math.sqrt(2 * b * math.log(8 * g / ALPHA))
        assert abs(t) <= a, (i, t, a)


@pytest.mark.parametrize("sid", ["baseline_v1", "stress_v1"])
def test_ou_fields_have_std_sigma_and_lag1_autocorrelation_phi(demo_runs, sid):
    st, idents = demo_runs["ou"]
    w, _, phi = _fields(st, idents[sid])
    assert w.shape[0] > 200 and (phi > 0.7).all()  # strongly autocorrelated: the lag-1 test has power
    _check_latent(w, phi)
    with pytest.raises(AssertionError):  # the same bounds reject these fields read as white noise
        _check_latent(w, np.zeros_like(phi))


def test_iid_fields_have_std_sigma_and_no_autocorrelation(demo_runs):
    st, idents = demo_runs["iid"]
    w, _, _ = _fields(st, idents["baseline_v1"])
    _check_latent(w, np.zeros(w.shape[0]))


# ---- counts --------------------------------------------------------------------------------------------------------

def _stirling2(n: int, k: int) -> int:
    return sum((-1) ** j * comb(k, j) * (k - j) ** n for j in range(k + 1)) // factorial(k)


def _central_moments(mu: np.ndarray, kappa: np.ndarray | None) -> dict[int, np.ndarray]:
    """Central moments m2..m8 of Poisson(μ) (κ None) or NB2(μ, κ), from cumulants by the moment recursion.

    Cumulants: Poisson κ_n = μ; NB2 (K(t) = −κ ln(1 − (μ/κ)(eᵗ − 1))) κ_n = κ Σ_j (j−1)! S(n, j) (μ/κ)^j.
    """
    if kappa is None:
        cum = {n: mu for n in range(2, 9)}
    else:
        q = mu / kappa
        cum = {n: kappa * sum(factorial(j - 1) * _stirling2(n, j) * q ** j for j in range(1, n + 1)) for n in range(2, 9)}
    cum[1] = np.zeros_like(mu)
    m = {0: np.ones_like(mu)}
    for n in range(1, 9):
        m[n] = sum(comb(n - 1, k - 1) * cum[k] * m[n - k] for k in range(1, n + 1))
    return m


def test_poisson_central_moments_match_direct_summation():
    mu = np.array([0.3, 4.0, 37.5])
    m = _central_moments(mu, None)
    for i, lam in enumerate(mu):
        n = np.arange(0, 400)
        pmf = np.exp(n * math.log(lam) - lam - np.array([math.lgamma(k + 1) for k in n]))
        for k in (2, 4, 6, 8):
            assert m[k][i] == pytest.approx(float((pmf * (n - lam) ** k).sum()), rel=1e-9)


def _markov4(sum_w: float, e2: np.ndarray, e4: np.ndarray, alpha: float) -> bool:
    """|Σ w| within the 4th-moment Markov bound at level alpha."""
    bound = (float(e4.sum()) + 3 * float(e2.sum()) ** 2) / alpha
    return abs(sum_w) <= bound ** 0.25


def _counts(st, ident) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    counted = read(st, "s3_bucket_counts_5B", ident).filter(pl.col("mu") > 1e-12)
    assert not counted["count_capped"].any()
    return counted["mu"].to_numpy(), counted["count_N"].to_numpy().astype(np.float64), counted


def test_poisson_counts_total_and_dispersion_match_mu(demo_runs):
    st, idents = demo_runs["ou"]
    mu, n, _ = _counts(st, idents["baseline_v1"])
    lam, total = float(mu.sum()), float(n.sum())
    c = math.log(4 / ALPHA)  # α/4 per side of the total, α/2 for the dispersion
    up = c / 3 + math.sqrt((c / 3) ** 2 + 2 * lam * c)
    assert lam - math.sqrt(2 * lam * c) <= total <= lam + up, ((total - lam) / math.sqrt(lam))
    m = _central_moments(mu, None)
    r = n - mu
    w = r * r - mu  # E w = 0: E (N−μ)² = μ
    e2 = m[4] - mu * mu
    e4 = m[8] - 4 * mu * m[6] + 6 * mu ** 2 * m[4] - 4 * mu ** 3 * m[2] + mu ** 4
    assert _markov4(float(w.sum()), e2, e4, ALPHA / 2)
    dispersion = float((r * r).sum()) / lam
    assert 0.8 < dispersion < 1.2, dispersion  # implied by the bound on this world (Σμ² / Σμ is small)


def test_nb2_counts_have_mean_mu_and_variance_mu_plus_mu2_over_kappa(demo_runs):
    st, idents = demo_runs["nb2"]
    ident = idents["stress_v1"]
    mu, n, counted = _counts(st, ident)
    base = {"office_hours": 1.5, "retail_daytime": 1.0, "evening_dining": 0.8, "nightlife": 0.5,
            "online_24h": 1.2, "travel_hospitality": 0.7}
    groups = read(st, "s1_grouping_5B", ident).select(
        "merchant_id", "legal_country_iso", "tzid", "channel_group",
        (10 * pl.col("demand_class").replace_strict(base, return_dtype=pl.Float64)).clip(0.5, 200).alias("kappa"))
    kappa = counted.join(groups, on=["merchant_id", "legal_country_iso", "tzid", "channel_group"],
                         maintain_order="left")["kappa"].to_numpy()
    m = _central_moments(mu, kappa)
    r = n - mu
    assert _markov4(float(r.sum()), m[2], m[4], ALPHA / 2)
    v = m[2]  # μ + μ²/κ
    np.testing.assert_allclose(v, mu + mu * mu / kappa, rtol=1e-12)
    w = r * r - v
    e4 = m[8] - 4 * v * m[6] + 6 * v ** 2 * m[4] - 4 * v ** 3 * m[2] + v ** 4
    assert _markov4(float(w.sum()), m[4] - v * v, e4, ALPHA / 2)
    poisson_only = float((r * r - mu).sum())  # the same data against a Poisson variance: clearly overdispersed
    assert poisson_only / float((mu * mu / kappa).sum()) > 0.5

"""Measured false-alarm rates of the corridors over 1,000 seeds of data drawn by the engine from the law.

A rate of 1e-6 cannot be seen in 1,000 draws, so each corridor is run at alpha = 0.01 (the largest the check policy
allows) as well as at the shipped 1e-6. If a corridor's false alarm is ≤ alpha, the number of alarms X over 1,000
independent seeds is stochastically below Binomial(1,000, alpha), and P(X ≥ 32) ≤ exp(−1000·KL(0.032 ‖ 0.01)) = 1.9e-7
at 0.01 (mean 10), P(X ≥ 2) ≤ (1,000·1e-6)²/2 = 5e-7 at 1e-6. So each assertion below fails with probability ≤ 1e-6
when the corridor keeps its level. The counts include rows that dominate (2,000 at μ = 1e5) and rows at the cap
(50 at μ = 1e6 = max_count_per_bucket, about half of them capped).
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from arrival_core import checks, latent
from arrival_core.checks.intensity import spectral_corridor, stationary_projections
from arrival_core.rng import streams, variates

SEEDS = 1_000
MF, PH = "7a" * 32, "c3" * 32
LEVELS = (1e-2, 1e-6)
LIMIT = {1e-2: 32, 1e-6: 2}


def _uniforms(seed: int, rows: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
    key, hi, lo = streams.stream_base("test.false_alarm", MF, PH, seed, "baseline_v1", stream)
    x0, x1 = streams.blocks(np.uint64(key), np.uint64(hi), np.uint64(lo), np.arange(rows, dtype=np.uint64))
    return variates.u01(x0), variates.u01(x1)


def _count_rows() -> tuple[np.ndarray, np.ndarray]:
    """μ of 20,000 ordinary rows, 2,000 rows at 1e5 (a few dominant rows) and 50 rows at the cap 1e6; κ for NB2
    (200 on the large rows, so the mixed Poisson mean stays within PoissonInv's range 1e7)."""
    rng = np.random.default_rng(20260404)
    mu = np.concatenate([rng.lognormal(0.0, 1.5, 20_000), np.full(2_000, 1e5), np.full(50, 1e6)])
    kappa = np.concatenate([rng.choice([0.5, 2.0, 10.0, 25.0], 20_000), np.full(2_050, 200.0)])
    return mu, kappa


@pytest.mark.slow
@pytest.mark.parametrize("law", ["poisson", "nb2"])
def test_the_count_corridor_keeps_its_level_over_1000_seeds(law):
    mu, kappa = _count_rows()
    cap = 1e6
    alarms = dict.fromkeys(LEVELS, 0)
    for seed in range(SEEDS):  # over seeds: each one a whole partition's counts, drawn by the engine
        u0, u1 = _uniforms(seed, len(mu), f"counts|{law}")
        n = variates.poisson_inv(mu, u0) if law == "poisson" else variates.poisson_inv(
            variates.gamma_inv(kappa, u0) * mu / kappa, u1)
        m = checks.CountMoments()
        m.add(mu, np.minimum(n, cap).astype(float), None if law == "poisson" else kappa, n > cap, cap)
        for alpha in LEVELS:
            alarms[alpha] += not checks.count_corridor(m, law, alpha)["passed"]
    print(f"count corridor ({law}) alarms over {SEEDS} seeds: {alarms}")
    assert all(alarms[a] < LIMIT[a] for a in LEVELS), alarms


def _groups(n: int) -> pl.DataFrame:
    lengths = np.array([4.0, 9.0, 16.0])
    rows = [(f"baseline|retail_daytime|card_present|physical|zg{i // 100:02d}|b{i % 100:02d}", 0.3,
             float(lengths[i % 3])) for i in range(n)]
    frame = pl.DataFrame(rows, schema={"group_id": pl.String, "sigma": pl.Float64,
                                       "length_scale_buckets": pl.Float64}, orient="row").sort("group_id")
    return frame.with_columns((-1.0 / pl.col("length_scale_buckets")).exp().alias("phi"))


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["squared_exponential_v1", "matern32_v1", "log_gaussian_ou_v1"])
def test_the_latent_corridor_keeps_its_level_over_1000_seeds(kernel):
    import yaml

    from arrival_core import contracts
    doc = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_lgcp_config_5B.yaml").read_text())
    if kernel != "log_gaussian_ou_v1":
        doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", kernel
    policy = latent.parse_lgcp_policy(doc)
    params, h = _groups(30), 168
    sigma, phi = params["sigma"].to_numpy(), params["phi"].to_numpy()
    alarms = dict.fromkeys(LEVELS, 0)
    for seed in range(SEEDS):  # over seeds: each one a partition's fields, drawn by the engine
        field = latent.sample_latent(params, policy, h, manifest_fingerprint=MF, parameter_hash=PH, seed=seed,
                                     scenario_id="baseline_v1")
        projected = (stationary_projections(field.latent, sigma, params, policy, h)
                     if kernel != "log_gaussian_ou_v1" else None)
        for alpha in LEVELS:
            if projected is None:
                stats = checks.latent_corridor(field.latent, sigma, phi, alpha)
                ok = stats["variance_ok"] and stats["lag1_ok"]
            else:
                stats = spectral_corridor(projected, alpha)
                ok = stats["variance_ok"] and stats["tilt_ok"]
            alarms[alpha] += not ok
    print(f"latent corridor ({kernel}) alarms over {SEEDS} seeds: {alarms}")
    assert all(alarms[a] < LIMIT[a] for a in LEVELS), alarms

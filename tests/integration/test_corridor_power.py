"""The corridors' power on the demo world (seed 42): a planted σ × 1.05 under the squared-exponential kernel fires the
latent corridor, a planted dispersion change fires the count corridor, a planted μ × 1.02 fires the count total; the
unplanted outputs pass. Each planted effect is measured here against its bound (see the assertions' margins), so a
miss has probability far below 1e-6 on this fixed key; each acceptance has false-alarm probability ≤ 1e-6."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from s2s3lib import edited_config, read, run_all, store

from arrival_core import checks, latent
from arrival_core.checks.intensity import spectral_corridor, stationary_projections
from arrival_core.world import WorldInfo

ALPHA = 1e-6


def _squared_exponential(doc: dict) -> None:
    doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", "squared_exponential_v1"


@pytest.fixture(scope="module")
def demo(demo_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """The demo world, baseline, seed 42: S0 → S3 under the squared-exponential kernel (Poisson counts)."""
    tmp = tmp_path_factory.mktemp("power")
    shutil.copytree(demo_world.root, tmp / "world")
    st = store(tmp / "world", edited_config(tmp, "arrival_lgcp_config_5B", _squared_exponential))
    return st, run_all(st, upto="run_s3")


def _latent(st, ident):
    policy = latent.parse_lgcp_policy(yaml.safe_load((st.config_dir / "arrival_lgcp_config_5B.yaml").read_text()))
    grouping = read(st, "s1_grouping_5B", ident)
    params = latent.group_parameters(grouping, policy)
    h = read(st, "s1_time_grid_5B", ident).height
    z = read(st, "s2_latent_field_5B", ident).sort("group_id", "bucket_index")["latent_value"].to_numpy()
    return z.reshape(-1, h), params["sigma"].to_numpy(), params, policy, h


@pytest.mark.slow
def test_a_planted_sigma_bias_of_5_percent_fires_the_latent_corridor_under_the_squared_exponential(demo):
    st, ident = demo
    z, sigma, params, policy, h = _latent(st, ident)
    clean = spectral_corridor(stationary_projections(z, sigma, params, policy, h), ALPHA)
    assert clean["variance_ok"] and clean["tilt_ok"], clean
    for factor in (1.05, 1 / 1.05):
        planted = spectral_corridor(stationary_projections(z * factor, sigma, params, policy, h), ALPHA)
        assert not planted["variance_ok"], (factor, planted)
        # margin: how far past the bound, in sd of Q = √(2n)
        side = planted["sum_sq_high"] if factor > 1 else planted["sum_sq_low"]
        assert abs(planted["sum_sq"] - side) > 5 * np.sqrt(2 * planted["directions"])
    outcomes = {o.name: o for o in checks.evaluate(st, ident, "s2_latent_field_5B")}
    assert outcomes[checks.LATENT_CORRIDOR].passed and outcomes[checks.RNG_REPLAY].passed


def _moments(frame, n, cap=1e6):
    m = checks.CountMoments()
    use = frame["mu"].to_numpy() > 1e-12
    m.add(frame["mu"].to_numpy()[use], n[use].astype(float), None, frame["count_capped"].to_numpy()[use], cap)
    return m


@pytest.mark.slow
def test_planted_dispersion_and_mean_changes_fire_the_count_corridor(demo):
    st, ident = demo
    frame = read(st, "s3_bucket_counts_5B", ident)
    mu = frame["mu"].to_numpy()
    clean = checks.count_corridor(_moments(frame, frame["count_N"].to_numpy()), "poisson", ALPHA)
    assert clean["passed"], clean
    rng = np.random.default_rng(20260404)
    kappa = 20.0  # over-dispersion: variance μ + μ²/20 in place of μ
    mixed = rng.poisson(rng.gamma(kappa, mu / kappa))
    stats = checks.count_corridor(_moments(frame, mixed), "poisson", ALPHA)
    assert not stats["dispersion_ok"]
    # measured: excess 4,111 rows against a bound of 1,427 (the statistic's sd is ~255): ~10 sd past the bound
    assert stats["outside"] - stats["outside_expected"] > 2 * stats["outside_bound"]
    biased = rng.poisson(mu * 1.02)
    stats = checks.count_corridor(_moments(frame, biased), "poisson", ALPHA)
    assert not stats["total_ok"] and stats["sum_n"] - stats["total_high"] > 3 * np.sqrt(stats["sum_mu"])

"""Replay from the published logs alone: stream_base + philox2x64_10 + the variates reproduce S2 and S3 exactly."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from s2s3lib import edited_config, read, run_all, store

from arrival_core import checks
from arrival_core.rng import philox, streams, variates
from arrival_core.world import WorldInfo

TOP = 2**64 - 1


def _block(ident, family: str, domain_key: str, offset: int) -> tuple[np.uint64, np.uint64]:
    key, hi, lo = streams.stream_base(family, ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                      ident.scenario_id, domain_key)
    counter = ((hi << 64) | lo) + offset
    return philox.philox2x64_10(np.uint64(counter & TOP), np.uint64(counter >> 64), np.uint64(key))


def _count_rows(st, ident, n: int) -> pl.DataFrame:
    """n deterministic, evenly spaced count rows that drew (μ > lambda_zero_eps)."""
    counted = read(st, "s3_bucket_counts_5B", ident).filter(pl.col("mu") > 1e-12)
    assert counted.height >= n
    return counted[np.linspace(0, counted.height - 1, n).astype(np.int64)]


@pytest.mark.parametrize("law", ["poisson", "nb2"])
def test_a_thousand_sampled_counts_replay_exactly(tiny_world: WorldInfo, tmp_path: Path, law: str):
    config = edited_config(tmp_path, "arrival_count_config_5B", lambda d: d.update(count_law_id=law))
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w", config)
    ident = run_all(st, scenario_id="stress_v1", upto="run_s3")
    rows = _count_rows(st, ident, 1000)
    kappa_base = {"baseline": 25, "stress": 10}
    multipliers = {"office_hours": 1.5, "retail_daytime": 1.0, "evening_dining": 0.8, "nightlife": 0.5,
                   "online_24h": 1.2, "travel_hospitality": 0.7}
    groups = read(st, "s1_grouping_5B", ident)
    rows = rows.join(groups.select("merchant_id", "legal_country_iso", "tzid", "channel_group", "scenario_band",
                                   "demand_class"), on=["merchant_id", "legal_country_iso", "tzid", "channel_group"])
    assert rows.height == 1000
    for r in rows.iter_rows(named=True):
        domain_key = (f"merchant_id={r['merchant_id']}|legal_country_iso={r['legal_country_iso']}|tzid={r['tzid']}"
                      f"|channel_group={r['channel_group']}")
        x0, x1 = _block(ident, "S3.bucket_count.v1", domain_key, r["bucket_index"])
        if law == "poisson":
            n = variates.poisson_inv(r["mu"], variates.u01(x0))
        else:
            kappa = min(max(kappa_base[r["scenario_band"]] * multipliers[r["demand_class"]], 0.5), 200.0)
            n = variates.poisson_inv(variates.gamma_inv(kappa, variates.u01(x0)) * r["mu"] / kappa, variates.u01(x1))
        assert int(n) == r["count_N"], r
    # The replay checks' samples, by the independent reference (checks/reference.py), agree on every row: the
    # counts' 1000 evenly spaced rows, and every stride-th event of the log, stride = grid rows // 1000.
    events = read(st, "rng_event_arrival_bucket_count", ident).height
    stride = read(st, "s3_bucket_counts_5B", ident).height // 1000
    for dataset, fact, sampled in (("s3_bucket_counts_5B", "rows_replayed_by_reference", 1000),
                                   ("rng_event_arrival_bucket_count", "events_replayed", -(-events // stride))):
        replay = {o.name: o for o in checks.evaluate(st, ident, dataset)}[checks.RNG_REPLAY]
        assert replay.passed and replay.metadata[fact] == sampled, (dataset, replay.summary)


def test_ten_groups_latent_values_replay_exactly(tiny_world: WorldInfo, tmp_path: Path):
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w")
    ident = run_all(st, scenario_id="baseline_v1", upto="run_s2")
    field = read(st, "s2_latent_field_5B", ident)
    h = read(st, "s1_time_grid_5B", ident).height
    groups = field["group_id"].unique(maintain_order=True)
    for gid in groups[np.linspace(0, len(groups) - 1, 10).astype(np.int64)]:
        rows = field.filter(pl.col("group_id") == gid)
        sigma = rows["latent_std"][0]
        phi = float(np.exp(-1.0 / rows["length_scale_buckets"][0]))
        blocks = [_block(ident, "S2.latent_vector.v1", f"group_id={gid}", j) for j in range(h)]
        z = variates.box_muller(np.array([b[0] for b in blocks]), np.array([b[1] for b in blocks]))
        latent = [sigma * z[0]]
        for t in range(1, h):
            latent.append(phi * latent[-1] + sigma * np.sqrt(1.0 - phi * phi) * z[t])
        assert rows["latent_value"].to_list() == latent
        xi = np.clip(variates.exp(np.array(latent) - 0.5 * sigma * sigma), 0.2, 5.0)
        assert rows["lambda_random_component"].to_list() == xi.tolist()


def test_a_states_datasets_share_one_reference_replay_with_unchanged_outcomes(tiny_world: WorldInfo, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """A state's step evaluates its datasets with one context: the reference replays each sampled group once for
    all three S2 datasets (not once per dataset), and every outcome equals the one evaluated alone."""
    from arrival_core.checks import reference

    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w")
    ident = run_all(st, scenario_id="baseline_v1", upto="run_s2")
    datasets = ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian")
    alone = [checks.evaluate(st, ident, d) for d in datasets]
    replayed = []
    real = reference.latent_groups
    monkeypatch.setattr(reference, "latent_groups", lambda lgcp, strata, *a: replayed.extend(strata) or
                        real(lgcp, strata, *a))
    shared = checks.new_context(st, ident)
    together = [checks.evaluate(st, ident, d, shared=shared) for d in datasets]
    sampled = {o.name: o for o in alone[0]}[checks.RNG_REPLAY].metadata["groups_replayed_by_reference"]
    assert len(replayed) == sampled > 0
    assert together == alone


def test_a_states_datasets_evaluated_at_once_give_what_one_at_a_time_gives_in_order(tiny_world: WorldInfo,
                                                                                      tmp_path: Path):
    """`evaluate_datasets` runs a state's datasets on the engine's threads: the same outcomes, in the given order,
    as each dataset evaluated alone."""
    from arrival_core import parallel

    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w")
    ident = run_all(st, scenario_id="baseline_v1", upto="run_s3")
    datasets = ["s3_bucket_counts_5B", "rng_event_arrival_bucket_count", "s2_realised_intensity_5B",
                "s2_latent_field_5B", "rng_trace_arrival_bucket_count"]
    alone = [checks.evaluate(st, ident, d) for d in datasets]
    try:
        parallel.set_threads(3)
        together = checks.evaluate_datasets(st, ident, datasets, state="S3", recall=False, record=False)
    finally:
        parallel.set_threads(None)
    assert [outcomes for outcomes, _ in together] == alone
    assert not any(recalled for _, recalled in together)

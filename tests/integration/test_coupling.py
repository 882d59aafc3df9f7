"""Common random numbers across scenarios (`scenario_coupling: common_v1`), the stationary latent model end to end,
and `compare`: streams with `*`, coupled S2 domain keys, monotone counts, replay and every check, S1's horizon rule.

The tiny world's two scenarios (baseline_v1, stress_v1) share their horizon and entities; counts are Poisson.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from s2s3lib import ENTITY, edited_config, outputs, path, read, run_all, store

from arrival_core import checks, contracts, grouping, latent, pipeline
from arrival_core.compare import compare_counts, compare_scenarios
from arrival_core.encoding import le64, uer
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.rng import ledger, philox, streams
from arrival_core.world import WorldInfo

SCENARIOS = ("baseline_v1", "stress_v1")
MF, PH = "3f" * 32, "0a" * 32
STRESS_GROUP = "stress|nightlife|card_not_present|virtual|zg03|b17"


def _coupled(doc: dict) -> None:
    doc["scenario_coupling"] = "common_v1"


def _run(world: WorldInfo, root: Path, config: Path | None) -> tuple:
    shutil.copytree(world.root, root)
    st = store(root, config)
    return st, {sid: run_all(st, scenario_id=sid) for sid in SCENARIOS}


@pytest.fixture(scope="module")
def runs(tiny_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """Seed 42, both scenarios, under the shipped policies (independent_v1) and under common_v1."""
    base = tmp_path_factory.mktemp("coupling")
    return {"independent_v1": _run(tiny_world, base / "independent", None),
            "common_v1": _run(tiny_world, base / "common", edited_config(base, "arrival_rng_policy_5B", _coupled))}


def _paired_counts(st, idents) -> pl.DataFrame:
    b, s = (read(st, "s3_bucket_counts_5B", idents[sid]).select(*ENTITY, "bucket_index", "mu", "count_N")
            for sid in SCENARIOS)
    return b.join(s, on=[*ENTITY, "bucket_index"], suffix="_stress")


# ---------------------------------------------------------------- the stream law under coupling


def test_a_coupled_stream_hashes_a_star_for_the_scenario_and_star_is_no_scenario_id():
    key = "coupled_group=nightlife|card_not_present|virtual|zg03|b17"
    message = (uer("5B.arrival.rng.v1") + uer(latent.FAMILY_ID) + uer(MF) + uer(PH) + le64(7)
               + b"\x00\x00\x00\x01*" + uer(key))
    d = hashlib.sha256(message).digest()
    expected = tuple(int.from_bytes(d[i:i + 8], "big") for i in (0, 8, 16))
    for sid in SCENARIOS:
        assert streams.stream_base(latent.FAMILY_ID, MF, PH, 7, sid, key, coupled=True) == expected
    assert streams.stream_base(latent.FAMILY_ID, MF, PH, 7, "stress_v1", key) != expected
    with pytest.raises(ArrivalError) as err:
        streams.stream_base(latent.FAMILY_ID, MF, PH, 7, "*", key)
    assert err.value.code == "5B.IDENTITY_INVALID"
    with pytest.raises(ArrivalError):
        streams.stream_base(latent.FAMILY_ID, MF, PH, 7, "*", key, coupled=True)
    assert latent.domain_keys([STRESS_GROUP], coupled=True) == [key]
    assert latent.domain_keys([STRESS_GROUP]) == [f"group_id={STRESS_GROUP}"]


def test_ledger_replay_follows_the_policy_coupling():
    shipped = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_rng_policy_5B.yaml").read_text())
    coupled = {**shipped, "scenario_coupling": "common_v1"}
    assert ledger.parse_rng_policy(shipped).scenario_coupling == "independent_v1"
    assert ledger.parse_rng_policy(coupled).coupled
    groups = [STRESS_GROUP, "stress|office_hours|card_present|physical|zg01|b03"]
    identity = {"manifest_fingerprint": MF, "parameter_hash": PH, "seed": 7, "scenario_id": "stress_v1"}
    # Events built from the law (hash with `*`, coupled keys), not by the replay under test.
    key, hi, lo = zip(*(streams.stream_base(latent.FAMILY_ID, MF, PH, 7, "stress_v1",
                                            "coupled_group=" + g.split("|", 1)[1], coupled=True) for g in groups),
                      strict=True)
    events = pl.DataFrame({"group_id": groups, "rng_key": np.array(key, dtype=np.uint64),
                           "rng_counter_before_hi": np.array(hi, dtype=np.uint64),
                           "rng_counter_before_lo": np.array(lo, dtype=np.uint64),
                           "blocks": [3, 2], **{k: [v] * 2 for k, v in identity.items()}})
    replayed = ledger.replay(coupled, latent.FAMILY_ID, events, identity)
    assert replayed.mismatches == ()
    x0, x1 = philox.philox2x64_10(*reversed(philox.add_counter(hi[1], lo[1], 1)[:2]), key[1])
    assert (int(replayed.x0[4]), int(replayed.x1[4])) == (int(x0), int(x1))  # event 1, block 1
    assert any("rng_key" in m for m in ledger.replay(shipped, latent.FAMILY_ID, events, identity).mismatches)


def test_coupled_scenarios_must_share_horizon_start_and_bucket_count(runs):
    st, _ = runs["common_v1"]
    manifest = pl.read_parquet(st.path("scenario_manifest_5A",
                                       manifest_fingerprint=pipeline.read_receipt(st)["manifest_fingerprint"]))
    grouping.check_coupled_scenarios(manifest, 3600)
    for column, shift in (("horizon_start_utc", timedelta(hours=1)), ("horizon_end_utc", timedelta(hours=2))):
        moved = manifest.with_columns(pl.when(pl.col("scenario_id") == "stress_v1").then(pl.col(column) + shift)
                                      .otherwise(pl.col(column)).alias(column))
        with pytest.raises(ArrivalError) as err:
            grouping.check_coupled_scenarios(moved, 3600)
        assert err.value.code == "5B.S1.HORIZON_MISALIGNED"
        assert "baseline_v1" in err.value.message and "stress_v1" in err.value.message
        assert err.value.context["scenarios"] == ["baseline_v1", "stress_v1"]


# ---------------------------------------------------------------- the tiny world, coupled and not


def test_common_random_numbers_make_counts_monotone_in_mu_and_independent_ones_do_not(runs):
    coupled = _paired_counts(*runs["common_v1"])
    higher = coupled.filter(pl.col("mu_stress") >= pl.col("mu"))
    assert higher.height > 1000
    assert (higher["count_N_stress"] >= higher["count_N"]).all()
    independent = _paired_counts(*runs["independent_v1"]).filter(pl.col("mu_stress") >= pl.col("mu"))
    # Independent Poisson draws: on this fixed key some hundreds of rows go the other way.
    assert (independent["count_N_stress"] < independent["count_N"]).sum() > 10


def test_coupled_event_logs_share_keys_and_counters_across_scenarios_and_stay_per_partition(runs):
    st, idents = runs["common_v1"]
    s2 = {sid: read(st, "rng_event_arrival_lgcp_gaussian", idents[sid]).with_columns(
        pl.col("group_id").cast(pl.String).str.splitn("|", 2).struct.field("field_1").alias("coupled"))
        for sid in SCENARIOS}
    counters = ["rng_key", "rng_counter_before_hi", "rng_counter_before_lo", "rng_counter_after_hi",
                "rng_counter_after_lo"]
    joined = s2["baseline_v1"].join(s2["stress_v1"], on="coupled", suffix="_s")
    assert joined.height > 50
    for column in counters:
        assert (joined[column] == joined[f"{column}_s"]).all(), column
    for sid in SCENARIOS:
        assert (s2[sid]["scenario_id"] == sid).all()
        first = s2[sid].row(0, named=True)
        key, hi, lo = streams.stream_base(latent.FAMILY_ID, idents[sid].manifest_fingerprint,
                                          idents[sid].parameter_hash, 42, sid, f"coupled_group={first['coupled']}",
                                          coupled=True)
        assert (first["rng_key"], first["rng_counter_before_hi"], first["rng_counter_before_lo"]) == (key, hi, lo)
    s3 = [read(st, "rng_event_arrival_bucket_count", idents[sid]) for sid in SCENARIOS]
    both = s3[0].join(s3[1], on=[*ENTITY, "bucket_index"], suffix="_s")
    assert both.height > 1000 and all((both[c] == both[f"{c}_s"]).all() for c in counters)
    # Without coupling the same entity's streams differ between scenarios.
    st_i, idents_i = runs["independent_v1"]
    s3_i = [read(st_i, "rng_event_arrival_bucket_count", idents_i[sid]) for sid in SCENARIOS]
    assert (s3_i[0].join(s3_i[1], on=[*ENTITY, "bucket_index"], suffix="_s")
            .filter(pl.col("rng_key") == pl.col("rng_key_s")).height) == 0


def _all_checks_pass(st, idents) -> None:
    for sid, ident in idents.items():
        for dataset_id in dict.fromkeys(spec.dataset_id for spec in checks.CHECKS):
            state_ident = pipeline.resolve_identity(st, PartitionKey(42, sid),
                                                    parameter_hash=ident.parameter_hash,
                                                    state=st.entry(dataset_id).state or "S0")
            for outcome in checks.evaluate(st, state_ident, dataset_id, replay="full"):
                assert outcome.passed, (sid, dataset_id, outcome.name, outcome.summary)


def test_every_check_passes_with_a_full_replay_under_common_v1(runs):
    _all_checks_pass(*runs["common_v1"])


def test_a_tampered_coupled_event_fails_the_replay(runs, tmp_path: Path):
    st, idents = runs["common_v1"]
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    tampered = store(root, st.config_dir)
    file = path(tampered, "rng_event_arrival_lgcp_gaussian", idents["stress_v1"])
    frame = pl.read_parquet(file)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.col("rng_key") + 1)
                       .otherwise(pl.col("rng_key")).alias("rng_key")).write_parquet(file)
    outcomes = {o.name: o for o in checks.evaluate(tampered, idents["stress_v1"], "rng_event_arrival_lgcp_gaussian",
                                                   replay="full")}
    assert not outcomes[checks.RNG_REPLAY].passed and "rng_key" in outcomes[checks.RNG_REPLAY].summary


def test_compare_reports_totals_difference_standard_error_and_coupling(runs):
    for coupling, (st, idents) in runs.items():
        result = compare_scenarios(st, seed=42, scenario_a="baseline_v1", scenario_b="stress_v1",
                                   parameter_hash=idents["baseline_v1"].parameter_hash)
        assert (result.scenario_coupling, result.coupled) == (coupling, coupling == "common_v1")
        frames = [read(st, "s3_bucket_counts_5B", idents[sid]) for sid in SCENARIOS]
        totals = tuple(int(f["count_N"].sum()) for f in frames)
        per_entity = [f.group_by(ENTITY).agg(pl.col("count_N").sum()) for f in frames]
        d = per_entity[0].join(per_entity[1], on=ENTITY, suffix="_s").select(
            (pl.col("count_N_s") - pl.col("count_N")).cast(pl.Float64))["count_N_s"].to_numpy()
        c = result.counts
        assert (c.totals, c.difference, c.entities, c.unmatched) == (totals, totals[1] - totals[0], len(d), (0, 0))
        assert c.paired_difference == int(d.sum())
        assert c.standard_error == pytest.approx(np.sqrt(len(d) * d.var(ddof=1)), rel=1e-12)
        assert json.loads(json.dumps(result.as_dict()))["coupled"] == result.coupled
    with pytest.raises(ArrivalError) as err:
        compare_scenarios(st, seed=42, scenario_a="stress_v1", scenario_b="stress_v1")
    assert err.value.code == "5B.IDENTITY_INVALID"
    with pytest.raises(ArrivalError) as err:
        compare_scenarios(st, seed=1, scenario_a="baseline_v1", scenario_b="stress_v1",
                          parameter_hash=idents["baseline_v1"].parameter_hash)
    assert err.value.code in ("5B.S3.IO_READ_FAILED", "5B.S3.S0_GATE_INVALID")
    small = compare_counts(pl.DataFrame({**{k: [v] for k, v in zip(ENTITY, (1, "GB", "Europe/London", "card_present"),
                                                                       strict=True)}, "count_N": [3]}),
                           pl.DataFrame({k: [] for k in (*ENTITY, "count_N")},
                                        schema={"merchant_id": pl.Int64, "legal_country_iso": pl.String,
                                                "tzid": pl.String, "channel_group": pl.String, "count_N": pl.Int64}))
    assert (small.totals, small.entities, small.standard_error, small.unmatched) == ((3, 0), 0, None, (1, 0))


# ---------------------------------------------------------------- the stationary model end to end


def _stationary(kernel: str, **settings):
    def change(doc: dict) -> None:
        doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", kernel
        if settings:
            doc["stationary"] = settings
    return change


def test_a_stationary_kernel_passes_every_check_with_a_full_replay(tiny_world: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "arrival_lgcp_config_5B", _stationary("matern52_v1"))
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w", config)
    idents = {}
    for sid in SCENARIOS:
        run_all(st, scenario_id=sid, upto="run_s1")
        s2 = pipeline.run_s2(st, PartitionKey(42, sid))
        pipeline.run_s3(st, PartitionKey(42, sid))
        pipeline.run_audit(st, PartitionKey(42, sid))
        idents[sid] = ident = s2.identity
        events = read(st, "rng_event_arrival_lgcp_gaussian", ident)
        h = read(st, "s1_time_grid_5B", ident).height
        m = 1 << (2 * (h - 1) - 1).bit_length()  # matern52 embeds at the first size for these L
        assert (events["blocks"] == 2 * m).all() and (events["draws"] == 4 * m).all()
        after_hi, after_lo, _ = philox.add_counter(events["rng_counter_before_hi"].to_numpy(),
                                                   events["rng_counter_before_lo"].to_numpy(), np.uint64(2 * m))
        assert (events["rng_counter_after_lo"].to_numpy() == after_lo).all()
        assert (events["rng_counter_after_hi"].to_numpy() == after_hi).all()
        metrics = s2.report["metrics"]
        assert metrics["latent_rng_total_blocks"] == 2 * m * events.height
        assert metrics["latent_embedding_sizes"] == [m] and metrics["latent_embedding_largest_clipped"] >= 0
        record = json.loads(path(st, "rng_audit_log_5B", ident).read_bytes())
        assert record["families"][latent.FAMILY_ID]["draws"] == 4 * m * events.height
        assert (read(st, "s2_realised_intensity_5B", ident)["kernel_id"] == "matern52_v1").all()
    _all_checks_pass(st, idents)
    corridor = {o.name: o for o in checks.evaluate(st, idents["stress_v1"], "s2_latent_field_5B")}
    assert corridor[checks.LATENT_CORRIDOR].metadata["model"] == "projected matern52_v1"


def test_a_kernel_that_cannot_be_embedded_fails_s2_with_its_code_and_writes_nothing(tiny_world_copy: WorldInfo,
                                                                                      tmp_path: Path):
    def change(doc: dict) -> None:
        _stationary("squared_exponential_v1", max_embedding_factor=1)(doc)
        doc["length_scale_buckets"]["base_by_scenario_band"] = {"baseline": 80, "stress": 80}

    st = store(tiny_world_copy, edited_config(tmp_path, "arrival_lgcp_config_5B", change))
    ident = run_all(st, upto="run_s1")
    before = outputs(st.run_root)
    with pytest.raises(ArrivalError) as err:
        pipeline.run_s2(st, PartitionKey(42, "baseline_v1"), pipeline.RunOptions(run_id="kernel-fails"))
    e = err.value
    assert e.code == "5B.S2.KERNEL_CONSTRUCTION_FAILED"
    assert "squared_exponential_v1" in e.message and e.context["group_id"] in e.message
    assert f"L={e.context['length_scale_buckets']!r}" in e.message and e.context["negative_mass"] > 0
    assert outputs(st.run_root) == before
    for dataset_id in ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian",
                       "rng_trace_arrival_lgcp_gaussian"):
        assert not path(st, dataset_id, ident).exists(), dataset_id
    assert not [p for p in (st.run_root / "data").rglob("*") if ".tmp-" in p.name]
    report = json.loads(st.path("run_report_5B", state="S2", seed=42, scenario_id="baseline_v1",
                                run_id="kernel-fails").read_bytes())
    assert (report["status"], report["error_code"]) == ("FAIL", "5B.S2.KERNEL_CONSTRUCTION_FAILED")


def _coupled_matern(doc: dict) -> None:
    _stationary("matern32_v1")(doc)
    doc["length_scale_buckets"]["base_by_scenario_band"] = {"baseline": 48, "stress": 24}


def _coupled_fields(tiny_world: WorldInfo, tmp_path: Path, coupling: str) -> tuple[dict, dict]:
    """{scenario: latent field frame} and {scenario: M per group} of the tiny world under matern32 with L 48/24."""
    config = edited_config(tmp_path, "arrival_lgcp_config_5B", _coupled_matern, name=f"config-{coupling}")
    if coupling == "common_v1":
        edited_config(tmp_path, "arrival_rng_policy_5B", _coupled, name=f"config-{coupling}")
    shutil.copytree(tiny_world.root, tmp_path / coupling)
    st = store(tmp_path / coupling, config)
    fields, sizes = {}, {}
    for sid in SCENARIOS:
        ident = run_all(st, scenario_id=sid, upto="run_s2")
        fields[sid] = read(st, "s2_latent_field_5B", ident).with_columns(
            pl.col("group_id").cast(pl.String).str.splitn("|", 2).struct.field("field_1").alias("coupled"))
        sizes[sid] = read(st, "rng_event_arrival_lgcp_gaussian", ident)["blocks"].to_numpy() // 2
    return fields, sizes


def _per_group_correlation(fields: dict) -> np.ndarray:
    joined = fields["baseline_v1"].join(fields["stress_v1"], on=["coupled", "bucket_index"], suffix="_s")
    return joined.group_by("coupled").agg(pl.corr("latent_value", "latent_value_s"))["latent_value"].to_numpy()


def test_coupled_stationary_fields_share_their_normals_when_the_scenarios_embed_at_different_sizes(
        tiny_world: WorldInfo, tmp_path: Path):
    """matern32 with L 48 (baseline) and 24 (stress) over 168 buckets: alone the two bands embed at different M;
    under common_v1 both take M_c and every coupled group's fields correlate (≥ 0.8); independent ones do not."""
    policy = latent.parse_lgcp_policy(yaml.safe_load(
        (edited_config(tmp_path, "arrival_lgcp_config_5B", _coupled_matern, name="probe")
         / "arrival_lgcp_config_5B.yaml").read_text()))
    fields, sizes = _coupled_fields(tiny_world, tmp_path, "common_v1")
    h = int(fields["baseline_v1"]["bucket_index"].max()) + 1
    own = {band: {latent._embedding(policy.kernel_id, length, h, policy.stationary).size
                  for length in fields[sid]["length_scale_buckets"].unique().to_list()}
           for band, sid in (("baseline", "baseline_v1"), ("stress", "stress_v1"))}
    assert own["baseline"] != own["stress"]  # the case the coupled size exists for
    assert (sizes["baseline_v1"] == sizes["stress_v1"]).all()
    corr = _per_group_correlation(fields)
    assert len(corr) > 50 and corr.min() >= 0.8, (corr.min(), corr.mean())
    independent, _ = _coupled_fields(tiny_world, tmp_path, "independent_v1")
    assert np.abs(_per_group_correlation(independent)).mean() < 0.5

"""S2, S3 and the audit on the tiny world: contracts, coverage, RNG accounting, determinism and the policies' modes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from s2s3lib import ENTITY, TABLES, edited_config, outputs, path, read, run_all, store

from arrival_core import checks, contracts, pipeline, tables
from arrival_core.identity import PartitionKey
from arrival_core.pipeline import accounting, records
from arrival_core.world import WorldInfo

SCENARIOS = ("baseline_v1", "stress_v1")


@pytest.fixture(scope="module")
def tiny_run(tiny_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny world with S0 → audit run for both scenarios (seed 42) and baseline for seed 1."""
    root = tmp_path_factory.mktemp("s2s3") / "world"
    shutil.copytree(tiny_world.root, root)
    st = store(root)
    idents = {(42, sid): run_all(st, seed=42, scenario_id=sid) for sid in SCENARIOS}
    idents[(1, "baseline_v1")] = run_all(st, seed=1, scenario_id="baseline_v1")
    return st, idents


def _s1(st, ident):
    return read(st, "s1_time_grid_5B", ident), read(st, "s1_grouping_5B", ident)


@pytest.mark.parametrize("sid", SCENARIOS)
def test_every_output_satisfies_its_contract_key_and_order(tiny_run, sid):
    st, idents = tiny_run
    ident = idents[(42, sid)]
    for dataset_id in TABLES:
        entry = st.entry(dataset_id)
        frame = read(st, dataset_id, ident)
        assert frame.height > 0, dataset_id
        assert tables.table_violations(frame, entry.schema_ref, primary_key=entry.primary_key,
                                          writer_sort=entry.writer_sort) == [], dataset_id
    record = json.loads(path(st, "rng_audit_log_5B", ident).read_bytes())
    contracts.validate_document(record, st.entry("rng_audit_log_5B").schema_ref, code="5B.CONTRACT_INVALID", where="audit")


@pytest.mark.parametrize("sid", SCENARIOS)
def test_s2_covers_grid_times_grouping_and_s3_exactly_the_s2_rows(tiny_run, sid):
    st, idents = tiny_run
    ident = idents[(42, sid)]
    grid, grouping = _s1(st, ident)
    realised = read(st, "s2_realised_intensity_5B", ident)
    expected = grouping.select(*ENTITY, "group_id").join(grid.select("bucket_index"), how="cross").sort(
        [*ENTITY, "bucket_index"])
    assert realised.select(expected.columns).equals(expected)
    surface = pl.read_parquet(st.path("merchant_zone_scenario_local_5A", manifest_fingerprint=ident.manifest_fingerprint,
                                      scenario_id=sid))
    assert realised["lambda_baseline"].equals(surface["lambda_local_scenario"], check_names=False)
    counted = read(st, "s3_bucket_counts_5B", ident)
    assert counted.select(*ENTITY, "bucket_index", "group_id", "lambda_realised").equals(
        realised.select(*ENTITY, "bucket_index", "group_id", "lambda_realised"))
    assert counted["mu"].equals(counted["lambda_realised"], check_names=False)


@pytest.mark.parametrize("sid", SCENARIOS)
def test_rng_events_reconcile_with_traces_audit_and_outputs(tiny_run, sid):
    st, idents = tiny_run
    ident = idents[(42, sid)]
    grid, grouping = _s1(st, ident)
    h, groups = grid.height, grouping["group_id"].n_unique()
    latent_events = read(st, "rng_event_arrival_lgcp_gaussian", ident)
    assert latent_events.height == groups and (latent_events["draws"] == 2 * h).all() and (latent_events["blocks"] == h).all()
    count_events = read(st, "rng_event_arrival_bucket_count", ident)
    counted = read(st, "s3_bucket_counts_5B", ident)
    drawing = counted.filter(pl.col("mu") > 1e-12)
    assert 0 < drawing.height < counted.height  # closed hours give zero-intensity buckets with no event
    assert count_events.select(*ENTITY, "bucket_index").equals(drawing.select(*ENTITY, "bucket_index"))
    assert count_events["draws"].sum() == count_events.height  # Poisson: one draw per event
    record = json.loads(path(st, "rng_audit_log_5B", ident).read_bytes())
    for family, events, trace_id in (("S2.latent_vector.v1", latent_events, "rng_trace_arrival_lgcp_gaussian"),
                                     ("S3.bucket_count.v1", count_events, "rng_trace_arrival_bucket_count")):
        trace = read(st, trace_id, ident)
        totals = (events.height, events["draws"].sum(), events["blocks"].sum())
        assert tuple(trace.row(-1, named=True)[k] for k in ("events_total", "draws_total", "blocks_total")) == totals
        fam = record["families"][family]
        assert (fam["events"], fam["draws"], fam["blocks"], fam["trace_appends"]) == (*totals, trace.height)


def test_every_check_passes_with_a_full_replay(tiny_run):
    st, idents = tiny_run
    for (seed, sid) in idents:
        for dataset_id in dict.fromkeys(spec.dataset_id for spec in checks.CHECKS):
            ident = pipeline.resolve_identity(st, PartitionKey(seed, sid), state=st.entry(dataset_id).state or "S0")
            for outcome in checks.evaluate(st, ident, dataset_id, replay="full"):
                assert outcome.passed, (seed, sid, dataset_id, outcome.name, outcome.summary)
                assert outcome.metadata["table_md"].startswith("| field | value |")


def test_a_partitions_checks_read_each_rng_familys_log_and_implied_totals_once(tiny_run, monkeypatch):
    st, idents = tiny_run
    calls: list[tuple[str, str]] = []

    def counted(name, read):
        def call(g, family_id, **kwargs):
            calls.append((name, family_id))
            return read(g, family_id, **kwargs)
        return call

    monkeypatch.setattr(pipeline, "read_family_log", counted("log", pipeline.read_family_log))
    monkeypatch.setattr(accounting, "implied_totals", counted("implied", accounting.implied_totals))
    ident = idents[(42, "baseline_v1")]
    shared = checks.new_context(st, ident)
    for dataset_id in ("rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian",
                       "rng_trace_arrival_bucket_count", "rng_audit_log_5B"):
        for outcome in checks.evaluate(st, ident, dataset_id, shared=shared):
            assert outcome.passed, (dataset_id, outcome.name, outcome.summary)
    families = ("S2.latent_vector.v1", "S3.bucket_count.v1")
    assert sorted(calls) == sorted((kind, f) for kind in ("log", "implied") for f in families)


def test_rerunning_a_partition_publishes_nothing_new(tiny_run):
    st, _ = tiny_run
    before = outputs(st.run_root)
    for runner in (pipeline.run_s2, pipeline.run_s3, pipeline.run_audit):
        result = runner(st, PartitionKey(42, "baseline_v1"))
        assert result.published and not any(p.created for p in result.published)
    assert outputs(st.run_root) == before


def test_chunk_size_changes_no_byte(tiny_run, tiny_world: WorldInfo, tmp_path: Path):
    st, _ = tiny_run
    reference = {k: v for k, v in outputs(st.run_root).items() if "seed=42" in k and "stress_v1" in k}
    for chunk in (1, 1000):
        root = tmp_path / f"chunk{chunk}"
        shutil.copytree(tiny_world.root, root)
        run_all(store(root), seed=42, scenario_id="stress_v1", chunk_entities=chunk)
        got = {k: v for k, v in outputs(root).items() if "seed=42" in k and "stress_v1" in k}
        assert got.keys() == reference.keys() and len(got) == 8
        assert all(got[k] == reference[k] for k in got), [k for k in got if got[k] != reference[k]]


def test_s3_reads_only_lambda_of_an_s2_output_its_records_prove(tiny_run, tiny_world: WorldInfo, tmp_path: Path,
                                                                  monkeypatch):
    """S3 on an S2 output that S1's and S2's commit records prove reads only lambda_realised; without S2's record
    it reads and checks every key column; the counts are the same bytes either way."""
    st, _ = tiny_run
    read_columns: list[list[str]] = []
    real_read = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        read_columns.append(list(columns or []))
        return real_read(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    reference = {k: v for k, v in outputs(st.run_root).items() if "seed=42" in k and "baseline_v1" in k}
    for proven in (True, False):
        root = tmp_path / f"proven-{proven}"
        shutil.copytree(tiny_world.root, root)
        ident = run_all(store(root), seed=42, scenario_id="baseline_v1", upto="run_s2")
        if not proven:
            records.commit_path(store(root), "S2", ident).unlink()
        read_columns.clear()
        pipeline.run_s3(store(root), PartitionKey(42, "baseline_v1"))
        assert read_columns and all(c == (["lambda_realised"] if proven else ["manifest_fingerprint", "parameter_hash",
                                    "seed", "scenario_id", *ENTITY, "bucket_index", "group_id", "lambda_realised"])
                                    for c in read_columns), read_columns[:2]
        got = {k: v for k, v in outputs(root).items() if "s3_bucket_counts" in k or "arrival_bucket_count" in k}
        assert len(got) == 3 and all(got[k] == reference[k] for k in got)


def test_different_seeds_give_different_realisations(tiny_run):
    st, idents = tiny_run
    a, b = idents[(42, "baseline_v1")], idents[(1, "baseline_v1")]
    xi_a = read(st, "s2_realised_intensity_5B", a)["lambda_random_component"]
    xi_b = read(st, "s2_realised_intensity_5B", b)["lambda_random_component"]
    assert (xi_a != xi_b).mean() > 0.99
    n_a, n_b = (read(st, "s3_bucket_counts_5B", i)["count_N"] for i in (a, b))
    assert (n_a != n_b).sum() > 1000
    assert read(st, "s2_realised_intensity_5B", a)["lambda_baseline"].equals(
        read(st, "s2_realised_intensity_5B", b)["lambda_baseline"])


def test_latent_model_none_gives_unit_factors_and_no_latent_events(tiny_world: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "arrival_lgcp_config_5B", lambda d: d.update(latent_model_id="none"))
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w", config)
    ident = run_all(st)
    realised = read(st, "s2_realised_intensity_5B", ident)
    assert (realised["lambda_random_component"] == 1.0).all()
    assert realised["lambda_realised"].equals(realised["lambda_baseline"], check_names=False)
    assert read(st, "rng_event_arrival_lgcp_gaussian", ident).height == 0
    assert read(st, "rng_trace_arrival_lgcp_gaussian", ident).height == 0
    record = json.loads(path(st, "rng_audit_log_5B", ident).read_bytes())
    assert record["families"]["S2.latent_vector.v1"]["events"] == 0


def test_iid_model_and_no_latent_diagnostic(tiny_world: WorldInfo, tmp_path: Path):
    def change(doc: dict) -> None:
        doc["latent_model_id"] = "log_gaussian_iid_v1"
        doc["diagnostics"]["emit_latent_field_diagnostic"] = False

    config = edited_config(tmp_path, "arrival_lgcp_config_5B", change)
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w", config)
    result_ident = run_all(st, upto="run_s2")
    assert not path(st, "s2_latent_field_5B", result_ident).exists()
    assert read(st, "rng_event_arrival_lgcp_gaussian", result_ident).height > 0
    outcomes = checks.evaluate(st, result_ident, "s2_latent_field_5B")
    assert all(o.passed for o in outcomes)


def test_nb2_law_draws_twice_per_event(tiny_world: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "arrival_count_config_5B", lambda d: d.update(count_law_id="nb2"))
    shutil.copytree(tiny_world.root, tmp_path / "w")
    st = store(tmp_path / "w", config)
    ident = run_all(st)
    events = read(st, "rng_event_arrival_bucket_count", ident)
    counted = read(st, "s3_bucket_counts_5B", ident)
    assert (counted["count_law_id"] == "nb2").all()
    assert events.height == (counted["mu"] > 1e-12).sum() and (events["draws"] == 2).all()
    for dataset_id in ("s3_bucket_counts_5B", "rng_event_arrival_bucket_count", "rng_audit_log_5B"):
        assert all(o.passed for o in checks.evaluate(st, ident, dataset_id, replay="full")), dataset_id


def test_a_tampered_count_fails_its_replay_check_naming_the_row(tiny_run, tmp_path: Path):
    st, idents = tiny_run
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    tampered = store(root)
    ident = idents[(42, "baseline_v1")]
    file = path(tampered, "s3_bucket_counts_5B", ident)
    frame = pl.read_parquet(file)
    row = int(np.flatnonzero(frame["mu"].to_numpy() > 5)[0])
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.col("count_N") + 1)
                               .otherwise(pl.col("count_N")).alias("count_N"))
    frame.write_parquet(file)
    outcomes = {o.name: o for o in checks.evaluate(tampered, ident, "s3_bucket_counts_5B", replay="full")}
    replay = outcomes[checks.RNG_REPLAY]
    assert not replay.passed and replay.severity == "ERROR"
    assert replay.metadata["offending_keys"][0]["bucket_index"] == frame["bucket_index"][row]
    assert outcomes[checks.SCHEMA_VALID].passed


@pytest.fixture(scope="module")
def demo_run(demo_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the demo world (1,500 entities × 672 buckets) with S0 → audit run for both scenarios, seed 42."""
    root = tmp_path_factory.mktemp("s2s3demo") / "world"
    shutil.copytree(demo_world.root, root)
    st = store(root)
    return st, {sid: run_all(st, scenario_id=sid) for sid in SCENARIOS}


def test_demo_outputs_cover_their_domains_and_pass_every_check(demo_run):
    st, idents = demo_run
    for sid, ident in idents.items():
        grid, grouping = _s1(st, ident)
        assert read(st, "s2_realised_intensity_5B", ident).height == grid.height * grouping.height > 1_000_000 // 2
        for dataset_id in dict.fromkeys(spec.dataset_id for spec in checks.CHECKS):
            state_ident = pipeline.resolve_identity(st, PartitionKey(42, sid),
                                                    state=st.entry(dataset_id).state or "S0")
            for outcome in checks.evaluate(st, state_ident, dataset_id):
                assert outcome.passed, (sid, dataset_id, outcome.name, outcome.summary)


@pytest.mark.slow
def test_demo_rerun_and_chunk_sizes_change_no_byte(demo_run, demo_world: WorldInfo, tmp_path: Path):
    st, _ = demo_run
    reference = {k: v for k, v in outputs(st.run_root).items() if "seed=42" in k and "baseline_v1" in k}
    run_all(st, scenario_id="baseline_v1")
    for chunk in (1, 1000):
        root = tmp_path / f"chunk{chunk}"
        shutil.copytree(demo_world.root, root)
        run_all(store(root), scenario_id="baseline_v1", chunk_entities=chunk)
        got = {k: v for k, v in outputs(root).items() if "seed=42" in k and "baseline_v1" in k}
        assert got.keys() == reference.keys() and all(got[k] == reference[k] for k in got)
    assert {k: v for k, v in outputs(st.run_root).items() if k in reference} == reference


def test_s2_and_s3_tell_their_diagnostics_before_their_outputs_publish(tiny_world: WorldInfo, tmp_path: Path):
    """`RunOptions.diagnosed` is told a streamed state's diagnostics once, when its last chunk is taken: the
    pictures' values are complete (those the state returns) while its outputs are not yet published."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world.root, root)
    st = store(root)
    ident = run_all(st, seed=42, upto="run_s1")
    key = PartitionKey(42, "baseline_v1")
    for runner, main, shown in ((pipeline.run_s2, "s2_realised_intensity_5B",
                                 ("lambda_target_per_bucket", "lambda_realised_per_bucket", "top_group_factors")),
                                (pipeline.run_s3, "s3_bucket_counts_5B",
                                 ("counts_per_bucket", "mu_per_bucket", "variance_per_bucket", "count_histogram"))):
        told: list[tuple[dict, bool]] = []
        result = runner(st, key, pipeline.RunOptions(
            diagnosed=lambda d, main=main, told=told: told.append((d, path(st, main, ident).exists()))))
        assert len(told) == 1
        diagnostics, published = told[0]
        assert not published and path(st, main, ident).exists()
        for name in (*shown, "bucket_start_utc"):
            want, got = result.diagnostics[name], diagnostics[name]
            assert got is want or np.array_equal(got, want) or got == want, name

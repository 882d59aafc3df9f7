"""The whole graph in process on the tiny world: materialisations, per-partition checks, failures."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from configlib import replaced_config
from graph_helpers import PARTITIONS, failures, graph_for, materialized, run_partition

from arrival_core import pipeline
from arrival_core.encoding import sha256_file, sha256_hex

OUTPUTS_5B = {
    "sealed_inputs_5B",
    "s0_gate_receipt_5B",
    "s1_time_grid_5B",
    "s1_grouping_5B",
    "s2_realised_intensity_5B",
    "s2_latent_field_5B",
    "rng_event_arrival_lgcp_gaussian",
    "s3_bucket_counts_5B",
    "rng_event_arrival_bucket_count",
    "rng_audit_log_5B",
}


@pytest.fixture(scope="module")
def graph_runs(shared_world_root):
    """The four partitions (2 seeds × 2 scenarios) of the tiny world, one run each, in one instance."""
    defs = graph_for(shared_world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        results = {key: run_partition(defs, instance, key) for key in PARTITIONS}
        yield defs, instance, results


def test_whole_graph_materialises_every_asset_for_each_partition(graph_runs):
    defs, _, results = graph_runs
    every_asset = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for key, result in results.items():
        assert result.success, (key, failures(result))
        assert set(materialized(result)) == every_asset, key
        events = result.get_asset_materialization_events()
        assert {e.event_specific_data.materialization.partition for e in events} == {key}


def test_every_check_passes_and_is_recorded_for_its_own_partition(graph_runs):
    defs, instance, results = graph_runs
    check_keys = set(defs.resolve_asset_graph().asset_check_keys)
    for key, result in results.items():
        evaluations = result.get_asset_check_evaluations()
        assert {e.asset_check_key for e in evaluations} == check_keys
        assert [e.check_name for e in evaluations if not e.passed] == [], key
        assert {e.partition for e in evaluations} == {key}
    for check_key in check_keys:
        records = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=10)
        recorded = [r.event.asset_check_evaluation.partition for r in records]
        assert sorted(recorded) == sorted(PARTITIONS), check_key


def test_an_absent_optional_input_says_absent_in_its_metadata_and_an_observation(graph_runs):
    _, _, results = graph_runs
    result = results["stress_v1|42"]
    meta = materialized(result)["merchant_zone_scenario_utc_5A"]
    assert meta["present"] is False
    assert meta["status"].startswith("ABSENT: optional ")
    assert "path" not in meta and "dagster/uri" not in meta  # no link to a file that is not there
    observed = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
    absent = [o for o in observed if o.asset_key == dg.AssetKey("merchant_zone_scenario_utc_5A")]
    assert len(absent) == 1 and absent[0].partition == "stress_v1|42"
    assert absent[0].description.startswith("ABSENT: optional ")
    assert {o.asset_key for o in observed} == {dg.AssetKey("merchant_zone_scenario_utc_5A")}  # present ones: none


def test_data_version_is_the_content_digest(graph_runs):
    _, _, results = graph_runs
    meta = materialized(results["stress_v1|42"])
    for asset, values in meta.items():
        if values.get("present") is False:
            assert values["data_version"] == values["digest"] == "absent", asset  # the optional UTC surface
            continue
        assert values["data_version"] == values["digest"], asset
        if Path(values["path"]).is_file():
            assert values["digest"] == sha256_file(values["path"]), asset
        assert "summary" in values
    folder = Path(meta["validation_bundle_3A"]["path"])
    members = json.loads((folder / "index.json").read_text())[
        "entries"
    ]  # §3.1: digest of members in index order
    assert meta["validation_bundle_3A"]["digest"] == sha256_hex(
        b"".join((folder / m["path"]).read_bytes() for m in members)
    )


def test_state_materialisations_carry_rows_and_run_report_metrics(graph_runs):
    _, _, results = graph_runs
    meta = materialized(results["baseline_v1|1"])
    counts = meta["s3_bucket_counts_5B"]
    assert counts["dagster/row_count"] == pl.scan_parquet(counts["path"]).select(pl.len()).collect().item()
    assert counts["dagster/row_count"] == meta["s2_realised_intensity_5B"]["dagster/row_count"] > 0
    assert isinstance(counts["run_report_metrics"], dict) and counts["run_report_metrics"]
    assert meta["rng_event_arrival_lgcp_gaussian"]["rng_trace_arrival_lgcp_gaussian.digest"]


def test_seed_invariant_outputs_are_published_once_and_proven_identical(graph_runs):
    _, _, results = graph_runs
    first, second = materialized(results["baseline_v1|1"]), materialized(results["baseline_v1|42"])
    for asset in ("sealed_inputs_5B", "s0_gate_receipt_5B", "s1_time_grid_5B", "s1_grouping_5B"):
        assert first[asset]["digest"] == second[asset]["digest"]
        assert (first[asset]["created"], second[asset]["created"]) == (True, False)
    assert first["s3_bucket_counts_5B"]["digest"] != second["s3_bucket_counts_5B"]["digest"]


def test_tampered_upstream_flag_fails_at_its_sealed_input_and_nothing_downstream_runs(world_root):
    flag = next((world_root / "data/layer1/2B/validation").glob("fingerprint=*/_passed.flag"))
    flag.write_text("sha256_hex = " + "0" * 64 + "\n")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root), instance, "baseline_v1|1")
    assert not result.success
    failed = failures(result)
    assert set(failed) == {"sealed_inputs"}
    assert failed["sealed_inputs"]["error_code"] == "5B.S0.UPSTREAM_NOT_PASS"
    assert failed["sealed_inputs"]["error_context"]["segment"] == "2B"
    done = set(materialized(result))
    assert "validation_bundle_2B" not in done and "validation_bundle_2A" in done  # the others still verified
    assert not OUTPUTS_5B & done
    assert not (world_root / "data/layer2/5B").exists()


def test_policy_failing_its_schema_fails_at_its_sealed_input_with_the_code(world_root, tmp_path):
    config = replaced_config(
        tmp_path, "time_grid_policy_5B.yaml", "bucket_duration_seconds: 3600", "bucket_duration_seconds: 1200"
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root, config), instance, "baseline_v1|1")
    failed = failures(result)
    assert set(failed) == {"sealed_inputs"}
    assert failed["sealed_inputs"]["error_code"] == "5B.S0.POLICY_INVALID"
    assert "time_grid_policy_5B.yaml" in failed["sealed_inputs"]["error_message"]
    assert not OUTPUTS_5B & set(materialized(result))


def test_state_failure_carries_its_code_and_stops_later_states(world_root, tmp_path):
    config = replaced_config(
        tmp_path, "time_grid_policy_5B.yaml", "max_horizon_days: 400", "max_horizon_days: 2"
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root, config), instance, "baseline_v1|1")
    failed = failures(result)
    assert set(failed) == {"s1_plan"}
    assert failed["s1_plan"]["error_code"] == "5B.S1.GRID_GUARDRAIL_BREACH"
    assert re.search(r"horizon of \S+ days outside \[\S+, 2\]", failed["s1_plan"]["error_message"])  # the edited bound
    done = set(materialized(result))
    assert {"sealed_inputs_5B", "s0_gate_receipt_5B"} <= done
    assert not {"s1_time_grid_5B", "s1_grouping_5B", "s2_realised_intensity_5B", "s3_bucket_counts_5B"} & done


def test_accounting_mismatch_fails_the_blocking_check_and_stops_downstream(world_root, monkeypatch):
    real_s2 = pipeline.run_s2

    def s2_then_drop_two_trace_draws(store, *args):
        result = real_s2(store, *args)
        trace = next(p.path for p in result.published if p.dataset_id == "rng_trace_arrival_lgcp_gaussian")
        pl.read_parquet(trace).with_columns(pl.col("draws_total") - 2).write_parquet(trace)
        return result

    states = tuple(replace(s, runner=s2_then_drop_two_trace_draws) if s.code == "S2" else s for s in pipeline.STATES)
    monkeypatch.setattr(pipeline, "STATES", states)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root), instance, "stress_v1|42")
    assert not result.success
    failed_checks = {
        (e.asset_key.to_user_string(), e.check_name): e.severity
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }
    assert ("rng_event_arrival_lgcp_gaussian", "trace_consistent") in failed_checks
    assert set(failed_checks.values()) == {dg.AssetCheckSeverity.ERROR}
    assert {asset for asset, _ in failed_checks} == {"rng_event_arrival_lgcp_gaussian"}
    done = set(materialized(result))
    assert "rng_event_arrival_lgcp_gaussian" in done
    assert "rng_audit_log_5B" not in done  # the audit reads the RNG logs; a failed log check stops it
    assert "s3_bucket_counts_5B" not in done  # no counts are drawn while S2's RNG accounting fails
    assert failures(result).keys() == {"s2_latent"}  # its checks run in its step, and fail it


def test_warn_checks_never_block(world_root, monkeypatch):
    from arrival_core.checks import evaluation

    real_outcomes = evaluation._outcomes  # every outcome, checked in the stream or from the files

    def every_warn_fails(*args, **kwargs):
        return [
            dataclasses.replace(o, passed=False) if o.severity == "WARN" else o
            for o in real_outcomes(*args, **kwargs)
        ]

    monkeypatch.setattr(evaluation, "_outcomes", every_warn_fails)
    with dg.DagsterInstance.ephemeral() as instance:
        defs = graph_for(world_root)
        result = run_partition(defs, instance, "baseline_v1|42")
    warned = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert warned and all(e.severity == dg.AssetCheckSeverity.WARN for e in warned)
    assert result.success
    assert set(materialized(result)) == {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
    }


def test_materialisations_in_the_instance_follow_dagster_conventions_and_carry_pictures(world_root):
    """Read back from the instance: row count = the file's rows, the column schema = the contract's columns,
    and the S2 and S3 materialisations hold a PNG in a Markdown entry."""
    import base64

    from arrival_core import contracts, table_schema

    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(defs, instance, "baseline_v1|42").success
        assert run_partition(defs, instance, "baseline_v1|42").success  # verified: the pictures carry over
        for asset in ("s2_realised_intensity_5B", "s3_bucket_counts_5B", "s1_grouping_5B"):
            record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
            meta = record.asset_materialization.metadata
            path = Path(meta["path"].value)
            assert meta["dagster/row_count"].value == pl.scan_parquet(path).select(pl.len()).collect().item()
            contract = table_schema.polars_schema(contracts.dataset(asset).schema_ref)
            columns = meta["dagster/column_schema"].value.columns
            assert [(c.name, c.type) for c in columns] == [(n, str(t)) for n, t in contract.items()]
            assert meta["dagster/uri"].value == path.as_uri()
            if asset != "s1_grouping_5B":
                markdown = meta["plot"].value
                image, facts = markdown.split(")\n\n", 1)  # the picture, then the table of what it shows
                assert image.startswith(f"![{asset} baseline_v1|42: ")
                payload = image.split("data:image/png;base64,", 1)[1]
                assert base64.b64decode(payload).startswith(b"\x89PNG\r\n\x1a\n")
                column, fact = ("count_N", "Σ N") if asset == "s3_bucket_counts_5B" else ("lambda_realised", "Σ λ_realised")
                total = pl.scan_parquet(path).select(pl.col(column).sum()).collect().item()
                shown = next(line for line in facts.splitlines() if line.startswith(f"| {fact} |")).split("|")[2]
                assert float(shown) == pytest.approx(total, rel=1e-5)  # the table shows 6 significant digits

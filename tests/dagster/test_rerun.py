"""Materialised partitions are verified, not recomputed: a re-run re-hashes the files its commit records list."""

from __future__ import annotations

import dagster as dg
import pytest
from configlib import config_copy
from graph_helpers import failures, graph_for, materialized, run_partition

from arrival_core import counts, latent
from arrival_core.checks import evaluation

KEY = "baseline_v1|42"
STATE_OUTPUTS = ("s1_grouping_5B", "s2_realised_intensity_5B", "s3_bucket_counts_5B", "rng_audit_log_5B")


def _refuse(name: str):
    def refuse(*_args, **_kwargs):
        raise AssertionError(f"{name} ran on a verified re-run")
    return refuse


def _temp_files(root):
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_a_rerun_computes_nothing_and_reports_the_files_as_not_created(world_root, monkeypatch):
    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(defs, instance, KEY)
        assert first.success
        monkeypatch.setattr(latent, "sample_latent", _refuse("S2's latent sampling"))
        monkeypatch.setattr(counts, "draw_counts", _refuse("S3's count drawing"))
        monkeypatch.setattr(evaluation, "evaluate", _refuse("a check evaluation"))
        second = run_partition(defs, instance, KEY)
        assert second.success, failures(second)
    before, after = materialized(first), materialized(second)
    for asset in STATE_OUTPUTS:
        assert after[asset]["created"] is False, asset
        assert after[asset]["data_version"] == before[asset]["data_version"], asset
        assert after[asset]["run_report_metrics"].get("verified") is True, asset
    assert len(second.get_asset_check_evaluations()) == len(first.get_asset_check_evaluations()) == 42
    assert all(e.passed for e in second.get_asset_check_evaluations())
    assert _temp_files(world_root) == []


def test_a_rerun_after_an_output_was_altered_computes_and_refuses_to_overwrite(world_root):
    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(defs, instance, KEY)
        assert first.success
        counts_file = next(p for p in world_root.rglob("s3_bucket_counts_5B.parquet") if "baseline_v1" in str(p))
        altered = counts_file.read_bytes()[:-1] + b"\0"
        counts_file.write_bytes(altered)
        second = run_partition(defs, instance, KEY)
    assert not second.success
    codes = {meta.get("error_code") for meta in failures(second).values()}
    assert "5B.S3.IO_WRITE_CONFLICT" in codes
    assert counts_file.read_bytes() == altered
    assert _temp_files(world_root) == []


def test_a_policy_edit_computes_a_new_parameter_hash_beside_the_old_outputs(world_root, tmp_path):
    config = config_copy(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(graph_for(world_root), instance, KEY).success
        policy = config / "arrival_count_config_5B.yaml"
        policy.write_text(policy.read_text().replace("count_law_id: poisson", "count_law_id: nb2"))
        second = run_partition(graph_for(world_root, config), instance, KEY)
    assert second.success, failures(second)
    hashes = {p.parent.parent.parent.name for p in world_root.rglob("s3_bucket_counts_5B.parquet")
              if "baseline_v1" in str(p)}
    assert len(hashes) == 2
    assert materialized(second)["s3_bucket_counts_5B"]["created"] is True


@pytest.mark.parametrize("state_output", ["s2_realised_intensity_5B"])
def test_a_removed_commit_record_means_the_state_computes_again_and_proves_its_bytes(world_root, state_output):
    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(defs, instance, KEY)
        for record in (world_root / "records" / "5B" / "commit_record").glob("code_version=*/state=S2/**/*.json"):
            record.unlink()
        assert not list((world_root / "records" / "5B" / "commit_record").glob("code_version=*/state=S2/**/*.json"))
        second = run_partition(defs, instance, KEY)
    assert second.success
    after = materialized(second)[state_output]
    assert after["created"] is False and after["data_version"] == materialized(first)[state_output]["data_version"]
    assert "verified" not in after["run_report_metrics"]


def test_check_records_of_another_basis_never_stand_in_the_way_of_the_current_ones(world_root, monkeypatch):
    defs = graph_for(world_root)
    records = world_root / "records" / "5B" / "check_record"
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(defs, instance, KEY).success
        current = sorted(records.rglob("check_record_5B.json"))
        assert current and all(p.parent.name.startswith("basis=") for p in current)
        for path in current:  # as if the files the records were made on had since been replaced
            stale = path.parent.with_name("basis=" + "0" * 64)
            stale.mkdir()
            path.rename(stale / path.name)
            path.parent.rmdir()
        assert run_partition(defs, instance, KEY).success  # evaluated again, recorded on the current basis
        assert sorted(records.rglob("check_record_5B.json")) == sorted([*current, *(
            p.parent.with_name("basis=" + "0" * 64) / p.name for p in current)])
        monkeypatch.setattr(evaluation, "evaluate", _refuse("a check evaluation"))
        third = run_partition(defs, instance, KEY)
        assert third.success, failures(third)

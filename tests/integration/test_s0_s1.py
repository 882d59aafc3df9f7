"""S0 and S1 on the tiny and demo worlds: valid outputs, no-op re-runs, byte-identical re-derivation, new ph per policy."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from configlib import edited_config

from arrival_core import contracts, gate, grouping, pipeline, reports, tables
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo, create_world
from arrival_core.world.generate import ensure_seed

S1_TABLES = ("s1_time_grid_5B", "s1_grouping_5B")


def _outputs(root: Path) -> dict[str, bytes]:
    """Every 5B output file under a run root (run reports are logs and excluded), by relative path."""
    base = root / "data" / "layer2" / "5B"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and "run_report" not in p.parts}


def _run_all(store: Store, scenario_ids, seed: int = 42) -> list[pipeline.StateResult]:
    results = []
    for sid in scenario_ids:
        results.append(pipeline.run_s0(store, PartitionKey(seed, sid)))
        results.append(pipeline.run_s1(store, PartitionKey(seed, sid)))
    return results


def _validate_outputs(store: Store, result: pipeline.StateResult) -> None:
    tokens = result.identity.tokens()
    for published in result.published:
        entry = store.entry(published.dataset_id)
        if entry.format == "json":
            doc = json.loads(published.path.read_bytes())
            contracts.validate_document(doc, entry.schema_ref, code="5B.S0.OUTPUT_SCHEMA_INVALID",
                                        where=str(published.path))
            continue
        frame = pl.read_parquet(published.path)
        tables.validate_table(frame, entry.schema_ref, code="5B.S1.GROUPING_SCHEMA_INVALID",
                                 where=str(published.path), primary_key=entry.primary_key,
                                 writer_sort=entry.writer_sort)
        for column in ("manifest_fingerprint", "parameter_hash", "scenario_id"):
            assert frame[column].unique().to_list() == [tokens[column]]
        assert published.rows == frame.height


def test_tiny_outputs_validate_and_cover_the_lambda_domain(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    results = _run_all(store, tiny_world_copy.scenario_ids)
    for result in results:
        _validate_outputs(store, result)
        doc = json.loads(result.report_path.read_bytes())
        contracts.validate_document(doc, reports.REPORT_SCHEMA, code="5B.CONTRACT_INVALID", where="report")
        assert doc["status"] == "PASS" and doc["scenario_set"] == ["baseline_v1", "stress_v1"]
    s0, s1 = results[0], results[1]
    assert s0.identity.manifest_fingerprint == tiny_world_copy.manifest_fingerprint
    receipt = json.loads(store.path("s0_gate_receipt_5B", **s0.identity.tokens()).read_bytes())
    assert receipt["upstream_parameter_hash"] == tiny_world_copy.parameter_hash
    assert set(receipt["upstream_segments"]) == set(gate.UPSTREAM_SEGMENTS)
    grid = pl.read_parquet(store.path("s1_time_grid_5B", **s1.identity.tokens()))
    assert grid.height == tiny_world_copy.buckets == s1.report["metrics"]["bucket_count"]
    surface = store.path("merchant_zone_scenario_local_5A", **s1.identity.tokens())
    domain = pl.read_parquet(surface, columns=list(grouping.ENTITY_KEYS)).unique()
    groups = pl.read_parquet(store.path("s1_grouping_5B", **s1.identity.tokens()))
    assert groups.height == domain.height == tiny_world_copy.entities
    assert groups.select(grouping.ENTITY_KEYS).sort(list(grouping.ENTITY_KEYS)).equals(
        domain.sort(list(grouping.ENTITY_KEYS)))
    assert s1.report["metrics"]["realism_enforced"] is False  # tiny is below min_entities: reported only


def test_rerun_is_a_noop_publish(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    first = _run_all(store, ["baseline_v1"])
    before = {p.path: p.path.stat().st_mtime_ns for r in first for p in r.published}
    assert all(p.created for r in first for p in r.published)
    again = _run_all(store, ["baseline_v1"])
    assert [p.created for r in again for p in r.published] == [False] * 4
    assert {p.path: p.path.stat().st_mtime_ns for r in again for p in r.published} == before
    assert first[1].report_path != again[1].report_path  # one report per execution


def test_another_seed_rederives_identical_seed_invariant_outputs(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    _run_all(store, ["stress_v1"], seed=42)
    ensure_seed(tiny_world_copy.root, 1)
    other = _run_all(store, ["stress_v1"], seed=1)
    assert [p.created for r in other for p in r.published] == [False] * 4


def test_two_fresh_run_roots_from_one_world_seed_are_byte_identical(tmp_path: Path):
    roots = []
    for name in ("a", "b"):
        info = create_world("tiny", tmp_path / name, seeds=(42,))
        _run_all(Store(run_root=info.root), info.scenario_ids)
        roots.append(info.root)
    first, second = (_outputs(root) for root in roots)
    assert len(first) == 2 + 2 * len(S1_TABLES)
    assert first == second


def test_policy_edit_gives_new_parameter_hash_beside_the_old_outputs(tiny_world_copy: WorldInfo, tmp_path: Path):
    root = tiny_world_copy.root
    old = _run_all(Store(run_root=root), ["baseline_v1"])
    old_files = _outputs(root)
    config = edited_config(tmp_path, "grouping_policy_5B", lambda d: d.update(in_stratum_buckets=16))
    new = _run_all(Store(run_root=root, config_dir=config), ["baseline_v1"])
    old_ph, new_ph = old[0].identity.parameter_hash, new[0].identity.parameter_hash
    assert new_ph != old_ph and new[0].identity.manifest_fingerprint == old[0].identity.manifest_fingerprint
    assert all(p.created and f"parameter_hash={new_ph}" in str(p.path) for r in new for p in r.published)
    after = _outputs(root)
    assert {k: after[k] for k in old_files} == old_files  # nothing deleted or changed
    assert len(after) == 2 * len(old_files)
    groups = pl.read_parquet(new[1].published[1].path)
    assert groups["group_id"].str.slice(-3).str.slice(1).cast(pl.Int32).max() < 16


def test_s1_reads_only_a_gate_s0_wrote(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    with pytest.raises(ArrivalError) as err:
        pipeline.run_s1(store, PartitionKey(42, "baseline_v1"))
    assert err.value.code == "5B.S1.S0_GATE_INVALID" and "run S0" in err.value.message
    assert _outputs(tiny_world_copy.root) == {}


def test_fail_report_carries_code_payload_and_identity(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    with pytest.raises(ArrivalError):
        pipeline.run_s1(store, PartitionKey(42, "baseline_v1"), pipeline.RunOptions(run_id="run-fail-1"))
    path = store.path("run_report_5B", state="S1", seed=42, scenario_id="baseline_v1", run_id="run-fail-1")
    doc = json.loads(path.read_bytes())
    contracts.validate_document(doc, reports.REPORT_SCHEMA, code="5B.CONTRACT_INVALID", where=str(path))
    assert (doc["state_id"], doc["status"], doc["error_code"]) == ("5B.S1", "FAIL", "5B.S1.S0_GATE_INVALID")
    assert doc["error"]["error_code"] == doc["error_code"] and "s0_gate_receipt_5B" in doc["error"]["message"]
    assert doc["parameter_hash"] and doc["manifest_fingerprint"] == tiny_world_copy.manifest_fingerprint
    assert doc["metrics"]["scenario_count_succeeded"] == 0 and "total" in doc["metrics"]["timings_seconds"]


def test_unexpected_exception_is_reported_without_a_code_and_reraised(tiny_world_copy: WorldInfo, monkeypatch):
    store = Store(run_root=tiny_world_copy.root)
    pipeline.run_s0(store, PartitionKey(42, "baseline_v1"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(grouping, "assign_groups", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        pipeline.run_s1(store, PartitionKey(42, "baseline_v1"), pipeline.RunOptions(run_id="run-broken"))
    path = store.path("run_report_5B", state="S1", seed=42, scenario_id="baseline_v1", run_id="run-broken")
    doc = json.loads(path.read_bytes())
    assert (doc["status"], doc["error_code"]) == ("FAIL", None)
    assert doc["error"]["message"] == "RuntimeError: disk on fire"
    assert not any("s1_" in k for k in _outputs(tiny_world_copy.root))


@pytest.fixture(scope="module")
def demo_copy(demo_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory) -> WorldInfo:
    """A private copy of the demo world, so this module's outputs do not land in the shared one."""
    root = tmp_path_factory.mktemp("demo_s0_s1") / "world"
    shutil.copytree(demo_world.root, root)
    return replace(demo_world, root=root.resolve())


def test_demo_outputs_validate_and_meet_the_realism_targets(demo_copy: WorldInfo):
    store = Store(run_root=demo_copy.root)
    results = _run_all(store, demo_copy.scenario_ids)
    for result in results:
        _validate_outputs(store, result)
    for s1 in results[1::2]:
        metrics = s1.report["metrics"]
        assert metrics["realism_enforced"] is True and metrics["realism_violations"] == []
        assert metrics["entity_count"] == demo_copy.entities
        assert metrics["bucket_count"] == demo_copy.buckets

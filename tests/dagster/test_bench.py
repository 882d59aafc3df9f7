"""`arrival bench` measures fresh realisations in a scratch run root and never touches the world's own outputs
(its timings are reported, never asserted: benchmarks are not tests)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arrival_assets import cli
from arrival_core import pipeline
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "bench" not in p.relative_to(root).parts}


def test_bench_times_every_state_in_a_scratch_root_and_leaves_the_world_as_it_was(tiny_world: WorldInfo,
                                                                                    tmp_path: Path, capsys):
    root = tmp_path / "world"
    shutil.copytree(tiny_world.root, root)
    pipeline.run_s0(Store(run_root=root), PartitionKey(42, "baseline_v1"))  # an output of the world's own
    before = _files(root)
    assert cli.main(["bench", "--root", str(root), "--scenario", "baseline_v1"]) == 0
    doc = json.loads((root / "bench" / "world-poisson.json").read_text())
    assert [s["state"] for s in doc["states"]] == ["S0", "S1", "S2", "S3", "AUDIT"]
    surface = next(p for p in (root / "data").rglob("merchant_zone_scenario_local_5A.parquet")
                   if "scenario_id=baseline_v1" in str(p))
    entities = pipeline.read_entity_keys(surface).height
    rows = {s["state"]: s["rows"] for s in doc["states"]}
    assert rows["S1"] == entities and rows["S2"] == rows["S3"] == pipeline.table_rows(surface)
    assert _files(root) == before  # no output written, changed or removed in the world's root
    assert [p.name for p in (root / "bench").iterdir()] == ["world-poisson.json"]  # the scratch root is gone
    assert "S0–S3" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_dagster_times_one_partition_two_at_once_and_a_verified_rerun_with_the_checks_cpu(
        tiny_world: WorldInfo, tmp_path: Path):
    """The user's paths beside the engine: `arrival run` for seed 43, for 44 and 45 at once, then 43 again
    (verified, no run); the checks' CPU seconds come from the state steps' phase-time lines, per partition."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world.root, root)
    assert cli.main(["bench", "--root", str(root), "--scenario", "baseline_v1", "--dagster"]) == 0
    doc = json.loads((root / "bench" / "world-poisson-dagster.json").read_text())
    paths = {p["name"]: p for p in doc["paths"]}
    assert [(n, p["partitions"]) for n, p in paths.items()] == [
        ("dagster partition", 1), ("two partitions at once", 2), ("verified re-run", 1)]
    one, pair, again = paths.values()
    assert one["checks_cpu_seconds"] > 0 and pair["checks_cpu_seconds"] > 0
    assert again["checks_cpu_seconds"] is None  # verified from the records: no step ran, no check was evaluated
    assert pair["ratio_to_engine"] == pytest.approx(pair["seconds"] / 2 / doc["s0_s3_seconds"], abs=1e-3)
    assert set(doc["met"]) == {"engine_seconds", "peak_rss_gib", "stream_cores_busy", "dagster_ratio",
                               "checks_cpu_share", "dagster_pair_ratio", "verified_seconds"}

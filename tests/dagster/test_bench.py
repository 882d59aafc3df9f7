"""`arrival bench` measures fresh realisations in a scratch run root and never touches the world's own outputs
(its timings are reported, never asserted: benchmarks are not tests)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

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

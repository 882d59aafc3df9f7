"""`arrival bench` measures fresh realisations in a scratch run root and never touches the world's own outputs
(its timings are reported, never asserted: benchmarks are not tests)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from arrival_assets import bench_command, cli
from arrival_core import bench, contracts, pipeline
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


def test_the_engine_process_is_this_command_for_one_partition_in_its_own_scratch_without_a_record(
        tiny_world: WorldInfo, tmp_path: Path):
    """The child `--dagster` times beside the graph: one partition realised and audited in a scratch root of its
    own, which it removes; it writes no record and starts no Dagster run (nothing but its scratch under bench/)."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world.root, root)
    before = _files(root)
    args = argparse.Namespace(count_law="nb2", kernel=None)
    config, _ = bench_command.variant_config(root, "nb2", None)
    stamps = {p: p.stat().st_mtime_ns for p in config.rglob("*")}
    timing = bench_command.time_engine_process(root, args, 43, "baseline_v1")
    assert (timing.name, timing.partitions, timing.checks_cpu_seconds) == (bench.ENGINE_PROCESS, 1, None)
    assert timing.seconds > 0 and timing.peak_rss_bytes > 50 * 2**20  # the child's own peak (an interpreter's)
    assert _files(root) == before
    assert sorted(p.name for p in (root / "bench").iterdir()) == ["config-nb2"]  # no scratch, record or instance
    assert {p: p.stat().st_mtime_ns for p in config.rglob("*")} == stamps  # the parent's variant copy untouched


def test_a_variant_copy_is_rewritten_only_when_it_differs(tmp_path: Path):
    config, name = bench_command.variant_config(tmp_path, "nb2", "matern32_v1")
    assert name == "nb2-matern32_v1"
    count = config / "arrival_count_config_5B.yaml"
    assert "count_law_id: nb2" in count.read_text()
    assert sorted(p.relative_to(config) for p in config.rglob("*.yaml")) == \
        sorted(p.relative_to(contracts.DEFAULT_CONFIG_DIR) for p in contracts.DEFAULT_CONFIG_DIR.rglob("*.yaml"))
    inode = count.stat().st_ino
    assert bench_command.variant_config(tmp_path, "nb2", "matern32_v1") == (config, name)
    assert count.stat().st_ino == inode  # the same bytes: left as they were
    count.write_text("count_law_id: poisson\n")
    (config / "stray.yaml").write_text("{}\n")
    bench_command.variant_config(tmp_path, "nb2", "matern32_v1")
    assert "count_law_id: nb2" in count.read_text() and not (config / "stray.yaml").exists()


def test_a_timed_childs_peak_rss_is_its_own_not_the_bench_processs():
    """Linux would count the memory of the process a child is forked from: 256 MiB held here must not show in
    a child that holds about 64 MiB (an interpreter and numpy besides), nor in a later child that holds little."""
    held = np.ones(256 * 2**20 // 8)
    code = "import sys, numpy as np; a = np.ones(int(sys.argv[1]) * 2**20 // 8); print(a.sum(), file=sys.stderr)"
    stderr, seconds, peak = bench_command.run_timed([sys.executable, "-c", code, "64"], dict(os.environ))
    assert float(stderr) == 64 * 2**20 // 8 and seconds > 0
    assert 64 * 2**20 < peak < 160 * 2**20 < held.nbytes
    assert bench_command.run_timed([sys.executable, "-c", code, "1"], dict(os.environ))[2] < 96 * 2**20


def test_a_failed_engine_process_is_reported_with_its_status_and_message(tmp_path: Path):
    args = argparse.Namespace(count_law="poisson", kernel=None)
    with pytest.raises(bench_command.TimedRunFailed) as failed:
        bench_command.time_engine_process(tmp_path / "nothing", args, 43, "baseline_v1")
    assert failed.value.status == 2 and "holds no world" in failed.value.stderr


@pytest.mark.slow
def test_bench_dagster_times_one_partition_two_at_once_and_a_verified_rerun_with_the_checks_cpu(
        tiny_world: WorldInfo, tmp_path: Path):
    """The user's paths beside the engine process (this command for seed 43 alone): `arrival run` for seed 43,
    for 44 and 45 at once, then 43 again (verified, no run), each as a multiple of the engine process; the
    checks' CPU seconds come from the state steps' phase-time lines, per partition."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world.root, root)
    assert cli.main(["bench", "--root", str(root), "--scenario", "baseline_v1", "--dagster"]) == 0
    doc = json.loads((root / "bench" / "world-poisson-dagster.json").read_text())
    paths = {p["name"]: p for p in doc["paths"]}
    assert [(n, p["partitions"]) for n, p in paths.items()] == [
        ("engine process", 1), ("dagster partition", 1), ("two partitions at once", 2), ("verified re-run", 1)]
    engine, one, pair, again = paths.values()
    assert engine["seconds"] == doc["engine_process_seconds"] and engine["ratio_to_engine"] == 1.0
    assert engine["checks_cpu_seconds"] is None
    assert one["checks_cpu_seconds"] > 0 and pair["checks_cpu_seconds"] > 0
    assert again["checks_cpu_seconds"] is None  # verified from the records: no step ran, no check was evaluated
    assert pair["ratio_to_engine"] == pytest.approx(pair["seconds"] / 2 / engine["seconds"], abs=1e-3)
    assert [p.name for p in (root / "bench").iterdir()] == ["world-poisson-dagster.json"]  # no child's record
    assert set(doc["met"]) == {"engine_seconds", "peak_rss_gib", "stream_cores_busy", "dagster_ratio",
                               "checks_cpu_share", "dagster_pair_ratio", "verified_seconds"}

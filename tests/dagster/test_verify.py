"""`arrival verify`: every check over stored outputs with a full replay; a tampered count is caught."""

from __future__ import annotations

import polars as pl

from arrival_assets.verify import verify_partition
from arrival_core import pipeline
from arrival_core.identity import PartitionKey
from arrival_core.store import Store


def _realise(root, seed: int, scenario: str) -> Store:
    store = Store(run_root=root)
    for state in (pipeline.run_s0, pipeline.run_s1, pipeline.run_s2, pipeline.run_s3, pipeline.run_audit):
        state(store, PartitionKey(seed, scenario))
    return store


def test_verify_passes_on_untouched_outputs(world_root):
    _realise(world_root, 1, "stress_v1")
    lines: list[str] = []
    assert verify_partition(root=str(world_root), seed="1", scenario="stress_v1", out=lines.append) == 0
    assert lines[-1] == "all ERROR checks passed"
    assert sum(line.startswith("ok") for line in lines) == len(lines) - 1


def test_verify_fails_when_one_stored_count_is_changed(world_root):
    store = _realise(world_root, 1, "baseline_v1")
    identity = pipeline.resolve_identity(store, PartitionKey(1, "baseline_v1"), state="S3")
    path = store.path("s3_bucket_counts_5B", **identity.tokens())
    frame = pl.read_parquet(path)
    row = int(frame["count_N"].arg_max())
    bumped = pl.when(pl.int_range(pl.len()) == row).then(pl.col("count_N") + 1).otherwise(pl.col("count_N"))
    frame.with_columns(bumped.alias("count_N")).write_parquet(path)
    lines: list[str] = []
    assert verify_partition(root=str(world_root), seed="1", scenario="baseline_v1", out=lines.append) == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any("s3_bucket_counts_5B" in line and "rng_replay" in line for line in failed), failed
    assert lines[-1].endswith("ERROR check(s) failed")

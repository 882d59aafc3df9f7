"""Benchmark the ways to write one big 5B table: Arrow's serial ParquetWriter, the stitched parallel writer
(`sink.ParquetSink`) at several thread counts, and Polars' own parallel writer; wall and CPU seconds, and whether the
bytes equal the serial writer's (the 5B format) and stay the same at another thread count.

    python benchmarks/writer_bench.py [--rows 8388608] [--threads 1,2]

The table has the columns of s3_bucket_counts_5B: dictionary-coded keys and identity, a bucket index, λ, μ, a count
and a flag, entities of 2,160 buckets. Polars runs in a child process per thread count (its pool is fixed at import).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrival_core import memory, parallel, sink

BUCKETS = 2_160


def counts_table(rows: int) -> pa.Table:
    """A stand-in for s3_bucket_counts_5B of `rows` rows (whole entities)."""
    rng = np.random.default_rng(5)
    entities = rows // BUCKETS
    rows = entities * BUCKETS
    dictionary = pa.dictionary(pa.int32(), pa.string())

    def keyed(values: list[str], codes: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values)).cast(dictionary)

    merchant = np.repeat(np.arange(entities) // 3, BUCKETS)
    lam = np.exp(rng.normal(-1.7, 1.5, rows))
    return pa.table({
        "manifest_fingerprint": keyed(["f" * 64], np.zeros(rows)), "parameter_hash": keyed(["p" * 64], np.zeros(rows)),
        "seed": pa.array(np.full(rows, 42, np.uint64)), "scenario_id": keyed(["baseline_v1"], np.zeros(rows)),
        "merchant_id": keyed([f"m{i:06d}" for i in range(entities // 3 + 1)], merchant),
        "zone": keyed([f"z{i}" for i in range(3)], np.repeat(np.arange(entities) % 3, BUCKETS)),
        "bucket_index": pa.array(np.tile(np.arange(BUCKETS, dtype=np.int32), entities)),
        "lambda_realised": pa.array(lam), "mu": pa.array(lam), "count_N": pa.array(rng.poisson(lam).astype(np.int64)),
        "count_capped": pa.array(np.zeros(rows, bool)),
    })


def _timed(write) -> dict:
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    data = write()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(cpu, 2), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def serial(table: pa.Table) -> bytes:
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(out, table.schema, **sink.parquet_options(table.schema)) as writer:
        for start in range(0, table.num_rows, sink.ROW_GROUP_ROWS):
            writer.write_table(table.slice(start, sink.ROW_GROUP_ROWS), row_group_size=sink.ROW_GROUP_ROWS)
    return out.getvalue().to_pybytes()


def stitched(table: pa.Table, chunk: int = 2_000_000) -> bytes:
    out = pa.BufferOutputStream()
    writer = sink.ParquetSink(out, table.schema)
    for start in range(0, table.num_rows, chunk):
        writer.write(table.slice(start, chunk))
    writer.close()
    return out.getvalue().to_pybytes()


def polars_child(path: str) -> None:
    """In a child: write the table at `path` again with Polars' writer and print its timing."""
    import polars as pl

    frame = pl.read_parquet(path)
    print(json.dumps(_timed(lambda: _polars_bytes(frame, pl))))


def _polars_bytes(frame, pl) -> bytes:
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        frame.write_parquet(tmp.name, compression="zstd", compression_level=1, statistics=True,
                            row_group_size=sink.ROW_GROUP_ROWS)
        return Path(tmp.name).read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8 * sink.ROW_GROUP_ROWS)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--polars-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.polars_child:
        polars_child(args.polars_child)
        return
    memory.keep_freed_memory()
    table = counts_table(args.rows)
    rows = {"serial pq.ParquetWriter": _timed(lambda: serial(table))}
    for count in (int(t) for t in args.threads.split(",")):
        parallel.set_threads(count)
        rows[f"stitched, {count} thread(s)"] = _timed(lambda: stitched(table))
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        pq.write_table(table, tmp.name)
        for count in (int(t) for t in args.threads.split(",")):
            env = {**os.environ, "POLARS_MAX_THREADS": str(count)}
            line = subprocess.run([sys.executable, __file__, "--polars-child", tmp.name], env=env, check=True,
                                  capture_output=True, text=True).stdout
            rows[f"polars write_parquet, {count} thread(s)"] = json.loads(line)
    reference = rows["serial pq.ParquetWriter"]["sha256"]
    for name, row in rows.items():
        print(f"{name:<34} {row['seconds']:>7.2f} s {row['cpu_seconds']:>7.2f} cpu s {row['bytes']:>12,} B "
              f"{'= serial bytes' if row['sha256'] == reference else 'other bytes ' + row['sha256'][:12]}")


if __name__ == "__main__":
    main()

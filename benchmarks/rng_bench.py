"""Benchmark the RNG core: ns per Philox block, per poisson_inv draw and per gamma_inv draw.

    python benchmarks/rng_bench.py [--world RUN_ROOT] [--scenario baseline_v1] [--threads N]

With --world, the Poisson λ are the positive cells of that world's 5A surface (e.g. the `reference` profile);
otherwise a stand-in with the reference world's shape (log-normal, median 0.18, 99 % below ~20, tail past 1e3).
Times are the best of three runs after a warm-up call (so numba compilation is excluded, and reported apart).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numba
import numpy as np
import polars as pl

from arrival_core import contracts
from arrival_core.rng import streams, variates

N_BLOCKS = 10_000_000
N_DRAWS = 4_000_000
GAMMA_SHAPES = 20


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of fn() in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def world_lambdas(root: Path, scenario: str) -> np.ndarray:
    """The positive λ of a world's local surface, read through the dataset dictionary."""
    receipt = json.loads(contracts.resolve_path(contracts.dataset("run_receipt"), {"run": root}, {}).read_text())
    entry = contracts.dataset("merchant_zone_scenario_local_5A")
    path = contracts.resolve_path(entry, {"run": root, "config": contracts.DEFAULT_CONFIG_DIR},
                                  {"manifest_fingerprint": receipt["manifest_fingerprint"], "scenario_id": scenario})
    lam = pl.read_parquet(path, columns=["lambda_local_scenario"])[:, 0].to_numpy()
    return lam[lam > 1e-12]


def stand_in_lambdas(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.minimum(np.exp(rng.normal(np.log(0.18), 2.3, n)), 5e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="run root of a generated world (its 5A λ surface is used)")
    parser.add_argument("--scenario", default="baseline_v1")
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(1)
    print(f"numba threads: {numba.get_num_threads()}")

    key, hi, lo = streams.stream_bases("S3.bucket_count.v1", "ab" * 32, "cd" * 32, 42, "baseline_v1",
                                       [f"bench={i}" for i in range(1000)])
    ent = rng.integers(0, 1000, N_BLOCKS)
    offsets = rng.integers(0, 2160, N_BLOCKS).astype(np.uint64)
    k, h, lw = key[ent], hi[ent], lo[ent]
    start = time.perf_counter()
    streams.blocks(k[:10], h[:10], lw[:10], offsets[:10])
    first = time.perf_counter() - start
    t = best_of(lambda: streams.blocks(k, h, lw, offsets))
    print(f"philox block (stream base + offset, carry, wrap check): {t / N_BLOCKS * 1e9:7.1f} ns/block"
          f"   (first call incl. compile/load {first:.2f} s)")

    x0, x1 = streams.blocks(k[:N_DRAWS], h[:N_DRAWS], lw[:N_DRAWS], offsets[:N_DRAWS])
    u0, u1 = variates.u01(x0), variates.u01(x1)
    if args.world:
        lam_world = world_lambdas(args.world, args.scenario)
        label = f"world {args.world.name} ({len(lam_world):,} positive cells)"
        lam_mix = rng.choice(lam_world, N_DRAWS)
    else:
        label = "stand-in for the reference world"
        lam_mix = stand_in_lambdas(N_DRAWS, rng)
    lam_big = np.exp(rng.uniform(np.log(1e3), np.log(1e7), N_DRAWS))
    variates.poisson_inv(lam_mix[:10], u0[:10])
    mix_name = (f"λ like the {label}; median {np.median(lam_mix):.2f}, p99 {np.quantile(lam_mix, 0.99):.1f}, "
                f"max {lam_mix.max():.0f}")
    for name, lam in ((mix_name, lam_mix), ("λ log-uniform in [1e3, 1e7]", lam_big)):
        t = best_of(lambda lam=lam: variates.poisson_inv(lam, u0))
        print(f"poisson_inv ({name}): {t / N_DRAWS * 1e9:7.1f} ns/draw")

    shapes = np.exp(rng.uniform(np.log(0.5), np.log(200.0), GAMMA_SHAPES))
    shape = shapes[rng.integers(0, GAMMA_SHAPES, N_DRAWS)]
    start = time.perf_counter()
    variates.gamma_inv(shape, u1)  # builds (and caches) one table per shape
    first = time.perf_counter() - start
    t = best_of(lambda: variates.gamma_inv(shape, u1))
    print(f"gamma_inv ({GAMMA_SHAPES} shapes in [0.5, 200]): {t / N_DRAWS * 1e9:7.1f} ns/draw steady, "
          f"{first / N_DRAWS * 1e9:7.1f} ns/draw on the first call (tables built, {N_DRAWS:,} draws)")
    t = best_of(lambda: variates.box_muller(x0, x1))
    print(f"box_muller: {t / N_DRAWS * 1e9:7.1f} ns/normal")


if __name__ == "__main__":
    main()

"""Two processes publishing into one run root at the same time, as workers on several machines do.

Workers share one run root (an NFS, EFS, Filestore or Lustre mount); the store publishes each file with a
no-clobber link, an identical file already there being accepted. Two processes, started together by a
barrier, (1) run S0 and S1 of the same scenario for two seeds on a fresh copy of a world (the files of
both states are seed-invariant, so both publish the same ones), (2) add the same seed's 3B file to a
synthetic world. Over several repetitions both succeed every time, exactly one of them creates each
file, the bytes are those of a process alone, and no temp file stays. No server is needed: these run in
the default test run (no `cluster` marker).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import traceback
from pathlib import Path

from clusterlib import temp_files

from arrival_core import pipeline
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import ensure_seed

REPETITIONS = 5
SCENARIO = "baseline_v1"
SEEDS = (1, 42)  # the tiny world's (tests/conftest.py): one process each, same seed-invariant files
NEW_SEEDS = tuple(range(101, 101 + REPETITIONS))  # seeds the world has no 3B file for
SPAWN = multiprocessing.get_context("spawn")  # never fork this process: it has run polars (not fork-safe)


def publish_plans(roots: list[str], seed: int, barrier, results) -> None:
    """In a child process: for each root, wait for the other process, then run S0 and S1 there."""
    for root in roots:
        barrier.wait(timeout=300)
        try:
            store = Store(run_root=Path(root))
            files = []
            for run in (pipeline.run_s0, pipeline.run_s1):
                result = run(store, PartitionKey(seed, SCENARIO))
                files += [(str(p.path.relative_to(root)), p.sha256, p.created) for p in result.published]
            results.put((root, seed, "ok", files))
        except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
            results.put((root, seed, "error", traceback.format_exc()))


def extend_world(root: str, seeds: tuple[int, ...], barrier, results) -> None:
    """In a child process: for each seed, wait for the other process, then write the seed's 3B file."""
    for seed in seeds:
        barrier.wait(timeout=300)
        try:
            target = ensure_seed(Path(root), seed)
            results.put((seed, os.getpid(), "ok", hashlib.sha256(target.read_bytes()).hexdigest()))
        except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
            results.put((seed, os.getpid(), "error", traceback.format_exc()))


def together(target, per_process: list[tuple], expected: int) -> list[tuple]:
    """Start one spawned process per argument tuple, sharing a barrier and a result queue; collect."""
    barrier, results = SPAWN.Barrier(len(per_process)), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(*args, barrier, results)) for args in per_process]
    for proc in processes:
        proc.start()
    try:
        collected = [results.get(timeout=300) for _ in range(expected)]
    finally:
        for proc in processes:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in processes] == [0] * len(processes)
    errors = [row[-1] for row in collected if row[2] != "ok"]
    assert not errors, errors[0]
    return collected


def test_two_processes_publish_the_same_seed_invariant_files_at_once(tiny_world, tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(tiny_world.root, alone)
    reference = {}
    for run in (pipeline.run_s0, pipeline.run_s1):
        reference |= {str(p.path.relative_to(alone)): p.sha256 for p in run(Store(run_root=alone),
                                                                              PartitionKey(1, SCENARIO)).published}
    roots = [str(tmp_path / f"shared-{i}") for i in range(REPETITIONS)]
    for root in roots:
        shutil.copytree(tiny_world.root, root)
    rows = together(publish_plans, [(roots, seed) for seed in SEEDS], expected=REPETITIONS * len(SEEDS))
    for root in roots:
        by_seed = {seed: files for r, seed, _, files in rows if r == root}
        assert sorted(by_seed) == sorted(SEEDS)
        first, second = (sorted(by_seed[seed]) for seed in SEEDS)
        assert [(path, digest) for path, digest, _ in first] == [(path, digest) for path, digest, _ in second]
        assert {path: digest for path, digest, _ in first} == reference
        for (path, _, made_first), (_, _, made_second) in zip(first, second):
            assert made_first != made_second, f"{path}: exactly one process creates it"
        assert temp_files(Path(root)) == []


def test_two_processes_add_the_same_seed_to_a_world_at_once(tiny_world, tmp_path):
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    shutil.copytree(tiny_world.root, alone)
    shutil.copytree(tiny_world.root, shared)
    reference = {seed: hashlib.sha256(ensure_seed(alone, seed).read_bytes()).hexdigest() for seed in NEW_SEEDS}
    rows = together(extend_world, [(str(shared), NEW_SEEDS)] * 2, expected=2 * len(NEW_SEEDS))
    for seed in NEW_SEEDS:
        digests = [digest for s, _, _, digest in rows if s == seed]
        assert digests == [reference[seed]] * 2, seed
    assert temp_files(shared) == []

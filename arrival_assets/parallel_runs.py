"""`arrival run --seed A --seed B … --parallel K`: several partitions at once, the way the daemon runs a backfill:
one `arrival run` process per (scenario, seed) partition, at most K at a time, each printing its summary when it
ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from arrival_core.identity import validate_seed

from . import interrupts
from .concurrency import THREADS_ENV, threads_each
from .run_roots import partitions_to_run


def partition_command(seed: int, scenario: str, *, root: str | None, quiet: bool, debug: bool,
                      create: bool) -> list[str]:
    """The `arrival run` command line of one partition, with this interpreter."""
    return [sys.executable, "-m", "arrival_assets.cli", *(["--debug"] if debug else []), "run", "--seed", str(seed),
            "--scenario", scenario, *(["--root", root] if root else []), *(["--quiet"] if quiet else []),
            *(["--create"] if create else []), "--parallel", "1"]


def run_in_processes(*, root: str | None, seeds: Sequence[str], scenario: str | None, parallel: int, quiet: bool,
                     debug: bool, create: bool, err: Callable[[str], None], out: Callable[[str], None] = print
                     ) -> int:
    """Ensure the world and every seed's files here (no two processes create them at once), then run each
    partition as its own `arrival run` process, at most `parallel` at once, each with its share of the cores
    unless the user set the threads (`threads_each`); the worst exit status."""
    values = [validate_seed(s) for s in seeds]
    partitions = partitions_to_run(root=root, seeds=values, scenario=scenario, create=create,
                                   say=None if quiet else err)
    commands = [partition_command(seed, sid, root=root, quiet=quiet, debug=debug, create=create)
                for seed, sid in partitions]
    env = dict(os.environ)
    threads = threads_each(min(parallel, len(commands)))
    if threads is not None:  # the runs share the cores (2 runs on 2 cores: 29.4 s, not 31.3 s, for two partitions)
        env[THREADS_ENV[0]] = str(threads)
    statuses: list[int] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        running = [pool.submit(subprocess.run, c, capture_output=True, text=True, check=False, env=env)
                   for c in commands]
        for done in as_completed(running):
            proc = done.result()
            for line in proc.stdout.splitlines():
                out(line)
            for line in proc.stderr.splitlines():
                err(line)
            statuses.append(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)  # killed: 128+N
    return interrupts.worst_status(statuses)

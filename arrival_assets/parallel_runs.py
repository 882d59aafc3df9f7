"""`arrival run --seed A --seed B … --parallel K`: several partitions at once, the way the daemon runs a backfill:
one `arrival run` process per (scenario, seed) partition, at most K at a time, each printing its summary when it
ends.

With one scenario named, the partitions are known before the world is read: the first K processes are started at
once and load Dagster while this one ensures the world and the seeds' files, then each is told to go on (or, when
the world is wanting, to stop: this process says why). Nothing is created by two processes at once either way.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from arrival_core.identity import validate_scenario_id, validate_seed

from . import interrupts
from .concurrency import THREADS_ENV, threads_each

WAIT_ENV = "ARRIVAL_WAIT_FOR_WORLD"  # set on a partition's process started before its world was ensured
GO, STOP = "go", "stop"  # the line it then waits for on its stdin


def partition_command(seed: int, scenario: str, *, root: str | None, quiet: bool, debug: bool,
                      create: bool) -> list[str]:
    """The `arrival run` command line of one partition, with this interpreter."""
    return [sys.executable, "-m", "arrival_assets.cli", *(["--debug"] if debug else []), "run", "--seed", str(seed),
            "--scenario", scenario, *(["--root", root] if root else []), *(["--quiet"] if quiet else []),
            *(["--create"] if create else []), "--parallel", "1"]


def run_in_processes(*, root: str | None, seeds: Sequence[str], scenario: str | None, parallel: int, quiet: bool,
                     debug: bool, create: bool, err: Callable[[str], None], out: Callable[[str], None] = print
                     ) -> int:
    """Ensure the world (an absent or empty root gets the demo world only when `create`) and every seed's files
    here, then run each partition as its own `arrival run` process, at most `parallel` at once, each with its
    share of the cores unless the user set the threads (`threads_each`); the worst exit status. With `scenario`
    named, the first processes start before the world is ensured and wait for it (`wait_for_world`)."""
    values = [validate_seed(s) for s in seeds]
    command = functools.partial(partition_command, root=root, quiet=quiet, debug=debug, create=create)
    early: list[subprocess.Popen] = []
    if scenario is not None:  # the partitions are these seeds' of this scenario, whatever the world holds
        validate_scenario_id(scenario)
        env = _shared(min(parallel, len(values)))
        early = [subprocess.Popen(command(seed, scenario), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**env, WAIT_ENV: "1"})
                 for seed in values[:parallel]]
    try:
        # the pipeline's readers, loaded while the early processes load theirs
        from .run_roots import partitions_to_run

        partitions = partitions_to_run(root=root, seeds=values, scenario=scenario, create=create,
                                       say=None if quiet else err)
    except BaseException:
        for proc in early:
            proc.communicate(STOP + "\n")
        raise
    if scenario is None:
        env = _shared(min(parallel, len(partitions)))
    for proc in early:
        _tell(proc, GO)
    statuses: list[int] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:  # the early processes hold the first slots
        running = [pool.submit(_finished, proc) for proc in early]
        running += [pool.submit(subprocess.run, command(seed, sid), capture_output=True, text=True, check=False,
                                env=env) for seed, sid in partitions[len(early):]]
        for done in as_completed(running):
            proc = done.result()
            for line in proc.stdout.splitlines():
                out(line)
            for line in proc.stderr.splitlines():
                err(line)
            statuses.append(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)  # killed: 128+N
    return interrupts.worst_status(statuses)


def _shared(runs: int) -> dict[str, str]:
    """This process's environment for `runs` partition processes at once: each with its share of the cores unless
    the user set the threads (2 runs on 2 cores: 29.4 s, not 31.3 s, for two partitions)."""
    env = dict(os.environ)
    threads = threads_each(runs)
    if threads is not None:
        env[THREADS_ENV[0]] = str(threads)
    return env


def _tell(proc: subprocess.Popen, word: str) -> None:
    """Send an early partition's process its word (one that has already ended says how with its exit status)."""
    try:
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
    except OSError:  # a broken pipe: it has ended
        pass


def _finished(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    """An early partition's process run to its end, as `subprocess.run` gives it."""
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_for_world() -> bool:
    """In a partition's process started before its parent had ensured the world (`WAIT_ENV`, once it has loaded
    what it runs with): wait for the parent's word; True to go on (at once when not started so), False when the
    parent found the world wanting (and says why itself)."""
    if os.environ.pop(WAIT_ENV, None) is None:
        return True
    return sys.stdin.readline().strip() == GO

"""How many partition runs one machine holds at once: its cores ÷ the threads of a run, bounded by its memory ÷
the memory of a run (`run_memory_bytes`, config/runtime.yaml). Used by `arrival run --parallel` and the
instance's `max_concurrent_runs` (the daemon's backfills)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from arrival_core import contracts

THREADS_ENV = ("ARRIVAL_THREADS", "NUMBA_NUM_THREADS")  # the first one set gives a run's threads


def machine_cores() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_memory_bytes() -> int:
    """The machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def threads_per_run(env: Mapping[str, str] | None = None) -> int:
    """A run's engine threads: $ARRIVAL_THREADS (or $NUMBA_NUM_THREADS) when a positive integer, else every
    core this process may use (the engine's default)."""
    env = os.environ if env is None else env
    for name in THREADS_ENV:
        value = (env.get(name) or "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return machine_cores()


def concurrent_runs(env: Mapping[str, str] | None = None, *, cores: int | None = None,
                    memory_bytes: int | None = None) -> int:
    """Runs at once: cores ÷ threads per run, at most memory ÷ `run_memory_bytes`, at least one."""
    cores = machine_cores() if cores is None else cores
    memory_bytes = machine_memory_bytes() if memory_bytes is None else memory_bytes
    by_cores = cores // threads_per_run(env)
    by_memory = memory_bytes // contracts.runtime_settings()["run_memory_bytes"]
    return max(1, min(by_cores, by_memory))


def threads_each(at_once: int, env: Mapping[str, str] | None = None, *, cores: int | None = None) -> int | None:
    """The engine threads each of `at_once` runs started together gets: their share of the cores (at least one),
    so that together they keep every core busy without more threads than cores; None when the user set a run's
    threads ($ARRIVAL_THREADS, $NUMBA_NUM_THREADS or `--threads`), which every run then keeps."""
    env = os.environ if env is None else env
    if any((env.get(name) or "").strip() for name in THREADS_ENV):
        return None
    cores = machine_cores() if cores is None else cores
    return max(1, cores // max(1, at_once))

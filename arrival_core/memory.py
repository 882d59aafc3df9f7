"""How the engine's process keeps memory it has freed: big chunk arrays are then reused instead of being handed
back to the kernel and faulted in again, which on virtual machines costs more than the work on them."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os

from . import contracts
from .errors import ArrivalError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameters
ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc reads it when a process starts


def _mallopt():
    """glibc's mallopt, or None where the C library is not glibc."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return None


@functools.cache
def share_heaps() -> bool:
    """Have malloc keep every thread's blocks in config/runtime.yaml's `malloc_arena_max` heaps, in this process
    and (through $MALLOC_ARENA_MAX, unless the user set it) in every process it starts; False where the C library
    is not glibc. Only heaps made after it are bounded, so a command calls it before anything starts a thread
    (NumPy's and Arrow's libraries start theirs when imported)."""
    try:
        arenas = os.environ.get(ARENA_ENV) or str(contracts.runtime_settings()["malloc_arena_max"])
    except ArrivalError:  # a broken config/runtime.yaml: the command that reads it says so, coded
        return False
    os.environ[ARENA_ENV] = arenas
    mallopt = _mallopt()
    return mallopt is not None and arenas.isdigit() and bool(mallopt(_M_ARENA_MAX, int(arenas)))


@functools.cache
def keep_freed_memory() -> bool:
    """Route Arrow's allocations through malloc and keep malloc's freed heap (glibc), once per process; False
    where the C library is not glibc (nothing is changed then). The thresholds are config/runtime.yaml's."""
    import pyarrow as pa

    settings = contracts.runtime_settings()
    pa.set_memory_pool(pa.system_memory_pool())
    mallopt = _mallopt()
    return (mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, settings["malloc_mmap_threshold_bytes"]))
            and bool(mallopt(_M_TRIM_THRESHOLD, settings["malloc_trim_threshold_bytes"])))


@functools.cache
def collect_rarely() -> tuple[int, int, int]:
    """Set Python's collector thresholds to config/runtime.yaml's `gc_thresholds`, once per process, at the start of
    a command that loads Dagster and runs partitions: full collections, which walk every object alive (a million once
    Dagster is loaded), then come every 100 middle collections instead of 10. Returns the thresholds set."""
    thresholds = tuple(contracts.runtime_settings()["gc_thresholds"])
    gc.set_threshold(*thresholds)
    return thresholds


@functools.cache
def freeze_loaded_objects() -> int:
    """Once per process, when a command has loaded what it runs with (Dagster, the definitions, the instance): move
    every object then alive out of the collector's generations (`gc.freeze`), so the full collections a run still
    makes skip them. Returns how many objects were frozen."""
    gc.collect()  # what loading left unreachable is freed, not frozen
    gc.freeze()
    return gc.get_freeze_count()

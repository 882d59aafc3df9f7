"""How the engine's process keeps memory it has freed: big chunk arrays are then reused instead of being handed
back to the kernel and faulted in again, which on virtual machines costs more than the work on them."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa

from . import contracts

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@functools.cache
def keep_freed_memory() -> bool:
    """Route Arrow's allocations through malloc and keep malloc's freed heap (glibc), once per process; False
    where the C library is not glibc (nothing is changed then). The thresholds are config/runtime.yaml's."""
    settings = contracts.runtime_settings()
    pa.set_memory_pool(pa.system_memory_pool())
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return (bool(mallopt(_M_MMAP_THRESHOLD, settings["malloc_mmap_threshold_bytes"]))
            and bool(mallopt(_M_TRIM_THRESHOLD, settings["malloc_trim_threshold_bytes"])))

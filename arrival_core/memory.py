"""How the engine's process keeps memory it has freed: big chunk arrays are then reused instead of being handed
back to the kernel and faulted in again, which on virtual machines costs more than the work on them."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling: blocks up to 32 MiB come from the reusable heap
_TRIM_THRESHOLD = 1 << 30  # free heap kept before any is returned to the kernel


@functools.cache
def keep_freed_memory() -> bool:
    """Route Arrow's allocations through malloc and keep malloc's freed heap (glibc), once per process; False
    where the C library is not glibc (nothing is changed then)."""
    pa.set_memory_pool(pa.system_memory_pool())
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))

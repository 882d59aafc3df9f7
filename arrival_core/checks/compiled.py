"""What the compiled check kernels share: their numba options, one array type per argument, and the wait for a
run's compiling child.

numba compiles a kernel once per argument type, and whether an array is read-only is part of its type. A column
taken from Arrow is read-only when it is one chunk and a writable copy when it is several, so each kernel is
called through `frozen` views: one signature whatever the layout, the one the warm-up child compiles ahead.
"""
from __future__ import annotations

import numpy as np

from ..rng import warmup
from ..rng.normal_kernels import JIT

__all__ = ["JIT", "frozen", "ready"]


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array (no copy)."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def ready() -> None:
    """Before a check kernel's first call: let a compiling child of this run finish the check kernels, so they load
    from numba's cache (`rng.warmup`; nothing to wait for in any other process)."""
    warmup.wait(checks=True)

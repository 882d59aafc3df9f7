"""What the compiled check kernels share: their numba options and one array type per argument.

numba compiles a kernel once per argument type, and whether an array is read-only is part of its type. A column
taken from Arrow is read-only when it is one chunk and a writable copy when it is several, so each kernel is
called through `frozen` views: one signature whatever the layout, the one the warm-up child compiles ahead.
"""
from __future__ import annotations

import numpy as np

from ..rng.normal_kernels import JIT

__all__ = ["JIT", "frozen"]


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array (no copy)."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view

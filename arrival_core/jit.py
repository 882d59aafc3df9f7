"""The numba options of every compiled kernel, in one place: cached on disk (a run loads what an earlier one
compiled) and GIL-free (`rng.threads.run_sliced` runs a kernel's slices on several threads at once); and the
read-only views kernels are called with.

numba compiles a kernel once per argument type, and whether an array is read-only is part of its type. A column
taken from Arrow is read-only when it is one chunk and a writable copy when it is several, so kernels fed from
Arrow are called through `frozen` views: one signature whatever the layout, the one a warm-up compiles ahead."""
from __future__ import annotations

import numpy as np

JIT = {"cache": True, "nogil": True}  # every kernel
INLINE = {**JIT, "inline": "always"}  # a small helper compiled into its callers


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array (no copy)."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view

"""The numba options of every compiled kernel, in one place: cached on disk (a run loads what an earlier one
compiled) and GIL-free (`rng.threads.run_sliced` runs a kernel's slices on several threads at once)."""
from __future__ import annotations

JIT = {"cache": True, "nogil": True}  # every kernel
INLINE = {**JIT, "inline": "always"}  # a small helper compiled into its callers

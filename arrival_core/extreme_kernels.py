"""Compiled extremes of a float64 column for its value set: one pass instead of NumPy's two (min, then max), with
whether every value is finite, so a column holding NaN or ±inf is left to the caller's slower path."""
from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, frozen


@numba.njit(**JIT)
def _extremes(values):  # pragma: no cover - compiled
    """(min, max, all finite) of a non-empty array, over four interleaved lanes so the comparisons pipeline; x − x
    is 0 for a finite x and NaN for NaN or ±inf, so their sum says whether every value is finite."""
    n = values.size
    l0 = l1 = l2 = l3 = h0 = h1 = h2 = h3 = values[0]
    spread = 0.0
    i = 0
    while i + 4 <= n:
        a, b, c, d = values[i], values[i + 1], values[i + 2], values[i + 3]
        l0 = min(l0, a)
        h0 = max(h0, a)
        l1 = min(l1, b)
        h1 = max(h1, b)
        l2 = min(l2, c)
        h2 = max(h2, c)
        l3 = min(l3, d)
        h3 = max(h3, d)
        spread += (a - a) + (b - b) + (c - c) + (d - d)
        i += 4
    while i < n:
        a = values[i]
        l0 = min(l0, a)
        h0 = max(h0, a)
        spread += a - a
        i += 1
    return min(min(l0, l1), min(l2, l3)), max(max(h0, h1), max(h2, h3)), spread == 0.0


def extremes(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of a non-empty float64 array when every value is finite, else None."""
    if values.dtype != np.float64 or not values.size:
        raise ValueError("extremes needs a non-empty float64 array")
    low, high, finite = _extremes(frozen(np.ascontiguousarray(values)))
    return (float(low), float(high)) if finite else None


def compile_extremes() -> None:
    """`extremes` on its one signature, for a warm-up."""
    extremes(np.zeros(2))

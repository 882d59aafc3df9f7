"""Compiled row rules of the counts check: one pass over a row group, no per-row temporaries.

Each rule is counted with its first failing row, which the check turns into its messages; the comparisons are the
IEEE ones NumPy makes (NaN fails an equality and passes no bound), so the outcomes are those of the array
expressions they replace. The same pass counts the drawing rows (μ > lambda_zero_eps).
"""
from __future__ import annotations

import numba
import numpy as np

from ..jit import JIT
from .compiled import frozen, ready, tally

RULES = ("λ_realised differs from s2_realised_intensity_5B", "μ ≠ λ_realised", "count_N > max_count_per_bucket",
         "count_N > 0 where μ ≤ lambda_zero_eps", "count_capped without count_N = max_count_per_bucket",
         "count_N decodes to another count than was drawn")


@numba.njit(**JIT)
def _count_mismatches(realised, sealed, mu, count, capped, drawn, max_count, eps):  # pragma: no cover - compiled
    """(failing rows, first failing row or −1) per rule of RULES, and the rows with μ > eps; `drawn` empty: the
    counts drawn are not known (the last rule is not checked)."""
    counts = np.zeros(len(RULES), dtype=np.int64)
    first = np.full(len(RULES), -1, dtype=np.int64)
    compare_drawn = drawn.size > 0
    drawing = 0
    for i in range(mu.size):
        m, r, n = mu[i], realised[i], count[i]
        drawing += m > eps
        bad = ((r != sealed[i]) | (m != r) << 1 | (n > max_count) << 2 | ((m <= eps) & (n != 0)) << 3
               | (capped[i] & (n != max_count)) << 4 | (compare_drawn and n != drawn[i]) << 5)
        if bad:
            tally(bad, i, counts, first)
    return counts, first, drawing


def count_mismatches(realised: np.ndarray, sealed: np.ndarray, mu: np.ndarray, count: np.ndarray,
                     capped: np.ndarray, drawn: np.ndarray | None, max_count: int, eps: float
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """`_count_mismatches` on read-only float64, int64 and bool views (one compiled signature); `drawn` None when
    the counts drawn are not known."""
    n = len(mu)
    if not (len(realised) == len(sealed) == len(count) == len(capped) == n and (drawn is None or len(drawn) == n)):
        raise ValueError("count_mismatches needs columns of equal length")
    floats = [frozen(np.asarray(a, dtype=np.float64)) for a in (realised, sealed, mu)]
    ints = [frozen(np.asarray(a, dtype=np.int64)) for a in (count, np.zeros(0) if drawn is None else drawn)]
    ready()
    found, first, drawing = _count_mismatches(*floats, ints[0], frozen(np.asarray(capped, dtype=np.bool_)), ints[1],
                                              int(max_count), float(eps))
    return found, first, int(drawing)

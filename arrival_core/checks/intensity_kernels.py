"""Compiled row rules of the realised-intensity check: one pass over a chunk, no per-row temporaries.

Each rule is counted with its first failing row, which the check turns into its messages; the comparisons are
the IEEE ones NumPy makes (NaN fails an equality and passes no bound), so the outcomes are those of the array
expressions they replace.
"""
from __future__ import annotations

import numba
import numpy as np

from ..jit import JIT
from .compiled import frozen, ready, tally

RULES = ("λ_baseline differs from the sealed λ_target", "ξ outside [min_factor, max_factor]",
         "λ_realised ≠ min(λ_baseline·ξ, lambda_max)", "ξ differs from s2_latent_field_5B")


@numba.njit(**JIT)
def _realised_mismatches(target, sealed, factor, realised, low, high, cap, field, group, buckets, first_bucket
                        ):  # pragma: no cover - compiled
    """(failing rows, first failing row or −1) per rule of RULES over rows (entity, bucket), bucket fastest, the
    first row in bucket `first_bucket` of the first entity.

    `cap` is lambda_max (NaN: none); `field` is ξ per (group, bucket) with `group` per entity the rows touch, or
    empty when the latent field was not published (then the last rule is not checked)."""
    counts = np.zeros(len(RULES), dtype=np.int64)
    first = np.full(len(RULES), -1, dtype=np.int64)
    capped = not np.isnan(cap)
    compare_field = field.size > 0
    e = 0  # the row's entity among those the rows touch, and its bucket: counted, not divided out
    b = first_bucket
    for i in range(target.size):
        t, f = target[i], factor[i]
        expected = t * f
        if capped and expected > cap:
            expected = cap
        off_field = False
        if compare_field:
            off_field = f != field[group[e], b]
        bad = ((t != sealed[i]) | ((f < low) | (f > high)) << 1 | (realised[i] != expected) << 2 | off_field << 3)
        if bad:
            tally(bad, i, counts, first)
        b += 1
        if b == buckets:
            b = 0
            e += 1
    return counts, first


def realised_mismatches(target: np.ndarray, sealed: np.ndarray, factor: np.ndarray, realised: np.ndarray, low: float,
                        high: float, cap: float | None, field: np.ndarray | None, group: np.ndarray,
                        buckets: int, first_bucket: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`_realised_mismatches` on read-only views, float bounds and int32 groups (one compiled signature); `cap` and
    `field` None when the policy has no lambda_max or the field was not published."""
    if not (len(target) == len(sealed) == len(factor) == len(realised)
            and len(group) == -(-(first_bucket + len(target)) // buckets) and 0 <= first_bucket < buckets):
        raise ValueError("realised_mismatches needs equal-length columns and the group of every entity they touch")
    field = np.empty((0, buckets)) if field is None else field
    ready()
    return _realised_mismatches(*(frozen(np.asarray(a, dtype=np.float64)) for a in (target, sealed, factor, realised)),
                                float(low), float(high), np.nan if cap is None else float(cap),
                                frozen(np.asarray(field, dtype=np.float64)), frozen(np.asarray(group, dtype=np.int32)),
                                int(buckets), int(first_bucket))

"""Compiled row rules of the latent field's check: one pass over a row group, no per-row temporaries.

Rows are one per (group, bucket), group-major. Each rule is counted with its first failing row, which the check
turns into its messages; the comparisons are the IEEE ones NumPy makes (NaN fails an equality and passes no
bound), so the outcomes are those of the array expressions they replace. The same pass keeps each row's Z, and
ξ of the groups a replay compares, for the checks over the whole field.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import JIT
from .compiled import frozen, ready, tally

RULES = ("rows not one per (group_id, bucket) in writer order", "latent_std differs from the policy's σ",
         "length_scale_buckets differs from the policy", "ξ ≠ clip(exp(Z − σ²/2))",
         "`clipped` does not mark the clipped factors", "ξ differs from the ξ applied to s2_realised_intensity_5B")


@numba.njit(**JIT)
def _latent_mismatches(first_bucket, buckets, first_group, group_index, group_map, bucket, std, length, z, factor, clipped, applied, sigma, length_of, low, high, slot, latent_out,
                       factor_out):  # pragma: no cover - compiled
    """(failing rows, first failing row or −1) per rule of RULES, and the rows whose ξ ≠ 1.

    Row i is bucket b of group first_group + e, counted from bucket `first_bucket`; its group_id arrives as an
    index into its dictionary with the mapping into the sorted group ids; its unclipped factor is exp(Z − σ²/2) by
    the C library's exp, as the engine takes it (`variates.exp`). `applied` (empty: not known) the ξ applied to λ_realised per row. Writes Z into `latent_out` (groups × buckets)
    and ξ into row slot[group] of `factor_out` where that slot is not −1."""
    counts = np.zeros(len(RULES), dtype=np.int64)
    first = np.full(len(RULES), -1, dtype=np.int64)
    compare_applied = applied.size > 0
    n_map = group_map.size
    not_one = 0
    e = 0
    b = first_bucket
    for i in range(z.size):
        g = first_group + e
        j = group_index[i]
        code = group_map[j] if (j >= 0) & (j < n_map) else -1
        s, f = sigma[g], factor[i]
        r = math.exp(z[i] - 0.5 * (s * s))
        c = r  # clip as np.clip does: a NaN stays NaN (min/max here might not keep it)
        if c < low:  # noqa: PLR1730
            c = low
        if c > high:  # noqa: PLR1730
            c = high
        off_applied = False
        if compare_applied:
            off_applied = f != applied[i]
        bad = (((code != g) | (bucket[i] != b)) | (std[i] != s) << 1 | (length[i] != length_of[g]) << 2
               | (f != c) << 3 | (clipped[i] != (f != r)) << 4 | off_applied << 5)
        if bad:
            tally(bad, i, counts, first)
        not_one += f != 1.0
        latent_out[g, b] = z[i]
        k = slot[g]
        if k >= 0:
            factor_out[k, b] = f
        b += 1
        if b == buckets:
            b = 0
            e += 1
    return counts, first, not_one


def latent_mismatches(first_bucket: int, buckets: int, first_group: int, group: tuple[np.ndarray, np.ndarray],
                      bucket: np.ndarray, std: np.ndarray, length: np.ndarray, z: np.ndarray,
                      factor: np.ndarray, clipped: np.ndarray, applied: np.ndarray | None, sigma: np.ndarray,
                      length_of: np.ndarray, low: float, high: float, slot: np.ndarray, latent_out: np.ndarray,
                      factor_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`_latent_mismatches` on read-only views (one compiled signature), after checking the shapes it relies on:
    the rows lie inside the field, one value per row, σ, L and slot per group, `applied` None when not known."""
    n = len(z)
    groups, h = latent_out.shape
    per_row = (group[0], bucket, std, length, z, factor, clipped) + (() if applied is None else (applied,))
    if (h != buckets or not 0 <= first_bucket < buckets or first_group < 0
            or first_group * buckets + first_bucket + n > groups * buckets or any(len(a) != n for a in per_row)
            or not len(sigma) == len(length_of) == len(slot) == groups or factor_out.shape[1:] != (buckets,)
            or (len(slot) and slot.max() >= len(factor_out))):
        raise ValueError("latent_mismatches needs rows inside the field, one value per row and one σ, L, slot "
                         "per group")
    floats = [frozen(np.asarray(a, dtype=np.float64)) for a in (std, length, z, factor)]
    ready()
    found, first, not_one = _latent_mismatches(
        int(first_bucket), int(buckets), int(first_group), frozen(np.asarray(group[0], dtype=np.int32)),
        frozen(np.asarray(group[1], dtype=np.int32)), frozen(np.asarray(bucket, dtype=np.int32)), *floats,
        frozen(np.asarray(clipped, dtype=np.bool_)),
        frozen(np.zeros(0) if applied is None else np.asarray(applied, dtype=np.float64)),
        frozen(np.asarray(sigma, dtype=np.float64)), frozen(np.asarray(length_of, dtype=np.float64)),
        float(low), float(high), frozen(np.asarray(slot, dtype=np.int64)), latent_out, factor_out)
    return found, first, int(not_one)

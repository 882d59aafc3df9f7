"""Compiled placement of grid rows against grid × grouping: one pass, no per-row temporaries.

A grid row r is entity r // H, bucket r % H of the grouping in writer order; its keys (bucket, merchant and the
three string keys as codes into the domain's dictionaries) must be that entity's, and its group that entity's
group. String columns arrive as the indices into their own dictionary with a mapping from that dictionary into
the domain's (−1: a value the domain does not hold), so no per-row string is compared.
"""
from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, frozen


@numba.njit(**JIT)
def _misaligned(first_bucket, buckets, bucket, merchant, want_merchant, c0, m0, w0, c1, m1, w1, c2, m2, w2,
                group, group_map, want_group):  # pragma: no cover - compiled
    """(first row whose keys are not its entity's, or −1; first row before it whose group is not its entity's, or
    −1), the first row being in bucket `first_bucket` of the first entity; `group` empty: groups not compared. An
    index outside its mapping is a row out of place. The rules are combined with `|`, not `or`: one branch a row."""
    compare_group = group.size > 0
    n0, n1, n2, n_group = m0.size, m1.size, m2.size, group_map.size
    first_group = -1
    e = 0
    b = first_bucket
    for i in range(bucket.size):
        j0, j1, j2 = c0[i], c1[i], c2[i]
        if ((bucket[i] != b) | (merchant[i] != want_merchant[e]) | (j0 < 0) | (j0 >= n0) | (j1 < 0) | (j1 >= n1)
                | (j2 < 0) | (j2 >= n2)):
            return i, first_group
        if (m0[j0] != w0[e]) | (m1[j1] != w1[e]) | (m2[j2] != w2[e]):
            return i, first_group
        if compare_group and first_group < 0:
            j = group[i]
            if j < 0 or j >= n_group or group_map[j] != want_group[e]:
                first_group = i
        b += 1
        if b == buckets:
            b = 0
            e += 1
    return -1, first_group


Coded = tuple[np.ndarray, np.ndarray, np.ndarray]  # (int32 indices per row, int32 mapping, int32 code per entity)


def misaligned(first_bucket: int, buckets: int, bucket: np.ndarray, merchant: np.ndarray, want_merchant: np.ndarray,
               keys: tuple[Coded, Coded, Coded], group: Coded | None) -> tuple[int | None, int | None]:
    """`_misaligned` on read-only views (one compiled signature per bucket and merchant type), None for −1; the
    per-entity arrays must cover every entity the rows touch."""
    n = len(bucket)
    entities = -(-(first_bucket + n) // buckets)
    coded = [*keys, group or (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32))]
    if not 0 <= first_bucket < buckets or len(merchant) != n or len(want_merchant) < entities or any(
            len(indices) and (len(indices) != n or len(want) < entities) for indices, _, want in coded):
        raise ValueError("misaligned needs one key per row and the per-entity keys of every entity the rows touch")
    arrays = [frozen(bucket), frozen(merchant), frozen(want_merchant)]
    for indices, mapping, want in coded:
        arrays += [frozen(np.asarray(a, dtype=np.int32)) for a in (indices, mapping, want)]
    key_row, group_row = _misaligned(int(first_bucket), int(buckets), *arrays)
    return (None if key_row < 0 else int(key_row)), (None if group_row < 0 else int(group_row))


def compile_misaligned() -> None:
    """`misaligned` on the types of the grid tables (int32 buckets, uint64 merchants): its signature, for a warm-up."""
    coded = (np.zeros(2, dtype=np.int32),) * 3
    misaligned(0, 2, np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.uint64), np.zeros(1, dtype=np.uint64),
               (coded,) * 3, coded)

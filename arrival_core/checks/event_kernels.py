"""Compiled comparison of the count RNG events with the count rows they log: one pass, no per-row temporaries.

An event's keys must be its count row's (bucket, merchant and the three string keys as domain codes) and its
envelope the entity's stream base + bucket_index, one block of the policy's draws. Each comparison is counted
per column with its first differing event, which the check turns into its messages.
"""
from __future__ import annotations

import numba
import numpy as np

from ..jit import JIT
from .compiled import frozen, ready, tally

KEY_COLUMNS = ("bucket_index", "merchant_id", "legal_country_iso", "tzid", "channel_group")
ENVELOPE_COLUMNS = ("rng_key", "rng_counter_before_hi", "rng_counter_before_lo", "rng_counter_after_hi",
                    "rng_counter_after_lo", "draws", "blocks")


@numba.njit(**JIT)
def _event_mismatches(logged, first_row, buckets, merchant, w0, w1, w2, key, hi, lo, ev_bucket, ev_merchant,
                     c0, m0, c1, m1, c2, m2, ev_key, ev_before_hi, ev_before_lo, ev_after_hi, ev_after_lo, ev_draws,
                     ev_blocks, draws):  # pragma: no cover - compiled
    """(differing events, first differing event or −1) per column of KEY_COLUMNS + ENVELOPE_COLUMNS.

    Event j logs grid row logged[j], entity (logged[j] − first_row) // buckets of the per-entity arrays `merchant`,
    w0..w2 (the string keys' domain codes) and the stream base (key, hi, lo); the events' string keys are indices
    c0..c2 into their own dictionaries with mappings m0..m2 into the domain's (outside the mapping: −1). The rules
    are combined with `|`, not `or`: one branch an event."""
    width = len(KEY_COLUMNS) + len(ENVELOPE_COLUMNS)
    counts = np.zeros(width, dtype=np.int64)
    first = np.full(width, -1, dtype=np.int64)
    one = np.uint64(1)
    n0, n1, n2 = m0.size, m1.size, m2.size
    e = 0  # the entity of the last event: the next one mostly falls in it, so is placed without a division
    for j in range(logged.size):
        row = logged[j] - first_row
        at = row - e * buckets
        if at < 0 or at >= buckets:
            e = row // buckets
            at = row - e * buckets
        b = np.uint64(at)
        j0, j1, j2 = c0[j], c1[j], c2[j]
        code0 = m0[j0] if (j0 >= 0) & (j0 < n0) else -1
        code1 = m1[j1] if (j1 >= 0) & (j1 < n1) else -1
        code2 = m2[j2] if (j2 >= 0) & (j2 < n2) else -1
        before_lo = lo[e] + b
        before_hi = hi[e] + np.uint64(before_lo < lo[e])
        after_lo = before_lo + one
        after_hi = before_hi + np.uint64(after_lo < before_lo)
        bad = ((np.int64(ev_bucket[j]) != at) | (ev_merchant[j] != merchant[e]) << 1
               | (code0 != w0[e]) << 2 | (code1 != w1[e]) << 3 | (code2 != w2[e]) << 4 | (ev_key[j] != key[e]) << 5
               | (ev_before_hi[j] != before_hi) << 6 | (ev_before_lo[j] != before_lo) << 7
               | (ev_after_hi[j] != after_hi) << 8 | (ev_after_lo[j] != after_lo) << 9
               | (ev_draws[j] != draws) << 10 | (ev_blocks[j] != 1) << 11)
        if bad:  # one bit per column, in KEY_COLUMNS + ENVELOPE_COLUMNS order
            tally(bad, j, counts, first)
    return counts, first


Coded = tuple[np.ndarray, np.ndarray]  # a string column: int32 indices into its dictionary, int32 mapping from it


def event_mismatches(logged: np.ndarray, first_row: int, buckets: int, merchant: np.ndarray,
                     codes: tuple[np.ndarray, np.ndarray, np.ndarray], bases: tuple[np.ndarray, np.ndarray, np.ndarray],
                     ev_bucket: np.ndarray, ev_merchant: np.ndarray, ev_codes: tuple[Coded, Coded, Coded],
                     envelope: tuple[np.ndarray, ...], *, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """`_event_mismatches` on read-only views (one compiled signature), after checking the shapes it relies on:
    the per-entity arrays cover every entity the logged rows fall in, one value per event elsewhere."""
    n = len(logged)
    entities = (int(logged.max()) - first_row) // buckets + 1 if n else 0
    if n and int(logged.min()) < first_row:
        raise ValueError("event_mismatches needs logged rows from first_row on")
    per_entity = (merchant, *codes, *bases)
    per_event = (ev_bucket, ev_merchant, *(c for c, _ in ev_codes), *envelope)
    if (len(codes) != 3 or len(bases) != 3 or len(ev_codes) != 3 or len(envelope) != len(ENVELOPE_COLUMNS)
            or any(len(a) < entities for a in per_entity) or any(len(a) != n for a in per_event)):
        raise ValueError("event_mismatches needs every entity's keys and base, and one value per event")
    coded = [frozen(np.asarray(a, dtype=np.int32)) for pair in ev_codes for a in pair]
    ready()
    return _event_mismatches(
        frozen(np.asarray(logged, dtype=np.int64)), int(first_row), int(buckets), frozen(merchant),
        *(frozen(np.asarray(c, dtype=np.int32)) for c in codes), *(frozen(b) for b in bases),
        frozen(ev_bucket), frozen(ev_merchant), *coded, *(frozen(a) for a in envelope), int(draws))

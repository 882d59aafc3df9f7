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
def _event_mismatches(entity, bucket, merchant, codes, key, hi, lo,
                     ev_bucket, ev_merchant, ev_codes, ev_key, ev_before_hi, ev_before_lo, ev_after_hi,
                     ev_after_lo, ev_draws, ev_blocks, draws):  # pragma: no cover - compiled
    """(differing events, first differing event or −1) per column of KEY_COLUMNS + ENVELOPE_COLUMNS.

    Event j logs the row (entity[j], bucket[j]); `merchant`, `codes` (3 × entities) and the stream base (key, hi,
    lo) are per entity; `ev_codes` (3 × events) are the events' string keys as positions in the same dictionaries."""
    width = len(KEY_COLUMNS) + len(ENVELOPE_COLUMNS)
    counts = np.zeros(width, dtype=np.int64)
    first = np.full(width, -1, dtype=np.int64)
    one = np.uint64(1)
    for j in range(entity.size):
        e = entity[j]
        b = np.uint64(bucket[j])
        before_lo = lo[e] + b
        before_hi = hi[e] + np.uint64(before_lo < lo[e])
        after_lo = before_lo + one
        after_hi = before_hi + np.uint64(after_lo < before_lo)
        bad = ((np.int64(ev_bucket[j]) != bucket[j]) | (ev_merchant[j] != merchant[e]) << 1
               | (ev_codes[0, j] != codes[0, e]) << 2 | (ev_codes[1, j] != codes[1, e]) << 3
               | (ev_codes[2, j] != codes[2, e]) << 4 | (ev_key[j] != key[e]) << 5
               | (ev_before_hi[j] != before_hi) << 6 | (ev_before_lo[j] != before_lo) << 7
               | (ev_after_hi[j] != after_hi) << 8 | (ev_after_lo[j] != after_lo) << 9
               | (ev_draws[j] != draws) << 10 | (ev_blocks[j] != 1) << 11)
        if bad:  # one bit per column, in KEY_COLUMNS + ENVELOPE_COLUMNS order
            tally(bad, j, counts, first)
    return counts, first


def event_mismatches(*arrays: np.ndarray, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """`_event_mismatches` on read-only views of its 17 arrays (one compiled signature)."""
    if len(arrays) != 17:
        raise ValueError(f"event_mismatches takes 17 arrays, got {len(arrays)}")
    ready()
    return _event_mismatches(*(frozen(a) for a in arrays), draws)

"""Philox2x64-10: Random123 known answers, an independent big-int implementation, 128-bit counter arithmetic.

numpy's `np.random.Philox` is Philox4x64 (four 64-bit words, two key words), a different function, so it cannot
serve as a reference for Philox2x64; the cross-check here is a plain Python big-int implementation instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arrival_core.rng.philox import add_counter, philox2x64_10

DATA = Path(__file__).resolve().parents[1] / "data"
MASK = (1 << 64) - 1


def philox_reference(c0: int, c1: int, key: int) -> tuple[int, int]:
    """Philox2x64-10 written from the Random123 round definition with exact Python integers."""
    for r in range(10):
        if r:
            key = (key + 0x9E3779B97F4A7C15) & MASK
        product = 0xD2B74407B1CE6E93 * c0
        c0, c1 = (product >> 64) ^ key ^ c1, product & MASK
    return c0, c1


def kat_rows() -> list[tuple[int, ...]]:
    rows = []
    for line in (DATA / "philox2x64_10_kat.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, rounds, *words = line.split()
        assert (name, rounds) == ("philox2x64", "10")
        rows.append(tuple(int(w, 16) for w in words))
    return rows


def test_published_random123_vectors_match():
    rows = kat_rows()
    published = rows[:3]  # zero, all-ones, pi digits
    assert published[0][:3] == (0, 0, 0)
    assert published[1][:3] == (MASK, MASK, MASK)
    assert published[2][:3] == (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0)
    for c0, c1, key, o0, o1 in rows:
        got = philox2x64_10(np.array([c0], dtype=np.uint64), np.array([c1], dtype=np.uint64), np.uint64(key))
        assert (int(got[0][0]), int(got[1][0])) == (o0, o1)


def test_vectorised_kernel_equals_big_int_reference_on_random_inputs():
    rng = np.random.default_rng(20240607)
    c0, c1, key = (rng.integers(0, 2**64, 500, dtype=np.uint64) for _ in range(3))
    o0, o1 = philox2x64_10(c0, c1, key)
    for i in range(500):
        assert (int(o0[i]), int(o1[i])) == philox_reference(int(c0[i]), int(c1[i]), int(key[i]))


def test_scalar_key_broadcasts_over_counter_arrays_and_keeps_shape():
    c0 = np.arange(12, dtype=np.uint64).reshape(3, 4)
    o0, o1 = philox2x64_10(c0, np.uint64(7), 99)
    assert o0.shape == o1.shape == (3, 4)
    assert (int(o0[2, 1]), int(o1[2, 1])) == philox_reference(9, 7, 99)


@pytest.mark.parametrize("bad", [np.array([-1]), np.array([1.5]), [2**64]])
def test_counters_that_are_not_u64_are_refused(bad):
    with pytest.raises(ValueError):
        philox2x64_10(bad, 0, 0)


def test_add_counter_carries_into_hi_and_flags_only_a_128_bit_wrap():
    hi = np.array([0, 5, MASK, MASK], dtype=np.uint64)
    lo = np.array([MASK, MASK - 1, MASK - 3, MASK], dtype=np.uint64)
    new_hi, new_lo, wrapped = add_counter(hi, lo, np.array([1, 1, 3, 1], dtype=np.uint64))
    assert new_hi.tolist() == [1, 5, MASK, 0]
    assert new_lo.tolist() == [0, MASK, MASK, 0]
    assert wrapped.tolist() == [False, False, False, True]

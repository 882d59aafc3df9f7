"""The independent reference's elementwise loops, compiled: Philox2x64-10's ten rounds and the C library's ln, cos,
sin and exp of every element. Part of `reference`: written from docs/laws.md §7 alone, importing nothing of
`arrival_core`.

numba compiles `math.log` (and cos, sin, exp) to calls of the C library's own functions, so each value is bit for
bit what CPython's `math` returns (a test keeps it so); NumPy's SIMD versions may differ in the last bit.
"""
from __future__ import annotations

import math

import numba
import numpy as np

OPTIONS = {"cache": True, "nogil": True}  # compiled once to numba's cache on disk, called off the interpreter lock
LN, COS, SIN, EXP = 0, 1, 2, 3  # the functions `libm_each` applies
_M = np.uint64(0xD2B74407B1CE6E93)
_W = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


@numba.njit(**OPTIONS)
def philox_each(c0, c1, key, x0, x1):  # pragma: no cover - compiled
    """x0, x1 = Philox2x64-10 of counters (c0, c1) under `key`, element by element (laws §7.1); the high word of
    M · a by 32-bit limbs, whose uint64 products never overflow."""
    m_lo, m_hi = _M & _LOW32, _M >> _32
    for i in range(c0.size):
        a, b, k = c0[i], c1[i], key[i]
        for r in range(10):
            if r:
                k += _W
            a_lo, a_hi = a & _LOW32, a >> _32
            ll, lh, hl, hh = a_lo * m_lo, a_lo * m_hi, a_hi * m_lo, a_hi * m_hi
            mid = (ll >> _32) + (lh & _LOW32) + (hl & _LOW32)
            a, b = (hh + (lh >> _32) + (hl >> _32) + (mid >> _32)) ^ k ^ b, a * _M
        x0[i], x1[i] = a, b


@numba.njit(**OPTIONS)
def libm_each(which, x, out):  # pragma: no cover - compiled
    """out = the C library's ln, cos, sin or exp (`which`: LN, COS, SIN, EXP) of every element of x."""
    for i in range(x.size):
        v = x[i]
        if which == LN:
            out[i] = math.log(v)
        elif which == COS:
            out[i] = math.cos(v)
        elif which == SIN:
            out[i] = math.sin(v)
        else:
            out[i] = math.exp(v)


def compile_loops() -> None:
    """Compile (or load from numba's cache) both loops for the arrays the reference passes: 1-D, contiguous."""
    words = np.ones(1, dtype=np.uint64)
    philox_each(words, words, words, words.copy(), words.copy())
    libm_each(LN, np.ones(1), np.empty(1))

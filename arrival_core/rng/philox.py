"""Philox2x64-10 (Random123) counter-based generator and 128-bit counter arithmetic, vectorised over uint64 arrays."""
from __future__ import annotations

import numba
import numpy as np

from ..jit import INLINE, JIT
from .threads import run_sliced

PHILOX_M = 0xD2B74407B1CE6E93  # Random123 PHILOX_M2x64_0
PHILOX_W = 0x9E3779B97F4A7C15  # Random123 PHILOX_W64_0 (the key bump)
ROUNDS = 10

_M = np.uint64(PHILOX_M)
_W = np.uint64(PHILOX_W)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_M_LO = np.uint64(PHILOX_M & 0xFFFFFFFF)
_M_HI = np.uint64(PHILOX_M >> 32)


@numba.njit(**INLINE)
def mulhi_m(a: np.uint64) -> np.uint64:
    """High 64 bits of PHILOX_M × a, from 32-bit limbs (no 128-bit integers in numba)."""
    a_lo = a & _MASK32
    a_hi = a >> _S32
    t = a_lo * _M_LO
    t = a_hi * _M_LO + (t >> _S32)
    w1 = t & _MASK32
    w2 = t >> _S32
    t = a_lo * _M_HI + w1
    return a_hi * _M_HI + w2 + (t >> _S32)


@numba.njit(**INLINE)
def philox_block(c0: np.uint64, c1: np.uint64, k: np.uint64) -> tuple[np.uint64, np.uint64]:
    """One Philox2x64-10 block: 10 rounds `c0, c1 = mulhi(M, c0) ^ k ^ c1, M·c0`, key bumped between rounds."""
    for r in range(ROUNDS):
        if r > 0:
            k = k + _W
        hi = mulhi_m(c0)
        lo = c0 * _M
        c0, c1 = hi ^ k ^ c1, lo
    return c0, c1


@numba.njit(**JIT)
def _philox_slice(c0, c1, key, o0, o1):  # pragma: no cover - compiled
    for i in range(c0.shape[0]):
        o0[i], o1[i] = philox_block(c0[i], c1[i], key[i])


def as_u64(name: str, value: object) -> np.ndarray:
    """Return value as a uint64 array, refusing negatives, floats and values of 2**64 or more (no silent wrap)."""
    arr = np.asarray(value)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64)
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise ValueError(f"{name} holds negative values; expected unsigned 64-bit integers")
        return arr.astype(np.uint64)
    if arr.dtype == object:
        ints = arr.ravel().tolist()
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64 for v in ints):
            raise ValueError(f"{name} holds values that are not integers in [0, 2**64)")
        return np.array(ints, dtype=np.uint64).reshape(arr.shape)
    raise ValueError(f"{name} must be unsigned 64-bit integers, got dtype {arr.dtype}")


def flat_u64(**arrays: object) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Broadcast named uint64 inputs together; return the common shape and contiguous 1-D arrays for the kernels."""
    return broadcast_flat([as_u64(name, a) for name, a in arrays.items()])


def broadcast_flat(parts: list[np.ndarray]) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """The common shape and each array as a contiguous, writable 1-D one (read-only would compile another signature)."""
    shape = np.broadcast_shapes(*(p.shape for p in parts))
    flat = [np.require(p if p.shape == shape else np.broadcast_to(p, shape), requirements=("C", "W")).reshape(-1)
            for p in parts]
    return shape, flat


def philox2x64_10(c0: object, c1: object, key: object) -> tuple[np.ndarray, np.ndarray]:
    """Return the Philox2x64-10 output words (o0, o1) for counters (c0, c1) under key, broadcast elementwise."""
    shape, (c0f, c1f, kf) = flat_u64(c0=c0, c1=c1, key=key)
    o0 = np.empty(c0f.shape[0], dtype=np.uint64)
    o1 = np.empty_like(o0)
    run_sliced(c0f.shape[0], lambda a, b: _philox_slice(c0f[a:b], c1f[a:b], kf[a:b], o0[a:b], o1[a:b]))
    return o0.reshape(shape), o1.reshape(shape)


def add_counter(hi: object, lo: object, offset: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (hi, lo) + offset as 128-bit counters with carry, and a mask of the sums that wrapped past 2**128."""
    shape, (h, lo_, off) = flat_u64(hi=hi, lo=lo, offset=offset)
    new_lo = lo_ + off
    carry = new_lo < lo_
    new_hi = h + carry.astype(np.uint64)
    wrapped = carry & (h == np.uint64(0xFFFFFFFFFFFFFFFF))
    return new_hi.reshape(shape), new_lo.reshape(shape), wrapped.reshape(shape)

"""Distributions from Philox bits: u01, Box–Muller normals, Φ⁻¹ (AS241), exact Poisson and gamma inverse CDFs.

Each public function validates and canonicalises its arguments, then calls an elementwise compiled kernel from
`normal_kernels`, `poisson_kernels` and `gamma_kernels`, so every value depends only on its own inputs (never on chunking or thread count).
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from ..jit import JIT
from . import gamma_kernels, normal_kernels, poisson_kernels
from .errors import RngArgumentError
from .philox import as_u64, broadcast_flat

POISSON_LAMBDA_MAX = 1.0e7  # the range over which poisson_inv is exact (and tested)
_SHAPE_LIMIT = 4096         # distinct gamma shapes factorised in one pass; more fall back to np.unique


def u01(x: object) -> np.ndarray:
    """Uniform on (0, 1) from 64-bit words: ((x >> 11) | 1) · 2^-53, odd multiples of 2^-53, never 0 or 1."""
    bits = as_u64("u01: x", x)
    return ((bits >> np.uint64(11)) | np.uint64(1)).astype(np.float64) * 2.0**-53


def box_muller(x0: object, x1: object) -> np.ndarray:
    """Standard normals √(-2 ln u01(x0)) · cos(2π u01(x1)), one per Philox block (the sine is discarded)."""
    shape, (a, b) = broadcast_flat([as_u64("box_muller: x0", x0), as_u64("box_muller: x1", x1)])
    out = np.empty(a.size, dtype=np.float64)
    normal_kernels.box_muller_array(a, b, out)
    return out.reshape(shape)


def exp(x: object) -> np.ndarray:
    """e**x elementwise by the C library's exp, as `box_muller` takes its log and cos: NumPy's np.exp takes an
    AVX-512 loop where the CPU has one, which differs from the C library's exp in the last bit for a few percent
    of arguments, so world files and S2 factors would depend on the CPU."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(arr.size, dtype=np.float64)
    normal_kernels.exp_array(arr.reshape(-1), out)
    return out.reshape(arr.shape)


def sin(x: object) -> np.ndarray:
    """sin(x) elementwise by the C library's sin, for the same reason as `exp` (the quasi-periodic kernel)."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(arr.size, dtype=np.float64)
    normal_kernels.sin_array(arr.reshape(-1), out)
    return out.reshape(arr.shape)


def normal_icdf(u: object) -> np.ndarray:
    """Φ⁻¹(u) by Wichura's AS241 (relative error ≤ 1e-15 on (0, 1)); -inf at 0, +inf at 1, NaN outside [0, 1]."""
    arr = np.asarray(u, dtype=np.float64)
    out = np.empty(arr.size, dtype=np.float64)
    normal_kernels.ndtri_array(np.require(arr, requirements=("C", "W")).reshape(-1), out)  # writable: one signature
    return out.reshape(arr.shape)


def poisson_inv(lam: object, u: object) -> np.ndarray:
    """Smallest n ≥ 0 with F(n; λ) ≥ u, for λ ∈ [0, 1e7] and u ∈ (0, 1): exact up to float rounding of F.

    Small λ sum the pmf from 0; larger λ take a uniform asymptotic (Temme-type) continuous quantile and return
    its floor when it is certifiably far from an integer, else evaluate the CDF on the small tail and step.
    """
    lam_a, u_a = _float_pair("poisson_inv", "lam", lam, u)
    bad = ~((lam_a >= 0.0) & (lam_a <= POISSON_LAMBDA_MAX))
    if bad.any():
        _raise_invalid("poisson_inv", "lam", f"in [0, {POISSON_LAMBDA_MAX:g}]", lam_a, bad)
    out = np.empty(lam_a.size, dtype=np.int64)
    poisson_kernels.poisson_inv_array(lam_a.reshape(-1), u_a.reshape(-1), True, out)
    return out.reshape(lam_a.shape)


def gamma_inv(shape: object, u: object) -> np.ndarray:
    """The gamma(shape, 1) quantile at u ∈ (0, 1), relative error ≤ 1e-10 (shape ∈ [0.5, 200] is tested).

    Per distinct shape a table of ln x against Φ⁻¹(u) is built once (and cached), each piece certified against
    the direct Halley solve on P(a, x); uncertified pieces and u beyond the table use the direct solve.
    """
    a, u_a = _float_pair("gamma_inv", "shape", shape, u)
    bad = ~(np.isfinite(a) & (a > 0.0))
    if bad.any():
        _raise_invalid("gamma_inv", "shape", "finite and > 0", a, bad)
    flat_a = a.reshape(-1)
    ids, distinct = _factorize(flat_a)
    coefs = np.empty((len(distinct), gamma_kernels.TABLE_PIECES, gamma_kernels.TABLE_NODES))
    oks = np.empty((len(distinct), gamma_kernels.TABLE_PIECES), dtype=np.bool_)
    for i, value in enumerate(distinct.tolist()):  # one table per distinct shape (few: band × demand class)
        coefs[i], oks[i] = _shape_table(value)
    out = np.empty(flat_a.size, dtype=np.float64)
    gamma_kernels.gamma_inv_table_array(ids, u_a.reshape(-1), distinct, coefs, oks, out)
    return out.reshape(a.shape)


@lru_cache(maxsize=256)
def _shape_table(shape: float) -> tuple[np.ndarray, np.ndarray]:
    """The certified quantile table of one shape (a pure function of the shape, so caching keeps determinism)."""
    coef, ok = gamma_kernels.gamma_table(shape)
    coef.setflags(write=False)
    ok.setflags(write=False)
    return coef, ok


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distinct values): a linear pass for the usual few shapes, a sort only when there are many."""
    ids, distinct, count = _factorize_small(values, _SHAPE_LIMIT)
    if count >= 0:
        return ids, distinct
    distinct, ids = np.unique(values, return_inverse=True)
    return ids.astype(np.int64).reshape(-1), distinct


@numba.njit(**JIT)
def _factorize_small(values, limit):  # pragma: no cover - compiled
    ids = np.empty(values.shape[0], dtype=np.int64)
    seen = np.empty(limit, dtype=np.float64)
    count = 0
    last = np.nan
    last_id = -1
    for i in range(values.shape[0]):
        x = values[i]
        if x != last:
            last_id = -1
            for j in range(count):
                if seen[j] == x:
                    last_id = j
                    break
            if last_id < 0:
                if count == limit:
                    return ids, seen[:0].copy(), -1
                seen[count] = x
                last_id = count
                count += 1
            last = x
        ids[i] = last_id
    return ids, seen[:count].copy(), count


def _float_pair(func: str, name: str, values: object, u: object) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast (values, u) to contiguous float64 arrays and require every u strictly inside (0, 1)."""
    shape, (v, uu) = broadcast_flat([np.asarray(values, dtype=np.float64), np.asarray(u, dtype=np.float64)])
    v, uu = v.reshape(shape), uu.reshape(shape)
    bad = ~((uu > 0.0) & (uu < 1.0))
    if bad.any():
        _raise_invalid(func, "u", "strictly inside (0, 1)", uu, bad)
    return v, uu


def _raise_invalid(func: str, name: str, rule: str, values: np.ndarray, bad: np.ndarray) -> None:
    """Raise RngArgumentError naming the function, the argument, the first offending position and value."""
    first = int(np.flatnonzero(bad.reshape(-1))[0])
    raise RngArgumentError(func, name, rule, first, float(values.reshape(-1)[first]), int(bad.sum()), bad.size)

"""Compiled normal kernels behind `variates`: Φ⁻¹ by Wichura's AS241 and the Box–Muller cosine normal.

Every kernel is elementwise, so results do not depend on chunking or on the number of threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import INLINE, JIT
from .threads import run_sliced

# ---- Φ⁻¹: Wichura (1988), Algorithm AS 241, PPND16 --------------------------------------------------------
_A = np.array([3.3871328727963666080e0, 1.3314166789178437745e+2, 1.9715909503065514427e+3,
               1.3731693765509461125e+4, 4.5921953931549871457e+4, 6.7265770927008700853e+4,
               3.3430575583588128105e+4, 2.5090809287301226727e+3])
_B = np.array([1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2, 5.3941960214247511077e+3,
               2.1213794301586595867e+4, 3.9307895800092710610e+4, 2.8729085735721942674e+4,
               5.2264952788528545610e+3])
_C = np.array([1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0,
               3.64784832476320460504e0, 1.27045825245236838258e0, 2.41780725177450611770e-1,
               2.27238449892691845833e-2, 7.74545014278341407640e-4])
_D = np.array([1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
               1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4,
               1.05075007164441684324e-9])
_E = np.array([6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0,
               2.96560571828504891230e-1, 2.65321895265761230930e-2, 1.24266094738807843860e-3,
               2.71155556874348757815e-5, 2.01033439929228813265e-7])
_F = np.array([1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
               7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7,
               2.04426310338993978564e-15])


@numba.njit(**INLINE)
def horner(c, x):
    """Σ c[k] x^k by Horner's rule (c[0] is the constant term)."""
    v = c[c.shape[0] - 1]
    for k in range(c.shape[0] - 2, -1, -1):
        v = v * x + c[k]
    return v


@numba.njit(**JIT)
def ndtri(p):
    """Φ⁻¹(p) by AS241 (relative error ~1e-16); ±inf at 0 and 1, NaN outside [0, 1]."""
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * horner(_A, r) / horner(_B, r)
    r = p if q < 0.0 else 1.0 - p  # 1 - p is exact for p >= 0.5
    if r == 0.0:
        return -math.inf if q < 0.0 else math.inf
    if not r > 0.0:
        return math.nan
    r = math.sqrt(-math.log(r))
    if r <= 5.0:
        r -= 1.6
        val = horner(_C, r) / horner(_D, r)
    else:
        r -= 5.0
        val = horner(_E, r) / horner(_F, r)
    return -val if q < 0.0 else val


@numba.njit(**JIT)
def _ndtri_slice(u, out):  # pragma: no cover - compiled
    for i in range(u.shape[0]):
        out[i] = ndtri(u[i])


@numba.njit(**JIT)
def _box_muller_slice(x0, x1, out):  # pragma: no cover - compiled
    scale = 2.0 ** -53
    for i in range(x0.shape[0]):
        u0 = float((x0[i] >> np.uint64(11)) | np.uint64(1)) * scale
        u1 = float((x1[i] >> np.uint64(11)) | np.uint64(1)) * scale
        out[i] = math.sqrt(-2.0 * math.log(u0)) * math.cos(2.0 * math.pi * u1)


@numba.njit(**JIT)
def _exp_slice(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])


@numba.njit(**JIT)
def _sin_slice(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = math.sin(x[i])


def sin_array(x: np.ndarray, out: np.ndarray) -> None:
    """out = sin(x) elementwise by the C library's sin (contiguous 1-D float64), never NumPy's SIMD loops."""
    run_sliced(x.shape[0], lambda a, b: _sin_slice(x[a:b], out[a:b]))


def exp_array(x: np.ndarray, out: np.ndarray) -> None:
    """out = exp(x) elementwise by the C library's exp (contiguous 1-D float64), never NumPy's SIMD loops."""
    run_sliced(x.shape[0], lambda a, b: _exp_slice(x[a:b], out[a:b]))


def ndtri_array(u: np.ndarray, out: np.ndarray) -> None:
    """out = Φ⁻¹(u) elementwise (contiguous 1-D float64)."""
    run_sliced(u.shape[0], lambda a, b: _ndtri_slice(u[a:b], out[a:b]))


def box_muller_array(x0: np.ndarray, x1: np.ndarray, out: np.ndarray) -> None:
    """out = √(-2 ln u(x0)) · cos(2π u(x1)) with u(x) = ((x >> 11) | 1) · 2^-53 (contiguous 1-D uint64 in)."""
    run_sliced(x0.shape[0], lambda a, b: _box_muller_slice(x0[a:b], x1[a:b], out[a:b]))

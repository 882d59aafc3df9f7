"""Compiled gamma kernels behind `variates`: the regularised incomplete gamma, its inverse in x, and
per-shape Chebyshev tables of the quantile.

Every kernel is elementwise, so results do not depend on chunking or on the number of threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import INLINE, JIT
from .normal_kernels import ndtri
from .poisson_kernels import EPS, TINY_REL, dpois
from .threads import run_sliced

# ---- gamma: regularised incomplete gamma and its inverse in x ---------------------------------------------
HALLEY_DONE = 1e-6   # a Halley step this small (relative) leaves an error ~1e-18: stop without another P(a,x)
NEWTON_DONE = 1e-9
_FPMIN = 1e-300


@numba.njit(**JIT)
def gamma_pq(a, x):
    """(P(a,x), Q(a,x)); the smaller one is accurate to a few ulps (series below a+1, Legendre CF above)."""
    if x <= 0.0:
        return 0.0, 1.0
    pre = dpois(a, x)  # x^a e^-x / Γ(a+1)
    if x < a + 1.0:
        t = 1.0
        s = 1.0
        k = a
        while True:
            k += 1.0
            t *= x / k
            s += t
            if t <= s * TINY_REL:
                break
        p = pre * s
        return p, 1.0 - p
    # modified Lentz on the continued fraction of Γ(a,x) e^x x^-a
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    i = 1.0
    while i < 100000.0:
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = b + an / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) <= EPS:
            break
        i += 1.0
    q = a * pre * h
    return 1.0 - q, q


@numba.njit(**JIT)
def gamma_inv_tail(a, p, lower):
    """x with P(a, x) = p (lower) or Q(a, x) = p (upper), p ≤ ½: Wilson–Hilferty or power-law start, then
    safeguarded Halley on the small tail, which is the accurately computed side."""
    w = ndtri(p) if lower else -ndtri(p)
    t = 1.0 - 1.0 / (9.0 * a) + w / (3.0 * math.sqrt(a))
    x = a * t * t * t
    if lower:
        xs = math.exp((math.log(p) + math.lgamma(a + 1.0)) / a)  # P ≈ x^a / Γ(a+1) for small x
        if x <= 0.0 or xs < 0.2 * (a + 1.0) and xs < x:
            x = xs
    if not x > 0.0:
        x = a
    lo = 0.0
    hi = math.inf
    for _ in range(200):
        pp, qq = gamma_pq(a, x)
        f = pp - p if lower else p - qq  # increasing in x
        if f == 0.0:
            return x
        if f < 0.0:
            lo = x
        else:
            hi = x
        dens = dpois(a, x) * a / x  # x^(a-1) e^-x / Γ(a)
        if dens > 0.0:
            step = f / dens
            denom = 1.0 - 0.5 * step * ((a - 1.0) / x - 1.0)  # Halley: f''/f' = (a-1)/x - 1
            if denom > 0.5:
                step = step / denom
                done = abs(step) <= HALLEY_DONE * x  # cubic: the error after this step is ~ (step/x)^3
            else:
                done = abs(step) <= NEWTON_DONE * x  # quadratic
            xn = x - step
            if done:
                return xn
        else:
            xn = math.nan
        if not (lo < xn < hi):
            xn = 0.5 * (lo + hi) if hi < math.inf else 2.0 * x + 1.0
        x = xn
    return x


@numba.njit(**JIT)
def gamma_inv_one(a, u):
    """The gamma(a, 1) quantile at u ∈ (0, 1), solved on the smaller tail (1 - u is exact for u ≥ ½)."""
    if u <= 0.5:
        return gamma_inv_tail(a, u, True)
    return gamma_inv_tail(a, 1.0 - u, False)


@numba.njit(**JIT)
def _gamma_inv_slice(a, u, out):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        out[i] = gamma_inv_one(a[i], u[i])


def gamma_inv_array(a: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """out = gamma_inv_one(a, u) elementwise by the direct solve (contiguous 1-D float64)."""
    run_sliced(a.shape[0], lambda i, j: _gamma_inv_slice(a[i:j], u[i:j], out[i:j]))


# ---- per-shape quantile tables: ln x as a piecewise Chebyshev series in w = Φ⁻¹(u) --------------------------
TABLE_W = 8.25     # covers every u01 value (|Φ⁻¹(u)| ≤ 8.21 for u ∈ [2^-53, 1 - 2^-53]); beyond: direct solve
TABLE_PIECES = 33  # pieces of width 0.5 in w
TABLE_NODES = 14   # Chebyshev nodes (degree 13) per piece
TABLE_TOL = 1e-12  # a piece is used only if it matches the direct solve to this (absolute, in ln x) at checks


@numba.njit(**JIT)
def _ln_quantile_at_w(a, w):
    """ln of the direct quantile at Φ(w), the tail probability taken from erfc so both tails stay exact."""
    if w <= 0.0:
        return math.log(gamma_inv_tail(a, 0.5 * math.erfc(-w / math.sqrt(2.0)), True))
    return math.log(gamma_inv_tail(a, 0.5 * math.erfc(w / math.sqrt(2.0)), False))


@numba.njit(**INLINE)
def _clenshaw(c, t):
    b1 = 0.0
    b2 = 0.0
    for k in range(c.shape[0] - 1, 0, -1):
        b0 = 2.0 * t * b1 - b2 + c[k]
        b2 = b1
        b1 = b0
    return t * b1 - b2 + c[0]


@numba.njit(**JIT)
def gamma_table(a):
    """Chebyshev coefficients (pieces × nodes) of ln x(w) for shape a, and which pieces passed their check."""
    n = TABLE_NODES
    h = 2.0 * TABLE_W / TABLE_PIECES
    coef = np.zeros((TABLE_PIECES, n))
    ok = np.zeros(TABLE_PIECES, dtype=np.bool_)
    f = np.empty(n)
    for piece in range(TABLE_PIECES):
        w_lo = -TABLE_W + piece * h
        for j in range(n):
            t = math.cos(math.pi * (j + 0.5) / n)
            f[j] = _ln_quantile_at_w(a, w_lo + 0.5 * (t + 1.0) * h)
        for k in range(n):
            acc = 0.0
            for j in range(n):
                acc += f[j] * math.cos(math.pi * k * (j + 0.5) / n)
            coef[piece, k] = acc * (2.0 / n) * (0.5 if k == 0 else 1.0)
        worst = 0.0
        for m in range(n + 1):  # the extrema of T_n, interleaved with the nodes (both ends included)
            t = math.cos(math.pi * m / n)
            err = abs(_clenshaw(coef[piece], t) - _ln_quantile_at_w(a, w_lo + 0.5 * (t + 1.0) * h))
            if not err <= worst:
                worst = math.inf if math.isnan(err) else err
        ok[piece] = worst <= TABLE_TOL
    return coef, ok


@numba.njit(**JIT)
def _gamma_inv_table_slice(ids, u, shapes, coefs, oks, out):  # pragma: no cover - compiled
    h = 2.0 * TABLE_W / TABLE_PIECES
    for i in range(u.shape[0]):
        s = ids[i]
        w = ndtri(u[i])
        piece = math.floor((w + TABLE_W) / h) if abs(w) < TABLE_W else -1
        if piece >= 0 and piece < TABLE_PIECES and oks[s, piece]:
            t = 2.0 * (w + TABLE_W - piece * h) / h - 1.0
            out[i] = math.exp(_clenshaw(coefs[s, piece], t))
        else:
            out[i] = gamma_inv_one(shapes[s], u[i])


def gamma_inv_table_array(ids: np.ndarray, u: np.ndarray, shapes: np.ndarray, coefs: np.ndarray, oks: np.ndarray,
                          out: np.ndarray) -> None:
    """Quantiles by table where the piece is certified, by the direct solve elsewhere (depends on (a, u) only)."""
    run_sliced(u.shape[0], lambda i, j: _gamma_inv_table_slice(ids[i:j], u[i:j], shapes, coefs, oks, out[i:j]))

"""Compiled sums behind the count corridor: one pass over the drawing rows, no per-row temporaries.

The corridor's statistics are sums over rows of functions of (μ, N, κ); NumPy needs a dozen full-length
temporaries for them, this kernel none. One thread, rows in order, so the sums do not depend on the thread count.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import JIT
from .compiled import frozen, ready

SUMS = ("mu", "n", "sq", "var", "mu2_kappa", "ratio_max", "pgf", "pgf_var")  # the order `moment_sums` returns
PGF_TARGET = 2.0  # s = max(0, 1 − 2/μ): μ(1 − s) = min(μ, 2), where E[s^N] is most sensitive to dispersion


@numba.njit(**JIT)
def _moment_sums(mu: np.ndarray, n: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """Σ μ, Σ N, Σ (N − μ)², Σ Var N, Σ μ²/κ, max μ/κ, Σ (s^N − E s^N), Σ Var s^N over rows (in `SUMS` order);
    `kappa` empty means Poisson (Var N = μ, E s^N = exp(−μ(1 − s))), else NB2 (E s^N = (1 + μ(1 − s)/κ)^−κ)."""
    out = np.zeros(len(SUMS))
    poisson = kappa.size == 0
    for i in range(mu.size):
        m, k = mu[i], n[i]
        r = k - m
        one_minus_s = min(1.0, PGF_TARGET / m)  # 1 − s without cancellation
        s = 1.0 - one_minus_s
        one_minus_s2 = one_minus_s * (1.0 + s)
        if poisson:
            var = m
            m1 = math.exp(-m * one_minus_s)
            m2 = m1 if s == 0.0 else math.exp(-m * one_minus_s2)
        else:
            q = m / kappa[i]
            var = m + m * q
            out[4] += m * q
            out[5] = max(out[5], q)
            m1 = math.exp(-kappa[i] * math.log1p(q * one_minus_s))
            m2 = math.exp(-kappa[i] * math.log1p(q * one_minus_s2))
        power = (1.0 if k == 0.0 else 0.0) if s == 0.0 else s ** np.int64(k)  # s^N, 0^0 = 1; N is whole
        out[0] += m
        out[1] += k
        out[2] += r * r
        out[3] += var
        out[6] += power - m1
        out[7] += max(m2 - m1 * m1, 0.0)
    return out


def moment_sums(mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None) -> np.ndarray:
    """`_moment_sums` of float64 read-only views (κ None under Poisson): one compiled signature."""
    if len(mu) != len(n) or (kappa is not None and len(kappa) != len(mu)):
        raise ValueError("moment_sums needs μ, N (and κ) of equal length")
    floats = [frozen(np.ascontiguousarray(a, dtype=np.float64)) for a in (mu, n, np.empty(0) if kappa is None else kappa)]
    ready()
    return _moment_sums(*floats)

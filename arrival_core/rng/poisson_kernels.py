"""Compiled Poisson kernels behind `variates`: Loader's saddle-point pmf and the exact inverse CDF.

Every kernel is elementwise, so results do not depend on chunking or on the number of threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import JIT
from .normal_kernels import horner, ndtri
from .threads import run_sliced

LN_SQRT_2PI = 0.9189385332046728  # ln √(2π)
EPS = 2.220446049250313e-16

# ---- Loader (2000) saddle-point pmf: p = exp(-stirlerr(n) - bd0(n, λ)) / √(2πn) --------------------------
# stirlerr(n) = ln n! - (n + ½) ln n + n - ln √(2π) for n = 0..15, computed with mpmath at 40 digits.
STIRLERR = np.array([
    0.0,  # n = 0 is never looked up (p_0 = e^-λ directly)
    0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475, 0.005554733551962801,
])


@numba.njit(**JIT)
def stirlerr(x):
    """ln Γ(x+1) - (x+½) ln x + x - ln √(2π) for x > 0: exact table for integers ≤ 15, Stirling series above."""
    if x <= 15.0:
        n = int(x)
        if n == x:
            return STIRLERR[n]
        return math.lgamma(x + 1.0) - (x + 0.5) * math.log(x) + x - LN_SQRT_2PI
    x2 = 1.0 / (x * x)
    return (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - x2 / 1188) * x2) * x2) * x2) / x


@numba.njit(**JIT)
def bd0(x, m):
    """x ln(x/m) + m - x without cancellation: a series in v = (x-m)/(x+m) when |v| < ¼."""
    if x == 0.0:
        return m
    d = x - m
    if abs(d) < 0.25 * (x + m):
        v = d / (x + m)
        s = d * v
        ej = 2.0 * x * v
        v2 = v * v
        j = 1
        while True:
            ej *= v2
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
            j += 1
    return x * math.log(x / m) + m - x


@numba.njit(**JIT)
def dpois(x, lam):
    """e^-λ λ^x / Γ(x+1) for x ≥ 0, λ > 0 (x real: also the gamma prefactor x'^a e^-x' / Γ(a+1))."""
    if x == 0.0:
        return math.exp(-lam)
    return math.exp(-stirlerr(x) - bd0(x, lam)) / math.sqrt(2.0 * math.pi * x)


# ---- Poisson inverse CDF ---------------------------------------------------------------------------------
LAM_SMALL = 10.0   # λ at or below: search from 0 (bottom-up summation)
S_MIN = -0.978     # s = w/√λ below F(0.2): continuous-quantile guess not trusted; exact search from n = 0
S_SERIES = 1.0     # |s| up to here: r(s) and Δ(s) by their Taylor series; above: Newton on r
CORR_A = 0.0223    # the O(1/λ) term is -c(r)/λ with c(r) ≈ CORR_A / (r + CORR_B) (c(1) ≈ 8/405, the median's),
CORR_B = 0.129     # fitted to continuous quantiles a* (Q(a*, λ) = u) computed with mpmath for λ ≥ 300
DELTA_K = 0.1      # fast path when the guess is farther than DELTA_K/λ (+ rounding) from an integer: on ~4,000
#                    mpmath points with λ in [6, 1e4] and r ≥ 0.2 the residual |x - a*| is ≤ 0.009/λ (11× margin)
TINY_REL = 1e-17
# Taylor coefficients in s of r(s) - 1, where F(r) = sign(r-1) √(2(1 - r + r ln r)) = s, and of
# Δ(s) = ln(√r F(r)/(r-1)) / ln r: exact rationals from series reversion (tests/core/test_rng_variates.py
# recomputes them with fractions.Fraction), rounded to float64. Radius of convergence √2 (r = 0).
EC = np.array([
    0.0, 1.0, 0.16666666666666666, -0.013888888888888888, 0.003703703703703704, -0.0013310185185185185,
    0.0005584950029394474, -0.0002580513300999412, 0.00012737605330197924, -6.598050961818484e-05,
    3.545877482777345e-05, -1.9616975974429186e-05, 1.1110503184882091e-05, -6.415829591770127e-06,
    3.7656594239141905e-06, -2.2410437386755235e-06, 1.3497389011821444e-06, -8.214276872052013e-07,
    5.044996937522677e-07, -3.123707091600021e-07, 1.9481257932315172e-07,
])
DC = np.array([
    0.3333333333333333, -0.027777777777777776, 0.008641975308641974, -0.003523662551440329,
    0.0016534391534391533, -0.0008460045969691032, 0.00045877152873037645, -0.0002592788640804973,
    0.0001510991101087885, -9.015553057123253e-05, 5.480333590250778e-05, -3.3818493936387214e-05,
    2.112916579426536e-05, -1.333873758469563e-05, 8.49513014685047e-06, -5.451409368461929e-06,
    3.5212508120030857e-06, -2.287601426809132e-06, 1.4937103290302523e-06, -9.79739468659109e-07,
    6.452184876615878e-07,
])


@numba.njit(**JIT)
def poisson_lower(g, lam):
    """(F(g), p_g): P(N ≤ g) = p_g (1 + g/λ + g(g-1)/λ² + …), accurate when it is the small side."""
    p = dpois(g, lam)
    s = p
    t = p
    k = g
    while k > 0.0:
        t *= k / lam
        s += t
        k -= 1.0
        if t <= s * TINY_REL and k < lam:
            break
    return s, p


@numba.njit(**JIT)
def poisson_upper(g, lam):
    """(T(g), p_g): P(N > g) = p_{g+1} (1 + λ/(g+2) + λ²/((g+2)(g+3)) + …), accurate when it is the small side."""
    q = dpois(g + 1.0, lam)
    s = q
    t = q
    k = g + 2.0
    while q > 0.0:
        t *= lam / k
        s += t
        if t <= s * TINY_REL and k > lam:
            break
        k += 1.0
    return s, q * (g + 1.0) / lam


@numba.njit(**JIT)
def search_lower(g, lam, u):
    """Smallest n with F(n) ≥ u, from a guess g; F is re-evaluated by series on downward steps, summed upward."""
    f, p = poisson_lower(g, lam)
    if f >= u:
        while g > 0.0:
            f2, _ = poisson_lower(g - 1.0, lam)
            if f2 < u:
                return g
            g -= 1.0
        return 0.0
    while f < u:
        g += 1.0
        p = p * lam / g
        if p == 0.0:
            p = dpois(g, lam)
        f += p
    return g


@numba.njit(**JIT)
def search_upper(g, lam, v):
    """Smallest n with T(n) = P(N > n) ≤ v, from a guess g; T is re-evaluated on upward steps, summed downward."""
    t, p = poisson_upper(g, lam)
    while t > v:
        g += 1.0
        t, p = poisson_upper(g, lam)
        if t <= v:
            return g
    while g > 0.0:
        if p == 0.0:
            p = dpois(g, lam)
        t1 = t + p
        if t1 > v:
            return g
        t = t1
        p = p * g / lam
        g -= 1.0
    return 0.0


@numba.njit(**JIT)
def _r_of_s(s):
    """Root r > 1 of 1 - r + r ln r = s²/2 (the signed F(r) = s for s > 1), by Newton from the right."""
    r = 1.0 + s + s * s / 6.0
    target = 0.5 * s * s
    for _ in range(60):
        lr = math.log(r)
        dr = (1.0 - r + r * lr - target) / lr
        r -= dr
        if abs(dr) <= 4e-16 * r:
            break
    return r


@numba.njit(**JIT)
def continuous_quantile(lam, w):
    """(x, r): a* with Q(a*, λ) = Φ(w) to O(1/λ²): λr + ln(√r s/(r-1))/ln r - c(r)/λ, F(r) = s = w/√λ."""
    s = w / math.sqrt(lam)
    if s <= S_SERIES:
        e = horner(EC, s)
        r = 1.0 + e
        x = lam + lam * e + horner(DC, s)
    else:
        r = _r_of_s(s)
        x = lam * r + math.log(math.sqrt(r) * s / (r - 1.0)) / math.log(r)
    return x - CORR_A / (lam * (r + CORR_B)), r


@numba.njit(**JIT)
def poisson_inv_one(lam, u, fast):
    """Smallest n ≥ 0 with F(n; λ) ≥ u (λ ≥ 0, 0 < u < 1); `fast` allows the certified shortcuts (tests
    compare it with `fast=False`, which evaluates the CDF on the small tail for every upper-side draw)."""
    if lam == 0.0:
        return 0.0
    lower = u <= 0.5
    v = 1.0 - u
    if lam <= LAM_SMALL:
        p = math.exp(-lam)
        f = p
        f_prev = 0.0
        n = 0.0
        while f < u and (lower or p >= 1e-18):
            n += 1.0
            p *= lam / n
            f_prev = f
            f += p
        if lower:
            return n
        # near 1 the summed F carries an absolute error below 4(n+2)ε; decide only with twice that margin,
        # and otherwise (deep upper tail, or u at a CDF step) search on the accurately computed upper tail
        margin = 8.0 * (n + 2.0) * EPS
        if fast and f - u > margin and u - f_prev > margin:
            return n
        return search_upper(n, lam, v)
    w = ndtri(u)
    if w / math.sqrt(lam) < S_MIN:
        return search_lower(0.0, lam, u)
    x, _ = continuous_quantile(lam, w)
    m = math.floor(x)
    if fast:
        frac = x - m
        delta = DELTA_K / lam + 1e-14 * x
        if delta < frac < 1.0 - delta:
            return m
    c = math.floor(x + 0.5)  # the answer is c - 1 or c when the guess is within DELTA_K/λ
    if lower:
        return search_lower(max(c - 2.0, 0.0), lam, u)
    return search_upper(max(c, 0.0), lam, v)


@numba.njit(**JIT)
def _poisson_inv_slice(lam, u, fast, out):  # pragma: no cover - compiled
    for i in range(lam.shape[0]):
        out[i] = np.int64(poisson_inv_one(lam[i], u[i], fast))


def poisson_inv_array(lam: np.ndarray, u: np.ndarray, fast: bool, out: np.ndarray) -> None:
    """out = poisson_inv_one(lam, u, fast) elementwise (contiguous 1-D float64 in, int64 out)."""
    run_sliced(lam.shape[0], lambda a, b: _poisson_inv_slice(lam[a:b], u[a:b], fast, out[a:b]))

"""Compiled kernels behind `variates`: Φ⁻¹ (AS241), Loader's Poisson pmf, Poisson and gamma inverse CDFs.

Every kernel is elementwise, so results do not depend on chunking or on the number of threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}
_LN_SQRT_2PI = 0.9189385332046728  # ln √(2π)
_EPS = 2.220446049250313e-16

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


@numba.njit(**_JIT, inline="always")
def horner(c, x):
    """Σ c[k] x^k by Horner's rule (c[0] is the constant term)."""
    v = c[c.shape[0] - 1]
    for k in range(c.shape[0] - 2, -1, -1):
        v = v * x + c[k]
    return v


@numba.njit(**_JIT)
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


@numba.njit(**_JIT, parallel=True)
def ndtri_array(u, out):  # pragma: no cover - compiled
    for i in numba.prange(u.shape[0]):
        out[i] = ndtri(u[i])


@numba.njit(**_JIT, parallel=True)
def box_muller_array(x0, x1, out):  # pragma: no cover - compiled
    """z = √(-2 ln u(x0)) · cos(2π u(x1)) with u(x) = ((x >> 11) | 1) · 2^-53."""
    scale = 2.0 ** -53
    for i in numba.prange(x0.shape[0]):
        u0 = float((x0[i] >> np.uint64(11)) | np.uint64(1)) * scale
        u1 = float((x1[i] >> np.uint64(11)) | np.uint64(1)) * scale
        out[i] = math.sqrt(-2.0 * math.log(u0)) * math.cos(2.0 * math.pi * u1)


# ---- Loader (2000) saddle-point pmf: p = exp(-stirlerr(n) - bd0(n, λ)) / √(2πn) --------------------------
# stirlerr(n) = ln n! - (n + ½) ln n + n - ln √(2π) for n = 0..15, computed with mpmath at 40 digits.
_STIRLERR = np.array([
    0.0,  # n = 0 is never looked up (p_0 = e^-λ directly)
    0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475, 0.005554733551962801,
])


@numba.njit(**_JIT)
def stirlerr(x):
    """ln Γ(x+1) - (x+½) ln x + x - ln √(2π) for x > 0: exact table for integers ≤ 15, Stirling series above."""
    if x <= 15.0:
        n = int(x)
        if n == x:
            return _STIRLERR[n]
        return math.lgamma(x + 1.0) - (x + 0.5) * math.log(x) + x - _LN_SQRT_2PI
    x2 = 1.0 / (x * x)
    return (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - x2 / 1188) * x2) * x2) * x2) / x


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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
_TINY_REL = 1e-17
# Taylor coefficients in s of r(s) - 1, where F(r) = sign(r-1) √(2(1 - r + r ln r)) = s, and of
# Δ(s) = ln(√r F(r)/(r-1)) / ln r: exact rationals from series reversion (tests/core/test_rng_variates.py
# recomputes them with fractions.Fraction), rounded to float64. Radius of convergence √2 (r = 0).
_EC = np.array([
    0.0, 1.0, 0.16666666666666666, -0.013888888888888888, 0.003703703703703704, -0.0013310185185185185,
    0.0005584950029394474, -0.0002580513300999412, 0.00012737605330197924, -6.598050961818484e-05,
    3.545877482777345e-05, -1.9616975974429186e-05, 1.1110503184882091e-05, -6.415829591770127e-06,
    3.7656594239141905e-06, -2.2410437386755235e-06, 1.3497389011821444e-06, -8.214276872052013e-07,
    5.044996937522677e-07, -3.123707091600021e-07, 1.9481257932315172e-07,
])
_DC = np.array([
    0.3333333333333333, -0.027777777777777776, 0.008641975308641974, -0.003523662551440329,
    0.0016534391534391533, -0.0008460045969691032, 0.00045877152873037645, -0.0002592788640804973,
    0.0001510991101087885, -9.015553057123253e-05, 5.480333590250778e-05, -3.3818493936387214e-05,
    2.112916579426536e-05, -1.333873758469563e-05, 8.49513014685047e-06, -5.451409368461929e-06,
    3.5212508120030857e-06, -2.287601426809132e-06, 1.4937103290302523e-06, -9.79739468659109e-07,
    6.452184876615878e-07,
])


@numba.njit(**_JIT)
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
        if t <= s * _TINY_REL and k < lam:
            break
    return s, p


@numba.njit(**_JIT)
def poisson_upper(g, lam):
    """(T(g), p_g): P(N > g) = p_{g+1} (1 + λ/(g+2) + λ²/((g+2)(g+3)) + …), accurate when it is the small side."""
    q = dpois(g + 1.0, lam)
    s = q
    t = q
    k = g + 2.0
    while q > 0.0:
        t *= lam / k
        s += t
        if t <= s * _TINY_REL and k > lam:
            break
        k += 1.0
    return s, q * (g + 1.0) / lam


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
def continuous_quantile(lam, w):
    """(x, r): a* with Q(a*, λ) = Φ(w) to O(1/λ²): λr + ln(√r s/(r-1))/ln r - c(r)/λ, F(r) = s = w/√λ."""
    s = w / math.sqrt(lam)
    if s <= S_SERIES:
        e = horner(_EC, s)
        r = 1.0 + e
        x = lam + lam * e + horner(_DC, s)
    else:
        r = _r_of_s(s)
        x = lam * r + math.log(math.sqrt(r) * s / (r - 1.0)) / math.log(r)
    return x - CORR_A / (lam * (r + CORR_B)), r


@numba.njit(**_JIT)
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
        margin = 8.0 * (n + 2.0) * _EPS
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


@numba.njit(**_JIT, parallel=True)
def poisson_inv_array(lam, u, fast, out):  # pragma: no cover - compiled
    for i in numba.prange(lam.shape[0]):
        out[i] = np.int64(poisson_inv_one(lam[i], u[i], fast))


# ---- gamma: regularised incomplete gamma and its inverse in x ---------------------------------------------
HALLEY_DONE = 1e-6   # a Halley step this small (relative) leaves an error ~1e-18: stop without another P(a,x)
NEWTON_DONE = 1e-9
_FPMIN = 1e-300


@numba.njit(**_JIT)
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
            if t <= s * _TINY_REL:
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
        if abs(delta - 1.0) <= _EPS:
            break
        i += 1.0
    q = a * pre * h
    return 1.0 - q, q


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
def gamma_inv_one(a, u):
    """The gamma(a, 1) quantile at u ∈ (0, 1), solved on the smaller tail (1 - u is exact for u ≥ ½)."""
    if u <= 0.5:
        return gamma_inv_tail(a, u, True)
    return gamma_inv_tail(a, 1.0 - u, False)


@numba.njit(**_JIT, parallel=True)
def gamma_inv_array(a, u, out):  # pragma: no cover - compiled
    for i in numba.prange(a.shape[0]):
        out[i] = gamma_inv_one(a[i], u[i])


# ---- per-shape quantile tables: ln x as a piecewise Chebyshev series in w = Φ⁻¹(u) --------------------------
TABLE_W = 8.25     # covers every u01 value (|Φ⁻¹(u)| ≤ 8.21 for u ∈ [2^-53, 1 - 2^-53]); beyond: direct solve
TABLE_PIECES = 33  # pieces of width 0.5 in w
TABLE_NODES = 14   # Chebyshev nodes (degree 13) per piece
TABLE_TOL = 1e-12  # a piece is used only if it matches the direct solve to this (absolute, in ln x) at checks


@numba.njit(**_JIT)
def _ln_quantile_at_w(a, w):
    """ln of the direct quantile at Φ(w), the tail probability taken from erfc so both tails stay exact."""
    if w <= 0.0:
        return math.log(gamma_inv_tail(a, 0.5 * math.erfc(-w / math.sqrt(2.0)), True))
    return math.log(gamma_inv_tail(a, 0.5 * math.erfc(w / math.sqrt(2.0)), False))


@numba.njit(**_JIT, inline="always")
def _clenshaw(c, t):
    b1 = 0.0
    b2 = 0.0
    for k in range(c.shape[0] - 1, 0, -1):
        b0 = 2.0 * t * b1 - b2 + c[k]
        b2 = b1
        b1 = b0
    return t * b1 - b2 + c[0]


@numba.njit(**_JIT)
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


@numba.njit(**_JIT, parallel=True)
def gamma_inv_table_array(ids, u, shapes, coefs, oks, out):  # pragma: no cover - compiled
    """Quantiles by table where the piece is certified, by the direct solve elsewhere (depends on (a, u) only)."""
    h = 2.0 * TABLE_W / TABLE_PIECES
    for i in numba.prange(u.shape[0]):
        s = ids[i]
        w = ndtri(u[i])
        piece = math.floor((w + TABLE_W) / h) if abs(w) < TABLE_W else -1
        if piece >= 0 and piece < TABLE_PIECES and oks[s, piece]:
            t = 2.0 * (w + TABLE_W - piece * h) / h - 1.0
            out[i] = math.exp(_clenshaw(coefs[s, piece], t))
        else:
            out[i] = gamma_inv_one(shapes[s], u[i])

"""Compiled sums behind the count corridor: one pass over the drawing rows, no per-row temporaries.

The corridor's statistics are sums over rows of functions of (μ, N, κ) and of exact tail probabilities of the count
law; NumPy would need a dozen full-length temporaries for them, this kernel none. One thread, rows in order, so the
sums do not depend on the thread count.

Each row is first classed by μ (and κ) alone: *cappable* when the Chernoff bound on P(N > cap) exceeds 10^-40,
else *free*. Free rows feed the total and the dispersion statistics; cappable rows only the cap statistic, with the
exact P(N > cap). The dispersion statistic counts rows outside the central interval [⌈μ − √V⌉, ⌊μ + √V⌋]
(V = Var N) against that event's exact probability, so each summand is a Bernoulli whatever μ.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..jit import INLINE, JIT
from .compiled import frozen, ready

SUMS = ("mu", "n", "sq", "var", "mu2_kappa", "ratio_max", "outside", "outside_p", "outside_var",
        "cap_rows", "capped", "cap_p", "cap_var", "cap_free_bound")  # the order `moment_sums` returns
CAPPABLE_LOG = math.log(1e-40)  # a row is cappable when its Chernoff bound on ln P(N > cap) exceeds this
NO_TAIL_LOG = -746.0  # e^x is 0.0 in binary64 below about −745.13: a bound under this adds exactly nothing


@numba.njit(**JIT)
def _log_pmf(n, mu, kappa):
    """ln P(N = n): Poisson (κ ≤ 0) or NB2 with mean μ and shape κ."""
    if kappa <= 0.0:
        return n * math.log(mu) - mu - math.lgamma(n + 1.0) if n > 0 else -mu
    return (math.lgamma(n + kappa) - math.lgamma(kappa) - math.lgamma(n + 1.0)
            + kappa * math.log(kappa / (kappa + mu)) + (n * math.log(mu / (kappa + mu)) if n > 0 else 0.0))


@numba.njit(**JIT)
def _mass(lo, hi, mu, kappa):
    """P(lo ≤ N ≤ hi) (0 ≤ lo, hi integers), by the pmf at lo and the ratio p(n+1)/p(n), summed in order."""
    if hi < lo:
        return 0.0
    p = math.exp(_log_pmf(lo, mu, kappa))
    total = 0.0
    n = lo
    while n <= hi:
        total += p
        if p < 1e-300:  # underflowed far in a tail: restart the recurrence from the pmf itself
            p = math.exp(_log_pmf(n + 1.0, mu, kappa))
        elif kappa <= 0.0:
            p *= mu / (n + 1.0)
        else:
            p *= (n + kappa) / (n + 1.0) * (mu / (kappa + mu))
        n += 1.0
    return total


@numba.njit(**JIT)
def _log_cap_bound(k, mu, kappa):
    """Chernoff's bound on ln P(N ≥ k) for k > μ: Poisson k − μ − k ln(k/μ); NB2 at the optimal e^t = z,
    z = k(1 + r)/(r(κ + k)), r = μ/κ: −k ln z − κ ln(1 − r(z − 1)). 0 (no bound) when k ≤ μ."""
    if k <= mu:
        return 0.0
    if kappa <= 0.0:
        return k - mu - k * math.log(k / mu)
    # z = k(1 + r)/(r(κ + k)) = k(κ + μ)/(μ(κ + k)) and 1 − r(z − 1) = (κ + μ)/(κ + k), written without cancellation
    return -k * math.log(k * (kappa + mu) / (mu * (kappa + k))) - kappa * math.log((kappa + mu) / (kappa + k))


@numba.njit(**INLINE)
def _cap_probability(m, var, kap, cap):  # pragma: no cover - compiled into _moment_sums
    """A cappable row's exact P(N > cap), its pmf summed over μ ± 40 sd (+ 800)."""
    sd = math.sqrt(var)
    lo = max(0.0, math.floor(m - 40.0 * sd - 40.0))
    hi = math.ceil(m + 40.0 * sd + 800.0)
    if cap + 1.0 > m:
        return _mass(max(cap + 1.0, lo), hi, m, kap)
    return 1.0 - _mass(lo, cap, m, kap) if cap >= lo else 1.0


@numba.njit(**INLINE)
def _central(m, var, kap, poisson):  # pragma: no cover - compiled into _moment_sums
    """A free row's central interval [a, b] = [⌈μ − √V⌉, ⌊μ + √V⌋] and P(a ≤ N ≤ b)."""
    sd = math.sqrt(var)
    if poisson and m < 1.0:  # most rows: a = 0 and b ≤ 1, `_mass`'s sum e^-μ (+ e^-μ · μ) without its loop
        b = 1.0 if m + sd >= 1.0 else 0.0
        e = math.exp(-m)
        return 0.0, b, e + (e * m if b else 0.0)
    a, b = max(0.0, math.ceil(m - sd)), math.floor(m + sd)
    return a, b, _mass(a, b, m, kap)


@numba.njit(**JIT)
def _moment_sums(mu, n, kappa, capped, cap, eps, first_bucket, buckets):  # pragma: no cover - compiled
    """(the sums of `SUMS`, rows added) over the rows with μ > eps (a NaN μ is not one); `kappa` empty means
    Poisson, else NB2 with one κ per `buckets` consecutive rows, the first row `first_bucket` into its run. The
    sums are kept in locals, not in the output array, so that each stays in a register over the rows."""
    poisson = kappa.size == 0
    s_mu = s_n = s_sq = s_var = s_mu2k = ratio_max = 0.0
    outside = outside_p = outside_var = cap_rows = flagged = cap_p = cap_var = free_bound = 0.0
    added = 0
    e = 0
    bucket = first_bucket
    for i in range(mu.size):
        m = mu[i]
        if m > eps:
            added += 1
            k = float(n[i])
            kap = 0.0 if poisson else kappa[e]
            q = 0.0 if poisson else m / kap
            var = m + m * q
            if poisson and cap + 1.0 >= -NO_TAIL_LOG and 7.5 * m <= cap + 1.0:
                # ln(k/μ) ≥ ln 7.5 > 2, so k − μ − k ln(k/μ) < −k ≤ NO_TAIL_LOG: free, and its bound's exp is 0.0
                bound = NO_TAIL_LOG
            else:
                bound = _log_cap_bound(cap + 1.0, m, kap)
            if bound > CAPPABLE_LOG:  # cappable: only the cap indicator, against its exact probability
                p = _cap_probability(m, var, kap, cap)
                cap_rows += 1.0
                flagged += 1.0 if capped[i] else 0.0
                cap_p += p
                cap_var += p * (1.0 - p)
            else:
                free_bound += math.exp(bound) if bound > NO_TAIL_LOG else 0.0
                r = k - m
                s_mu += m
                s_n += k
                s_sq += r * r
                s_var += var
                if not poisson:
                    s_mu2k += m * q
                    ratio_max = max(ratio_max, q)
                a, b, inside = _central(m, var, kap, poisson)
                p_out = min(max(1.0 - inside, 0.0), 1.0)
                outside += 1.0 if (k < a or k > b) else 0.0
                outside_p += p_out
                outside_var += p_out * (1.0 - p_out)
        bucket += 1
        if bucket == buckets:
            bucket = 0
            e += 1
    out = np.array([s_mu, s_n, s_sq, s_var, s_mu2k, ratio_max, outside, outside_p, outside_var, cap_rows, flagged,
                    cap_p, cap_var, free_bound])
    return out, added


def moment_sums(mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None, capped: np.ndarray | None = None,
                cap: float = 2.0**62, *, eps: float = -math.inf, first_bucket: int = 0, buckets: int = 1
                ) -> tuple[np.ndarray, int]:
    """`_moment_sums` on read-only float64 μ and κ, int64 N and bool flags (one compiled signature): κ None under
    Poisson, else one per `buckets` rows (1: one per row); `capped` None: no row capped; rows with μ ≤ eps left
    out. N must hold whole counts."""
    rows = len(mu)
    runs = -(-(first_bucket + rows) // buckets) if rows else 0
    if len(n) != rows or not 0 <= first_bucket < buckets or (kappa is not None and len(kappa) < runs) or (
            capped is not None and len(capped) != rows):
        raise ValueError("moment_sums needs μ, N (and capped) of equal length and a κ for every row")
    counts = np.asarray(n)
    if counts.dtype != np.int64:
        counts = counts.astype(np.int64)
        if not np.array_equal(counts, n):
            raise ValueError("moment_sums needs whole counts N")
    floats = [frozen(np.ascontiguousarray(a, dtype=np.float64)) for a in (mu, np.empty(0) if kappa is None else kappa)]
    flags = frozen(np.ascontiguousarray(np.zeros(rows, dtype=np.bool_) if capped is None else capped, dtype=np.bool_))
    ready()
    sums, added = _moment_sums(floats[0], frozen(np.ascontiguousarray(counts)), floats[1], flags, float(cap),
                               float(eps), int(first_bucket), int(buckets))
    return sums, int(added)

"""An independent reference of the RNG law for the replay checks, written from docs/laws.md §7–§10 alone.

It shares no code with the engine (`arrival_core.rng`, `latent`, `kernels`, `counts`; an AST test keeps it so):
its own Philox2x64-10 and calls of the C library's ln, cos, sin and exp element by element (compiled, in
`reference_loops`), its own stream derivation, uniforms and Box–Muller normals, the latent laws (OU, iid, the four stationary kernels by circulant embedding, the coupled size M_c), σ, L and κ from the
policy documents, and slow but simple exact inverses: PoissonInv by summing the pmf over the whole ±40 sd range
and searching, GammaInv by bisection on the regularised incomplete gamma. A law bug the engine and this module do
not share shows as a replay mismatch. It is slow: the checks use it on their sample (and `arrival verify` on every
group, and on the same sample of count rows).
"""
from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from . import reference_loops as loops

_ONE = np.uint64(1)
_TOP = 2**64 - 1
_CACHED_WORDS = 1 << 16  # words per batch of the replay: its temporaries stay in cache (the values do not depend on it)


# ---- §7: Philox2x64-10, streams, uniforms, normals --------------------------------------------------------------

def philox(c0: np.ndarray, c1: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Philox2x64-10 output words (x0, x1) of counters (c0, c1) under key (laws §7.1), elementwise."""
    c0, c1, k = (np.array(a, dtype=np.uint64, order="C", copy=True) for a in np.broadcast_arrays(c0, c1, key))
    x0, x1 = np.empty(c0.shape, dtype=np.uint64), np.empty(c0.shape, dtype=np.uint64)
    loops.philox_each(c0.reshape(-1), c1.reshape(-1), k.reshape(-1), x0.reshape(-1), x1.reshape(-1))  # C order: views
    return x0, x1


def uer(text: str) -> bytes:
    """4-byte big-endian length of the UTF-8 bytes, then the bytes."""
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def stream_base(domain_sep: str, family_id: str, manifest_fingerprint: str, parameter_hash: str, seed: int,
                scenario_field: str, domain_key: str) -> tuple[int, int, int]:
    """(key, counter_hi, counter_lo): big-endian words 0:8, 8:16, 16:24 of the derivation's SHA-256 (laws §7.2);
    `scenario_field` is the scenario id, or `*` under coupling common_v1."""
    message = b"".join((uer(domain_sep), uer(family_id), uer(manifest_fingerprint), uer(parameter_hash),
                        struct.pack("<Q", int(seed)), uer(scenario_field), uer(domain_key)))
    d = hashlib.sha256(message).digest()
    return tuple(int.from_bytes(d[i:i + 8], "big") for i in (0, 8, 16))


def blocks_at(key: int, hi: int, lo: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Philox blocks of one stream at base + offset (128-bit counter, carry into hi; Philox takes (lo, hi))."""
    return blocks_of(np.uint64(key), np.uint64(hi), np.uint64(lo), np.asarray(offsets, dtype=np.uint64))


def blocks_of(keys: np.ndarray, his: np.ndarray, los: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Philox blocks at base + offset of streams (key, hi, lo), elementwise and broadcast: the 128-bit sum's
    low word wraps modulo 2^64 and carries one into the high word, which must not wrap itself."""
    keys, his, los, offsets = np.broadcast_arrays(*(np.asarray(a, dtype=np.uint64) for a in (keys, his, los, offsets)))
    with np.errstate(over="ignore"):
        c_lo = los + offsets
    carry = c_lo < los
    if (carry & (his == np.uint64(_TOP))).any():
        raise ValueError("the 128-bit counter wraps")
    return philox(c_lo, his + carry.astype(np.uint64), keys)


def u01(x: np.ndarray) -> np.ndarray:
    """((x >> 11) | 1) · 2^-53 (laws §7.4)."""
    return ((np.asarray(x, dtype=np.uint64) >> np.uint64(11)) | _ONE).astype(np.float64) * 2.0**-53


def normals(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """√(−2 · ln u(x0)) · cos(2π · u(x1)) with the C library's ln and cos (laws §7.5)."""
    return np.sqrt(-2.0 * _libm(loops.LN, u01(x0))) * _libm(loops.COS, (2.0 * math.pi) * u01(x1))


# ---- §8: the latent field ---------------------------------------------------------------------------------------

def _clamp(x: float, bounds: Sequence[float]) -> float:
    return min(max(x, float(bounds[0])), float(bounds[1]))


def group_sigma_length(lgcp: Mapping, strata: Mapping[str, str]) -> tuple[float, float]:
    """(σ, L) of a group from the LGCP policy document and its strata (products left to right, then clamp)."""
    s = lgcp["sigma"]
    sigma = (float(s["base_by_scenario_band"][strata["scenario_band"]])
             * float(s["demand_class_multipliers"][strata["demand_class"]])
             * float(s["channel_group_multipliers"][strata["channel_group"]])
             * float(s["virtual_band_multipliers"][strata["virtual_band"]]))
    return _clamp(sigma, s["bounds"]), group_length(lgcp, strata["scenario_band"], strata["demand_class"])


def group_length(lgcp: Mapping, band: str, demand_class: str) -> float:
    """L (buckets) of a band and demand class: clamp(L_base[band] · mL_demand[class], bounds)."""
    ls = lgcp["length_scale_buckets"]
    return _clamp(float(ls["base_by_scenario_band"][band]) * float(ls["demand_class_multipliers"][demand_class]),
                  ls["bounds"])


def _stationary(lgcp: Mapping) -> dict:
    block = lgcp.get("stationary") or {}
    defaults = {"embedding_tolerance": 1e-10, "max_embedding_factor": 8.0, "period_buckets": 24.0,
                "periodic_length": 1.0}
    return {k: float(block.get(k, v)) for k, v in defaults.items()}


def _libm(which: int, x: np.ndarray) -> np.ndarray:
    """The C library's ln, cos, sin or exp (`reference_loops`) of every element: the laws' functions, whatever SIMD
    NumPy has."""
    x = np.require(x, dtype=np.float64, requirements=["C", "W"])
    out = np.empty_like(x)
    loops.libm_each(which, x.ravel(), out.ravel())
    return out


def _exp(x: np.ndarray) -> np.ndarray:
    return _libm(loops.EXP, x)


def rho(kernel_id: str, tau: np.ndarray, length: float, period: float, ell: float) -> np.ndarray:
    """ρ(τ) of laws §8.1, evaluated in the order written there."""
    d = tau / length
    if kernel_id == "matern32_v1":
        a = math.sqrt(3.0)
        return (1.0 + a * d) * _exp(-a * d)
    if kernel_id == "matern52_v1":
        a = math.sqrt(5.0)
        return (1.0 + a * d + (5.0 / 3.0) * d * d) * _exp(-a * d)
    if kernel_id == "squared_exponential_v1":
        return _exp(-0.5 * d * d)
    if kernel_id == "quasi_periodic_v1":
        s = _libm(loops.SIN, np.pi * tau / period)
        return _exp(-2.0 * s * s / (ell * ell) - d)
    raise ValueError(f"unknown kernel {kernel_id!r}")


def _sizes(buckets: int, factor: float) -> tuple[int, int]:
    """(M₀, M_max) of laws §8.1 step 1."""
    first = 1
    while first < 2 * (buckets - 1):
        first *= 2
    last = first
    while 2 * last <= factor * 2 * (buckets - 1):
        last *= 2
    return first, last


def _eigen(kernel_id: str, length: float, size: int, st: dict) -> np.ndarray:
    k = np.arange(size, dtype=np.float64)
    r = rho(kernel_id, np.minimum(k, size - k), length, st["period_buckets"], st["periodic_length"])
    return np.fft.fft(r).real


def embedding(kernel_id: str, length: float, buckets: int, st: dict, start: int | None = None) -> tuple[int, np.ndarray]:
    """(M, clipped λ) by doubling from M₀ (or `start`) until min λ ≥ −tolerance · max λ (laws §8.1)."""
    first, last = _sizes(buckets, st["max_embedding_factor"])
    size = start or first
    while True:  # a handful of doublings
        lam = _eigen(kernel_id, length, size, st)
        if lam.min() >= -st["embedding_tolerance"] * lam.max():
            return size, np.maximum(lam, 0.0)
        if size >= last:
            raise ValueError(f"{kernel_id} with L={length} has no embedding up to M={size}")
        size *= 2


def coupled_size(kernel_id: str, lengths: Sequence[float], buckets: int, st: dict) -> int:
    """M_c (laws §10): the first M of M₀, 2M₀, … at which every one of the lengths embeds."""
    size = _sizes(buckets, st["max_embedding_factor"])[0]
    while True:
        found = max(embedding(kernel_id, length, buckets, st, size)[0] for length in lengths)
        if found == size:
            return size
        size = found


def latent_group(lgcp: Mapping, strata: Mapping[str, str], buckets: int, base: tuple[int, int, int],
                 coupled: bool) -> tuple[np.ndarray, int]:
    """(Z over the H buckets, blocks of the group's event) of one group from its stream base (laws §8, §10)."""
    if lgcp["latent_model_id"] != "log_gaussian_stationary_v1":
        z, blocks = latent_groups(lgcp, [strata], buckets, np.array([base], dtype=np.uint64), coupled)
        return z[0], int(blocks[0])
    sigma, length = group_sigma_length(lgcp, strata)
    st = _stationary(lgcp)
    kernel = lgcp["kernel_id"]
    start = None
    if coupled:
        bands = sorted(lgcp["length_scale_buckets"]["base_by_scenario_band"])
        start = coupled_size(kernel, sorted({group_length(lgcp, b, strata["demand_class"]) for b in bands}),
                             buckets, st)
    size, lam = embedding(kernel, length, buckets, st, start)
    z = normals(*blocks_at(*base, np.arange(2 * size)))
    field = np.fft.fft(np.sqrt(lam / size) * (z[:size] + 1j * z[size:])).real[:buckets]
    return sigma * field, 2 * size


def latent_groups(lgcp: Mapping, strata: Sequence[Mapping[str, str]], buckets: int, bases: np.ndarray,
                  coupled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(Z, blocks) of several groups (rows of `strata`, stream bases (key, hi, lo) as rows of `bases`): the AR(1)
    and iid models drawn for all of them at once, each value from its own group's stream and recursion; a
    stationary model group by group (`latent_group`)."""
    model = lgcp["latent_model_id"]
    if model == "log_gaussian_stationary_v1" or not len(strata):
        drawn = [latent_group(lgcp, row, buckets, tuple(int(w) for w in base), coupled)
                 for row, base in zip(strata, bases, strict=True)]  # over the replayed groups
        return (np.array([z for z, _ in drawn]).reshape(len(strata), buckets),
                np.array([b for _, b in drawn], dtype=np.int64))
    bases = np.asarray(bases, dtype=np.uint64)
    offsets = np.arange(buckets, dtype=np.uint64)[None, :]
    z = np.empty((len(strata), buckets))
    step = max(1, _CACHED_WORDS // max(1, buckets))
    for g0 in range(0, len(strata), step):  # batches of groups whose words stay in the CPU's cache
        part = bases[g0:g0 + step]
        z[g0:g0 + step] = normals(*blocks_of(part[:, :1], part[:, 1:2], part[:, 2:3], offsets))
    sigma = np.array([group_sigma_length(lgcp, row)[0] for row in strata])[:, None]
    blocks = np.full(len(strata), buckets, dtype=np.int64)
    if model == "log_gaussian_iid_v1":
        return sigma * z, blocks
    phi = np.array([math.exp(-1.0 / group_sigma_length(lgcp, row)[1]) for row in strata])
    innovation = ((sigma[:, 0] * np.sqrt(1.0 - phi * phi))[:, None] * z).T.copy()  # buckets × groups: rows contiguous
    out = np.empty_like(innovation)
    out[0] = sigma[:, 0] * z[:, 0]
    for t in range(1, buckets):  # the AR(1) recursion over buckets, every group at once
        np.add(phi * out[t - 1], innovation[t], out=out[t])
    return out.T.copy(), blocks


def factors(latent: np.ndarray, sigma: float | np.ndarray, lgcp: Mapping) -> np.ndarray:
    """ξ = clip(exp(Z − σ²/2), min_factor, max_factor) (laws §8.2; the C library's exp); σ one value, or one per
    row of Z."""
    clip = lgcp["clipping"]
    half = 0.5 * np.square(np.asarray(sigma, dtype=np.float64))
    return np.clip(_exp(latent - (half[:, None] if half.ndim else half)), float(clip["min_factor"]),
                   float(clip["max_factor"]))


# ---- §9: counts -------------------------------------------------------------------------------------------------

def _stirlerr(n: np.ndarray) -> np.ndarray:
    """ln n! − (n + ½) ln n + n − ½ ln 2π (n ≥ 1): lgamma below 16, the Stirling series above."""
    out = np.empty_like(n)
    small = n < 16
    ns = n[small]
    out[small] = (np.array([math.lgamma(v + 1.0) for v in ns.tolist()]) - (ns + 0.5) * np.log(ns) + ns
                  - 0.5 * math.log(2.0 * math.pi))
    nb = n[~small]
    n2 = 1.0 / (nb * nb)
    out[~small] = (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - n2 / 1188) * n2) * n2) * n2) / nb
    return out


def _bd0(x: np.ndarray, m: float) -> np.ndarray:
    """x ln(x/m) + m − x without cancellation (series in v = (x − m)/(x + m) when x is near m)."""
    out = x * np.log(x / m) + m - x
    near = np.abs(x - m) < 0.1 * (x + m)
    if near.any():
        xn = x[near]
        v = (xn - m) / (xn + m)
        s = (xn - m) * v
        ej = 2.0 * xn * v
        v2 = v * v
        for j in range(1, 200):  # the series converges geometrically in v² < 1/121
            ej = ej * v2
            added = s + ej / (2 * j + 1)
            if np.array_equal(added, s):  # later terms are smaller, of the same sign: rounding keeps s as it is
                break
            s = added
        out[near] = s
    return out


def poisson_pmf(n: np.ndarray, lam: float) -> np.ndarray:
    """p(n; λ) by Loader's saddle point: e^{−λ} at 0, exp(−stirlerr(n) − bd0(n, λ)) / √(2πn) above."""
    n = np.asarray(n, dtype=np.float64)
    out = np.empty_like(n)
    zero = n == 0
    out[zero] = math.exp(-lam)
    pos = n[~zero]
    out[~zero] = np.exp(-_stirlerr(pos) - _bd0(pos, lam)) / np.sqrt(2.0 * math.pi * pos)
    return out


def poisson_inv(lam: float, u: float) -> int:
    """The smallest n ≥ 0 with F(n; λ) ≥ u, by summing the pmf over λ ± 40√λ (+800 above), where all but e^{−700}
    of the mass lies, and searching: on the lower tail for u ≤ ½, on the upper tail (1 − u, exact) above."""
    if lam == 0.0:
        return 0
    sd = math.sqrt(lam)
    lo = max(0, math.floor(lam - 40.0 * sd - 40.0))
    hi = math.ceil(lam + 40.0 * sd + 800.0)
    n = np.arange(lo, hi + 1, dtype=np.float64)
    p = poisson_pmf(n, lam)
    if u <= 0.5:
        return int(lo + np.searchsorted(np.cumsum(p), u, side="left"))
    upper = np.cumsum(p[::-1])[::-1]  # upper[i] = P(N ≥ lo + i)
    tail = np.append(upper[1:], 0.0)  # P(N > lo + i) = 1 − F(lo + i)
    return int(lo + np.argmax(tail <= 1.0 - u))


def _gamma_p_q(a: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(a, x), Q(a, x)), the regularised incomplete gammas, elementwise: the series below a + 1, Lentz's
    continued fraction above."""
    lgam = np.array([math.lgamma(v) for v in a.tolist()])
    front = np.exp(a * np.log(x) - x - lgam)
    term = 1.0 / a
    total = term.copy()
    k = 1.0
    while True:  # series terms shrink like x/(a + k) once k > x; stops when every one is below rounding
        term = term * x / (a + k)
        total = total + term
        k += 1.0
        if not np.any(term > 1e-17 * total) or k > 5000:
            break
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full_like(x, 1.0 / tiny)
    d = 1.0 / np.where(np.abs(b) < tiny, tiny, b)
    h = d.copy()
    for i in range(1, 1000):  # the continued fraction converges in O(√a) steps where it is used (x ≥ a + 1)
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        step = d * c
        h = h * step
        if not np.any((np.abs(step - 1.0) > 1e-16) & (x >= a + 1.0)):
            break
    series = x < a + 1.0
    p = np.where(series, front * total, 1.0 - front * h)
    q = np.where(series, 1.0 - front * total, front * h)
    return p, q


def gamma_inv(shape: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x with P(shape, x) = u, elementwise, by bisection in ln x (on Q = 1 − u, exact, where u > ½)."""
    a, u = np.asarray(shape, dtype=np.float64), np.asarray(u, dtype=np.float64)
    lo = np.full_like(a, -745.0)
    hi = np.log(a + 60.0 * np.sqrt(a) + 800.0)
    upper = u > 0.5
    for _ in range(80):  # halvings of a bracket < 760 wide: below one ulp of ln x
        mid = 0.5 * (lo + hi)
        p, q = _gamma_p_q(a, np.exp(mid))
        below = np.where(upper, q > 1.0 - u, p < u)
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.exp(0.5 * (lo + hi))


def kappa_of(count_policy: Mapping, strata: Mapping[str, str]) -> float:
    """NB2 κ = clamp(κ_base[band] · m_demand[class], bounds) from the count policy document."""
    nb2 = count_policy["nb2"]
    value = (float(nb2["kappa_base_by_scenario_band"][strata["scenario_band"]])
             * float(nb2["demand_class_multipliers"][strata["demand_class"]]))
    return _clamp(value, nb2["kappa_bounds"])


def counts(count_policy: Mapping, mu: np.ndarray, kappa: np.ndarray | None, x0: np.ndarray,
           x1: np.ndarray) -> np.ndarray:
    """count_N of drawing rows from their blocks (laws §9): N = PoissonInv(μ, u(x0)), or under NB2
    Λ = GammaInv(κ, u(x0)) · μ / κ and N = PoissonInv(Λ, u(x1)); capped at max_count_per_bucket."""
    mu = np.asarray(mu, dtype=np.float64)
    if count_policy["count_law_id"] == "poisson":
        lam, u = mu, u01(x0)
    else:
        lam, u = gamma_inv(kappa, u01(x0)) * mu / kappa, u01(x1)
    n = np.array([poisson_inv(m, v) for m, v in zip(lam.tolist(), u.tolist(), strict=True)], dtype=np.int64)
    return np.minimum(n, int(count_policy["max_count_per_bucket"]))


def entity_domain_key(rng_policy: Mapping, entity: Mapping) -> str:
    """The S3 domain key, the policy's template filled with the entity's fields."""
    return rng_policy["families"]["S3.bucket_count.v1"]["domain_key"].format(**entity)


def group_domain_key(rng_policy: Mapping, group_id: str) -> str:
    """The S2 domain key: the policy's `group_id=…`, or `coupled_group=<group without its band>` under common_v1."""
    if rng_policy.get("scenario_coupling", "independent_v1") == "common_v1":
        return "coupled_group=" + group_id.split("|", 1)[1]
    return rng_policy["families"]["S2.latent_vector.v1"]["domain_key"].format(group_id=group_id)

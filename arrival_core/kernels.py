"""Exact stationary latent kernels for S2 (`log_gaussian_stationary_v1`) by circulant embedding.

A group's latent field Z over H buckets is Gaussian with covariance σ²ρ(τ), τ the bucket lag. The H×H Toeplitz
matrix of ρ is embedded in an M×M circulant whose first row is r_k = ρ(min(k, M−k)); its eigenvalues are
λ = Re(FFT(r)). M starts at the smallest power of two ≥ 2(H−1) and doubles while min λ < −tolerance · max λ,
as long as M ≤ max_factor · 2(H−1) (the first M is always tried); past that the kernel cannot be embedded
(`KernelEmbeddingError`).
Eigenvalues that are negative but within the tolerance are set to 0; the largest such magnitude is reported.

The field takes 2M standard normals of the group's stream: z1[k] from block k and z2[k] from block M + k,
and is Z = σ · Re(FFT(√(λ/M) ⊙ (z1 + i·z2)))[0:H], exact in law for the Toeplitz covariance. One event per
group costs 2M blocks and 4M draws (`events_cost`). This module draws nothing: it gets the normals as arrays.

`toeplitz_innovations` whitens a stationary series by Durbin–Levinson, for checking fields against their law.
Pure NumPy; no dagster and no scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rng import variates

KERNELS = ("matern32_v1", "matern52_v1", "squared_exponential_v1", "quasi_periodic_v1")
LATENT_MODEL_ID = "log_gaussian_stationary_v1"

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)


class KernelEmbeddingError(ValueError):
    """A kernel whose circulant embedding stays indefinite up to the largest allowed size M.

    `negative_mass` is Σ|λ_k| over negative λ_k divided by Σ|λ_k|, over the eigenvalues at the last M tried;
    `min_ratio` is min λ / max λ there (the quantity compared with −tolerance).
    """

    def __init__(self, kernel_id: str, length_scale: float, buckets: int, size: int, negative_mass: float,
                 min_ratio: float, tolerance: float, max_factor: float) -> None:
        self.kernel_id = kernel_id
        self.length_scale = length_scale
        self.buckets = buckets
        self.size = size
        self.negative_mass = negative_mass
        self.min_ratio = min_ratio
        self.tolerance = tolerance
        self.max_factor = max_factor
        super().__init__(
            f"kernel {kernel_id} with length scale L={length_scale!r} buckets over H={buckets} buckets "
            f"has no non-negative circulant embedding: at the last size tried, M={size} (M may not exceed "
            f"max_factor {max_factor!r} · 2(H−1) = {max_factor * 2 * (buckets - 1):g}), "
            f"min λ / max λ = {min_ratio:.3e} < −tolerance = {-tolerance:.3e}, "
            f"negative eigenvalue mass Σ|λ<0| / Σ|λ| = {negative_mass:.3e}"
        )

    def __reduce__(self) -> tuple:
        """Pickle by the constructor arguments (the message is rebuilt), so the error crosses processes."""
        return (type(self), (self.kernel_id, self.length_scale, self.buckets, self.size, self.negative_mass,
                             self.min_ratio, self.tolerance, self.max_factor))


@dataclass(frozen=True, eq=False)
class Embedding:
    """One kernel's circulant embedding for (L, H): size M, clipped λ ≥ 0 and √(λ/M) for the field."""

    kernel_id: str
    length_scale: float          # L in buckets
    buckets: int                 # H
    size: int                    # M, a power of two
    eigenvalues: np.ndarray      # λ (M,), negatives within the tolerance set to 0; read-only
    largest_clipped: float       # the largest |λ_k| set to 0 (absolute; 0.0 when none), compare with max λ
    sqrt_scaled: np.ndarray      # √(λ/M) (M,), the field's spectral weights; read-only

    @property
    def draws(self) -> int:
        """Draws of the group's one RNG event: 4M (two 64-bit words per block, 2M blocks)."""
        return events_cost(self.size)[0]

    @property
    def blocks(self) -> int:
        """Philox blocks of the group's one RNG event: 2M (z1 from blocks 0..M−1, z2 from blocks M..2M−1)."""
        return events_cost(self.size)[1]


@dataclass(frozen=True, eq=False)
class GroupEmbeddings:
    """Per-group embeddings without repeats: group g uses `embeddings[index[g]]`."""

    embeddings: tuple[Embedding, ...]
    index: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """M of every group (int64, one per group), for block accounting and `normal_layout`."""
        return np.array([e.size for e in self.embeddings], dtype=np.int64)[self.index]

    @property
    def buckets(self) -> int:
        """H shared by every group (0 when there are no groups)."""
        return self.embeddings[0].buckets if self.embeddings else 0


def events_cost(size: int) -> tuple[int, int]:
    """(draws, blocks) = (4M, 2M) of the one RNG event of a group whose embedding has size M."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"events_cost: embedding size {size!r} must be a positive integer")
    return 4 * int(size), 2 * int(size)


def correlation(kernel_id: str, lags: object, length_scale: float, *, period_buckets: float | None = None,
                periodic_length: float | None = None) -> np.ndarray:
    """ρ(τ) of a kernel at bucket lags τ ≥ 0, length scale L (buckets); P, ℓ_p for quasi_periodic_v1."""
    length = _positive("length_scale", length_scale)
    tau = np.asarray(lags, dtype=np.float64)
    if not np.all(np.isfinite(tau) & (tau >= 0.0)):
        raise ValueError(f"correlation: lags must be finite and ≥ 0 (smallest given: {np.nanmin(tau)})")
    d = tau / length
    if kernel_id == "matern32_v1":
        return (1.0 + _SQRT3 * d) * variates.exp(-_SQRT3 * d)
    if kernel_id == "matern52_v1":
        return (1.0 + _SQRT5 * d + (5.0 / 3.0) * d * d) * variates.exp(-_SQRT5 * d)
    if kernel_id == "squared_exponential_v1":
        return variates.exp(-0.5 * d * d)
    if kernel_id == "quasi_periodic_v1":
        if period_buckets is None or periodic_length is None:
            raise ValueError("correlation: quasi_periodic_v1 needs period_buckets and periodic_length")
        period = _positive("period_buckets", period_buckets)
        ell = _positive("periodic_length", periodic_length)
        s = variates.sin(np.pi * tau / period)
        return variates.exp(-2.0 * s * s / (ell * ell) - d)
    raise ValueError(f"correlation: kernel_id {kernel_id!r} is not one of {list(KERNELS)}")


def initial_size(buckets: int) -> int:
    """The first M tried: the smallest power of two ≥ 2(H−1); 1 for H = 1 (the 1×1 embedding [ρ(0)] = [1])."""
    h = _buckets(buckets)
    return 1 if h == 1 else 1 << (2 * (h - 1) - 1).bit_length()


def max_size(buckets: int, max_factor: float) -> int:
    """The largest M doubling may reach: the largest power of two ≤ max_factor · 2(H−1), or the first M."""
    h, first = _buckets(buckets), initial_size(buckets)
    cap = _factor(max_factor) * 2 * (h - 1)
    size = first
    while 2 * size <= cap:  # over doublings (≤ log2 of the factor), not over data
        size *= 2
    return size


def embed(kernel_id: str, length_scale: float, buckets: int, *, tolerance: float, max_factor: float,
          period_buckets: float | None = None, periodic_length: float | None = None,
          min_size: int | None = None) -> Embedding:
    """The circulant embedding of ρ for (L, H): double M until min λ ≥ −tolerance · max λ, or fail.

    The first M = `initial_size(H)` (or `min_size`, a power of two between it and the largest allowed M, for a
    coupled group) is always tried; a doubled M only while it is ≤ max_factor · 2(H−1)
    (tolerance in [0, 1), max_factor ≥ 1, else ValueError).
    For H = 1, M = 1 and λ = [1]: the field is σ · z1[0] (two blocks, four draws, like any other event).
    Raises `KernelEmbeddingError` when the last allowed M is still too negative.
    """
    h = _buckets(buckets)
    tol = float(tolerance)
    if not (math.isfinite(tol) and 0.0 <= tol < 1.0):
        raise ValueError(f"embed: tolerance {tolerance!r} must be in [0, 1)")
    length = _positive("length_scale", length_scale)
    if kernel_id not in KERNELS:
        raise ValueError(f"embed: kernel_id {kernel_id!r} is not one of {list(KERNELS)}")
    size, last = initial_size(h), max_size(h, max_factor)
    if min_size is not None:
        if not (isinstance(min_size, (int, np.integer)) and size <= min_size <= last
                and int(min_size) & (int(min_size) - 1) == 0):
            raise ValueError(f"embed: min_size {min_size!r} must be a power of two in [{size}, {last}]")
        size = int(min_size)
    while True:  # over doubling attempts (a handful), each one vectorised FFT
        k = np.arange(size, dtype=np.float64)
        row = correlation(kernel_id, np.minimum(k, size - k), length, period_buckets=period_buckets,
                          periodic_length=periodic_length)
        lam = np.fft.fft(row).real
        top = float(lam.max())
        low = float(lam.min())
        if low >= -tol * top:
            break
        if size >= last:
            negative = float(-lam[lam < 0.0].sum())
            raise KernelEmbeddingError(kernel_id, length, h, size, negative / float(np.abs(lam).sum()),
                                       low / top, tol, float(max_factor))
        size *= 2
    largest = max(0.0, -low)
    lam = np.maximum(lam, 0.0)
    root = np.sqrt(lam / size)
    lam.setflags(write=False)
    root.setflags(write=False)
    return Embedding(kernel_id, length, h, size, lam, largest, root)


def coupled_size(kernel_id: str, length_scales: object, buckets: int, *, tolerance: float, max_factor: float,
                 period_buckets: float | None = None, periodic_length: float | None = None) -> int:
    """M_c of a coupled group (laws §10): the first M of the doubling sequence M₀, 2M₀, … at which the kernel
    passes the tolerance for every one of the group's length scales (one per scenario band), so every coupled
    scenario embeds at the same M and draws the same 2M_c normals. Raises `KernelEmbeddingError` as `embed`."""
    lengths = sorted({float(v) for v in np.asarray(length_scales, dtype=np.float64).reshape(-1)})
    size = initial_size(buckets)
    while True:  # over doublings (a handful): each pass embeds the few length scales at the current M
        sizes = [embed(kernel_id, value, buckets, tolerance=tolerance, max_factor=max_factor,
                       period_buckets=period_buckets, periodic_length=periodic_length, min_size=size).size
                 for value in lengths]
        if max(sizes, default=size) == size:
            return size
        size = max(sizes)


def embed_many(kernel_id: str, length_scales: object, buckets: int, *, tolerance: float, max_factor: float,
               period_buckets: float | None = None, periodic_length: float | None = None) -> GroupEmbeddings:
    """Embeddings of per-group length scales, each distinct L (exact float equality) computed once."""
    lengths = np.asarray(length_scales, dtype=np.float64).reshape(-1)
    bad = ~(np.isfinite(lengths) & (lengths > 0.0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"embed_many: length scale of group {first} is {lengths[first]!r}; need finite > 0")
    distinct, index = np.unique(lengths, return_inverse=True)
    embeddings = tuple(
        embed(kernel_id, value, buckets, tolerance=tolerance, max_factor=max_factor,
              period_buckets=period_buckets, periodic_length=periodic_length)
        for value in distinct.tolist()  # over distinct length scales (strata), not groups
    )
    index = index.astype(np.int64).reshape(-1)
    index.setflags(write=False)
    return GroupEmbeddings(embeddings, index)


def circulant_field(embedding_sqrt: np.ndarray, z1: np.ndarray, z2: np.ndarray, buckets: int) -> np.ndarray:
    """Unit-σ fields Re(FFT(√(λ/M) ⊙ (z1 + i·z2)))[:, :H] of G groups sharing one embedding (z1, z2: G×M).

    Each group is transformed on its own (one 1-D FFT per row), so a group's values depend on its own normals
    alone, bit for bit, whichever other groups are computed with it (a replay of a sample of groups gives the
    published bytes)."""
    root = np.asarray(embedding_sqrt, dtype=np.float64)
    a, b = np.asarray(z1, dtype=np.float64), np.asarray(z2, dtype=np.float64)
    h = _buckets(buckets)
    if root.ndim != 1 or a.shape != b.shape or a.ndim != 2 or a.shape[1] != root.shape[0]:
        raise ValueError(f"circulant_field: need √(λ/M) of length M and z1, z2 both G×M; got {root.shape}, "
                         f"{a.shape}, {b.shape}")
    if h > root.shape[0]:
        raise ValueError(f"circulant_field: H={h} buckets exceed the embedding size M={root.shape[0]}")
    spectrum = root * (a + 1j * b)
    out = np.empty((a.shape[0], h), dtype=np.float64)
    for g in range(a.shape[0]):  # over groups: one transform each, never batched
        out[g] = np.fft.fft(spectrum[g]).real[:h]
    return out


def realised_autocovariance(embedding: Embedding) -> np.ndarray:
    """The exact autocovariance (unit σ) at lags 0..H−1 of the fields an embedding samples: (1/M) Σ_j λ_j e^{2πijk/M}
    over the clipped λ. It equals ρ(k) when nothing was clipped and differs from it by at most Σ|λ_j<0| / M
    otherwise; whitening by it tests the published values against the law they were actually drawn from."""
    return np.fft.ifft(embedding.eigenvalues).real[:embedding.buckets].copy()


def normal_layout(sizes: object) -> tuple[np.ndarray, np.ndarray]:
    """(group, block) of each normal in the ragged group-major layout: group g's blocks 0..2M_g−1 in order."""
    counts = 2 * np.asarray(sizes, dtype=np.int64).reshape(-1)
    if (counts < 2).any():
        raise ValueError("normal_layout: every embedding size must be ≥ 1")
    starts = np.cumsum(counts) - counts
    group = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    block = np.arange(group.shape[0], dtype=np.int64) - starts[group]
    return group, block.astype(np.uint64)


def grouped_field(groups: GroupEmbeddings, normals: object) -> np.ndarray:
    """Unit-σ fields (G×H) of groups with differing embeddings, from ragged normals in `normal_layout` order.

    Group g's 2M_g normals are consecutive (block k at position start_g + k): z1 = blocks 0..M−1,
    z2 = blocks M..2M−1. The work loops over distinct embeddings, vectorised over the groups of each.
    """
    flat = np.asarray(normals, dtype=np.float64).reshape(-1)
    sizes = groups.sizes
    counts = 2 * sizes
    if flat.shape[0] != int(counts.sum()):
        raise ValueError(f"grouped_field: {flat.shape[0]} normals given, {int(counts.sum())} needed")
    starts = np.cumsum(counts) - counts
    out = np.empty((groups.index.shape[0], groups.buckets), dtype=np.float64)
    for i, emb in enumerate(groups.embeddings):  # over distinct embeddings, not groups
        rows = np.flatnonzero(groups.index == i)
        take = flat[starts[rows][:, None] + np.arange(2 * emb.size)]
        out[rows] = circulant_field(emb.sqrt_scaled, take[:, :emb.size], take[:, emb.size:], emb.buckets)
    return out


def toeplitz_innovations(rho: object, z: object, *, max_gain: float | None = None) -> np.ndarray:
    """Whitened e_t = (Z_t − E[Z_t | Z_<t]) / √v_t of series Z (G×H) with autocovariance rho[0..H−1].

    Durbin–Levinson gives the order-t predictor and its error variance v_t once for rho (a recursion over
    lags, each step one vector operation: O(H²)); the groups are then one matrix product. If Z has that
    covariance, the e_t are iid N(0, 1). A rho that is not positive definite raises ValueError naming the
    lag where v_t ≤ 0. Returns G×H (a 1-D series is treated as one group).

    With `max_gain`, only the prefix e_0..e_{T−1} is returned, T the first t whose whitening row has gain
    √rho[0] · (1 + Σ_k |φ_{t,k}|) / √v_t above max_gain (or whose v_t is not positive): an error of ε·√rho[0] in
    each Z_t moves those e_t by at most max_gain·ε. Smooth kernels (squared exponential, Matérn 5/2 with a long
    L) are numerically singular over long horizons; their first innovations are still exactly iid N(0, 1).
    """
    series = np.asarray(z, dtype=np.float64)
    if series.ndim == 1:
        series = series[None, :]
    if series.ndim != 2:
        raise ValueError(f"toeplitz_innovations: z must be G×H, got shape {series.shape}")
    h = series.shape[1]
    r = np.asarray(rho, dtype=np.float64).reshape(-1)
    if r.shape[0] < h:
        raise ValueError(f"toeplitz_innovations: rho has {r.shape[0]} lags, the series has H={h}")
    if max_gain is not None and not (math.isfinite(float(max_gain)) and max_gain >= 1.0):
        raise ValueError(f"toeplitz_innovations: max_gain {max_gain!r} must be finite and ≥ 1")
    w = _whitening_matrix(r[:h], max_gain)
    return series[:, :w.shape[0]] @ w.T


def _whitening_matrix(r: np.ndarray, max_gain: float | None = None) -> np.ndarray:
    """Lower-triangular W with (W Z)_t = e_t: row t is (−φ_{t,t}, …, −φ_{t,1}, 1, 0, …) / √v_t (T×T, T ≤ H rows:
    all of them without `max_gain`, else the rows before the first whose gain exceeds it)."""
    h = r.shape[0]
    if not (math.isfinite(float(r[0])) and r[0] > 0.0):
        raise ValueError(f"toeplitz_innovations: rho[0] = {r[0]!r} must be a positive variance")
    w = np.zeros((h, h), dtype=np.float64)
    w[0, 0] = 1.0 / math.sqrt(r[0])
    phi = np.zeros(0, dtype=np.float64)
    v = float(r[0])
    scale = math.sqrt(float(r[0]))
    for t in range(1, h):  # Durbin–Levinson over lags; the body is a vector of length t
        reflection = (r[t] - float(phi @ r[t - 1:0:-1])) / v
        phi = np.concatenate((phi - reflection * phi[::-1], [reflection]))
        v *= 1.0 - reflection * reflection
        if not (math.isfinite(v) and v > 0.0):
            if max_gain is not None:
                return w[:t, :t].copy()
            raise ValueError(f"toeplitz_innovations: rho is not positive definite (prediction variance "
                             f"{v!r} at lag {t})")
        if max_gain is not None and scale * (1.0 + float(np.abs(phi).sum())) / math.sqrt(v) > max_gain:
            return w[:t, :t].copy()
        w[t, :t] = -phi[::-1]
        w[t, t] = 1.0
        w[t, :t + 1] /= math.sqrt(v)
    return w


def _buckets(buckets: int) -> int:
    """H as a Python int ≥ 1."""
    if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 1:
        raise ValueError(f"buckets {buckets!r} must be an integer ≥ 1")
    return int(buckets)


def _factor(max_factor: float) -> float:
    """max_embedding_factor as a finite float ≥ 1."""
    value = float(max_factor)
    if not (math.isfinite(value) and value >= 1.0):
        raise ValueError(f"max_factor {max_factor!r} must be finite and ≥ 1")
    return value


def _positive(name: str, value: float) -> float:
    """A finite, strictly positive policy number as a float."""
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise ValueError(f"{name} {value!r} must be finite and > 0")
    return out

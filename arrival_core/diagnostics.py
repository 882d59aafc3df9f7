"""Diagnostics the streaming states collect for the pictures of their outputs: per-bucket totals, a count
histogram of one μ band against the law's expected frequencies, and the largest groups' factors.

Fed once per chunk with vectorised NumPy calls, they keep O(buckets) or O(kmax) state, so a picture never needs
a second pass over the data. They are reports only and never enter identity outputs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_ROW_CAP = 20_000  # rows per chunk a histogram band takes into account
HISTOGRAM_BAND = (1.0, 3.0, 15)  # the μ band [low, high) of the S3 count histogram and its largest count shown
MAX_GROUPS = 3  # latent factor series kept for the S2 picture

class BucketTotals:
    """Sum of a per-row value per bucket of the horizon, fed chunk by chunk."""

    def __init__(self, buckets: int) -> None:
        if buckets < 0:
            raise ValueError(f"buckets must be >= 0, got {buckets}")
        self.buckets = int(buckets)
        self.totals = np.zeros(self.buckets, dtype=np.float64)

    def add(self, bucket_index: np.ndarray, values: np.ndarray) -> None:
        """Add each row's value to its bucket (`bucket_index` in 0..buckets-1, one per row)."""
        index = np.asarray(bucket_index)
        weights = np.asarray(values, dtype=np.float64)
        if index.shape != weights.shape:
            raise ValueError(f"{index.size} bucket indices for {weights.size} values")
        if index.size == 0:
            return
        if index.min() < 0 or index.max() >= self.buckets:
            raise ValueError(f"bucket index outside 0..{self.buckets - 1}")
        self.totals += np.bincount(index.astype(np.intp, copy=False), weights=weights, minlength=self.buckets)

    def add_blocks(self, values: np.ndarray) -> None:
        """Add rows of whole entities in writer order (each entity owns `buckets` consecutive rows)."""
        weights = np.asarray(values, dtype=np.float64)
        if self.buckets == 0 or weights.size % self.buckets:
            raise ValueError(f"{weights.size} rows are not whole entities of {self.buckets} buckets")
        self.totals += weights.reshape(-1, self.buckets).sum(axis=0)

    def merge(self, other: BucketTotals) -> None:
        """Add the totals another accumulator took (of other chunks, e.g. on a worker thread)."""
        self.totals += other.totals


def _pmf_rows(mu: np.ndarray, kmax: int, kappa: np.ndarray | None) -> np.ndarray:
    """Σ over rows of pmf(k; μ_row[, κ_row]) for k = 0..kmax, in log space per k (no loop over rows)."""
    mu = np.asarray(mu, dtype=np.float64).ravel()
    if kmax < 0:
        raise ValueError(f"kmax must be >= 0, got {kmax}")
    if np.any(mu < 0) or not np.all(np.isfinite(mu)):
        raise ValueError("mu must be finite and >= 0")
    out = np.zeros(kmax + 1, dtype=np.float64)
    if mu.size == 0:
        return out
    positive = mu > 0
    if kappa is None:  # Poisson: log p(k) = k·log μ − μ − log k!
        log_mu = np.log(mu, out=np.full_like(mu, -np.inf), where=positive)
        out[0] = np.exp(-mu).sum()
        for k in range(1, kmax + 1):
            out[k] = np.exp(k * log_mu - mu - math.lgamma(k + 1)).sum()
        return out
    kappa = np.broadcast_to(np.asarray(kappa, dtype=np.float64).ravel(), mu.shape)
    if np.any(kappa <= 0) or not np.all(np.isfinite(kappa)):
        raise ValueError("kappa must be finite and > 0")
    # NB2 (mean μ, variance μ + μ²/κ): log p(0) = κ·log(κ/(κ+μ)) = −κ·log1p(μ/κ) (exact for large κ);
    # p(k)/p(k−1) = (k−1+κ)/k · μ/(κ+μ)
    log_p = -kappa * np.log1p(mu / kappa)
    log_q = np.log(mu, out=np.full_like(mu, -np.inf), where=positive) - np.log(kappa + mu)
    out[0] = np.exp(log_p).sum()
    for k in range(1, kmax + 1):
        log_p = log_p + np.log(kappa + (k - 1)) - math.log(k) + log_q
        out[k] = np.exp(log_p).sum()
    return out


def count_variance(mu: np.ndarray, kappa: np.ndarray | None = None) -> np.ndarray:
    """Each row's count variance given its mean: μ (Poisson), μ + μ²/κ (NB2); summed per bucket it is the
    variance of the bucket's total, the rows being drawn independently given λ_realised."""
    mu = np.asarray(mu, dtype=np.float64)
    return mu if kappa is None else mu + mu * mu / np.asarray(kappa, dtype=np.float64)


def poisson_expected(mu: np.ndarray, kmax: int) -> np.ndarray:
    """Expected frequency of each count k = 0..kmax over rows of Poisson means: Σ_rows pmf(k; μ_row)."""
    return _pmf_rows(mu, kmax, None)


def nb2_expected(mu: np.ndarray, kappa: np.ndarray, kmax: int) -> np.ndarray:
    """Expected frequency of each count k = 0..kmax over rows of NB2 laws (mean μ_row, dispersion κ_row)."""
    return _pmf_rows(mu, kmax, kappa)


@dataclass(frozen=True)
class CountHistogram:
    """Observed and expected frequencies of the counts 0..kmax of the rows in one λ band.

    `overflow_*` are the rows counted above kmax (expected: the rows' remaining probability mass).
    """

    label: str
    observed: np.ndarray  # int64, kmax + 1
    expected: np.ndarray  # float64, kmax + 1
    rows: int = 0
    overflow_observed: int = 0
    overflow_expected: float = 0.0

    @property
    def kmax(self) -> int:
        return len(self.observed) - 1


class HistogramBand:
    """Counts of the rows whose μ lies in [low, high), with their law's expected frequencies, fed per chunk.

    At most `row_cap` rows of a chunk are taken (evenly spaced, so the choice is deterministic) to bound the
    cost; with NB2 counts pass each row's κ to `add`.
    """

    def __init__(self, low: float, high: float, kmax: int, *, row_cap: int = DEFAULT_ROW_CAP) -> None:
        if not (0 <= low < high) or kmax < 0 or row_cap < 1:
            raise ValueError(
                f"need 0 <= low < high, kmax >= 0, row_cap >= 1 (got {low}, {high}, {kmax}, {row_cap})"
            )
        self.low, self.high, self.kmax, self.row_cap = float(low), float(high), int(kmax), int(row_cap)
        self.observed = np.zeros(self.kmax + 1, dtype=np.int64)
        self.expected = np.zeros(self.kmax + 1, dtype=np.float64)
        self.rows = 0
        self.overflow = 0

    @property
    def label(self) -> str:
        return f"μ in [{self.low:g}, {self.high:g})"

    def add(self, mu: np.ndarray, counts: np.ndarray, kappa: np.ndarray | None = None) -> None:
        """Take the rows of a chunk with μ in the band (μ, count and optional κ are per row)."""
        mu = np.asarray(mu, dtype=np.float64).ravel()
        counts = np.asarray(counts).ravel()
        if mu.shape != counts.shape or (kappa is not None and np.shape(kappa) != mu.shape):
            raise ValueError("mu, counts (and kappa) must have one value per row")
        rows = np.flatnonzero((mu >= self.low) & (mu < self.high))
        if len(rows) > self.row_cap:
            rows = rows[np.linspace(0, len(rows) - 1, self.row_cap).round().astype(np.intp)]
        if len(rows) == 0:
            return
        n = counts[rows].astype(np.int64)
        inside = n <= self.kmax
        self.observed += np.bincount(n[inside], minlength=self.kmax + 1)
        self.overflow += int((~inside).sum())
        self.expected += _pmf_rows(mu[rows], self.kmax, None if kappa is None else np.asarray(kappa)[rows])
        self.rows += len(rows)

    def merge(self, other: HistogramBand) -> None:
        """Add what another band of the same bounds took (of other chunks, e.g. on a worker thread)."""
        self.observed += other.observed
        self.expected += other.expected
        self.rows += other.rows
        self.overflow += other.overflow

    def histogram(self) -> CountHistogram:
        """The band's frequencies so far."""
        return CountHistogram(
            label=self.label,
            observed=self.observed.copy(),
            expected=self.expected.copy(),
            rows=self.rows,
            overflow_observed=self.overflow,
            overflow_expected=max(self.rows - float(self.expected.sum()), 0.0),
        )


def largest_groups(
    group_ids: Sequence[str], entity_group: np.ndarray, factors: np.ndarray, n: int = MAX_GROUPS
) -> dict[str, np.ndarray]:
    """ξ over the buckets of the `n` groups with most entities (ties: the earlier group), largest first.

    `entity_group` is each entity's index into `group_ids`; `factors` is the G×H array of latent factors.
    """
    sizes = np.bincount(np.asarray(entity_group, dtype=np.intp), minlength=len(group_ids))
    order = np.argsort(-sizes, kind="stable")[:n]
    return {group_ids[i]: np.asarray(factors[i]) for i in order if sizes[i] > 0}


# ---- pictures -------------------------------------------------------------------------------------------------

"""Pictures for the asset pages: small PNGs drawn from arrays the states already hold while streaming.

Everything here is pure: NumPy arrays in, PNG bytes (or Markdown) out; no file is read. Figures are drawn with
matplotlib's Agg canvas on a private `Figure` (pyplot's global state is never touched), saved without a
`Software` entry so the bytes carry no version string. Plots are reports only and never enter identity outputs.

The accumulators (`BucketTotals`, `HistogramBand`) are fed once per chunk with vectorised NumPy calls and keep
O(buckets) or O(kmax) state, so drawing a picture never needs a second pass over the data.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGSIZE = (7.0, 3.0)  # inches
DPIS = (90, 72, 60, 48, 36)  # tried in turn until the PNG fits MAX_PNG_BYTES
MAX_PNG_BYTES = 150_000
MAX_GROUPS = 3  # latent factor lines in the S2 picture
LABEL_WIDTH = 26  # characters of a group id in a legend
DEFAULT_ROW_CAP = 20_000  # rows per chunk a histogram band takes into account

TARGET_COLOUR = "#1f77b4"
REALISED_COLOUR = "#d62728"
BAND_COLOUR = "#9ecae1"
EXPECTED_COLOUR = "#000000"
LEGEND = {"frameon": True, "framealpha": 0.85, "edgecolor": "none"}
ABOVE = {"loc": "lower right", "bbox_to_anchor": (1.0, 1.0), "frameon": False, "borderaxespad": 0.1}


# ---- rendering -----------------------------------------------------------------------------------------------

def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A figure on its own Agg canvas (no pyplot), laid out to fit its labels."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, max_bytes: int = MAX_PNG_BYTES, dpis: Sequence[int] = DPIS) -> bytes:
    """PNG bytes of a figure at the first dpi of `dpis` whose file fits `max_bytes` (else the last dpi's)."""
    if not dpis:
        raise ValueError("no dpi to render at")
    png = b""
    for dpi in dpis:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        png = buf.getvalue()
        if len(png) <= max_bytes:
            break
    return png


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown embedding a PNG as a data URI (for a `MetadataValue.md` entry)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not PNG bytes")
    text = " ".join(alt.split()).replace("[", "(").replace("]", ")")
    return f"![{text}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def short_label(text: str, width: int = LABEL_WIDTH) -> str:
    """A label of at most `width` characters: its head and tail around an ellipsis (the tail tells groups apart)."""
    if len(text) <= width:
        return text
    tail = (width - 1) * 2 // 3
    head = width - 1 - tail
    return text[:head] + "…" + text[-tail:]


# ---- accumulators ---------------------------------------------------------------------------------------------

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

def _style(ax) -> None:
    ax.tick_params(labelsize=7)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    ax.margins(x=0)


def s2_intensity_png(
    target_per_bucket: np.ndarray,
    realised_per_bucket: np.ndarray,
    top_group_factors: Mapping[str, np.ndarray],
) -> bytes:
    """S2: total λ_target and λ_realised per bucket (top); ξ of up to three groups over the buckets (bottom)."""
    target = np.asarray(target_per_bucket, dtype=np.float64)
    realised = np.asarray(realised_per_bucket, dtype=np.float64)
    if target.shape != realised.shape:
        raise ValueError(f"{target.size} target buckets but {realised.size} realised buckets")
    fig = new_figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    buckets = np.arange(target.size)
    top.plot(buckets, target, color=TARGET_COLOUR, linewidth=0.9, label="λ_target")
    top.plot(buckets, realised, color=REALISED_COLOUR, linewidth=0.9, alpha=0.85, label="λ_realised")
    top.set_ylabel("Σ λ per bucket", fontsize=8)
    top.legend(fontsize=7, ncols=2, **ABOVE)
    _style(top)
    for group_id, factor in list(top_group_factors.items())[:MAX_GROUPS]:
        xi = np.asarray(factor, dtype=np.float64)
        bottom.plot(np.arange(xi.size), xi, linewidth=0.8, label=short_label(group_id))
    bottom.axhline(1.0, color="#555555", linewidth=0.6, linestyle="--")
    bottom.set_ylabel("ξ", fontsize=8)
    bottom.set_xlabel("bucket of the horizon", fontsize=8)
    if top_group_factors:
        bottom.legend(fontsize=6, ncols=min(len(top_group_factors), MAX_GROUPS), **ABOVE)
    _style(bottom)
    return figure_png(fig)


def s3_counts_png(counts_per_bucket: np.ndarray, mu_per_bucket: np.ndarray, histogram: CountHistogram) -> bytes:
    """S3: total counts against total μ ± 3√μ per bucket (left); one λ band's counts against its law (right)."""
    counts = np.asarray(counts_per_bucket, dtype=np.float64)
    mu = np.asarray(mu_per_bucket, dtype=np.float64)
    if counts.shape != mu.shape:
        raise ValueError(f"{counts.size} count buckets but {mu.size} μ buckets")
    fig = new_figure()
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    buckets = np.arange(mu.size)
    spread = 3.0 * np.sqrt(np.clip(mu, 0.0, None))
    left.fill_between(buckets, mu - spread, mu + spread, color=BAND_COLOUR, alpha=0.6, linewidth=0,
                      label="μ ± 3√μ")
    left.plot(buckets, counts, color=REALISED_COLOUR, linewidth=0.7, label="Σ N")
    left.plot(buckets, mu, color=TARGET_COLOUR, linewidth=0.8, label="Σ μ")
    left.set_xlabel("bucket of the horizon", fontsize=8)
    left.set_ylabel("per bucket", fontsize=8)
    left.legend(fontsize=6, ncols=3, **ABOVE)
    _style(left)
    ks = np.arange(histogram.kmax + 1)
    right.bar(ks, histogram.observed, width=0.8, color=BAND_COLOUR, label="observed")
    right.plot(ks, histogram.expected, color=EXPECTED_COLOUR, marker="o", markersize=2.5, linewidth=0.8,
               label="expected")
    right.set_title(f"{histogram.label}, {histogram.rows:,} rows", fontsize=7)
    right.set_xlabel("count N", fontsize=8)
    if histogram.rows:
        right.legend(fontsize=6, loc="upper right", **LEGEND)
    else:
        right.text(0.5, 0.5, "no rows in band", ha="center", va="center", fontsize=8,
                   transform=right.transAxes)
    _style(right)
    right.margins(x=0.02)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure_png(fig)

"""Pictures for the asset pages: small PNGs drawn from arrays the states already hold while streaming.

Everything here is pure: NumPy arrays in, PNG bytes (or Markdown) out; no file is read. Each picture is titled
with its dataset and partition, plots against the buckets' UTC starts with a tick per day, and is sized for the
UI's Markdown dialog (1000 px wide, 10-13 pt fonts). Figures are drawn with
matplotlib's Agg canvas on a private `Figure` (pyplot's global state is never touched), saved without a
`Software` entry so the bytes carry no version string. Plots are reports only and never enter identity outputs.

The data comes from `arrival_core.diagnostics`, collected by the states while they stream.
"""

from __future__ import annotations

import base64
import io
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from arrival_core.diagnostics import MAX_GROUPS, CountHistogram
from arrival_core.reports import markdown_table

if TYPE_CHECKING:  # matplotlib is imported when a picture is drawn, not when a command starts
    from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGSIZE = (10.0, 6.0)  # inches: 1000 x 600 px at 100 dpi, the width the UI's Markdown dialog shows unscaled
DPIS = (100, 90, 72, 60, 48)  # tried in turn until the PNG fits MAX_PNG_BYTES
MAX_PNG_BYTES = 300_000  # the reference world's S2 picture is 263 kB at 100 dpi: drawn once, not again at 90
FONT = {"title": 13, "label": 11, "tick": 10, "legend": 10}  # points: 14-18 px at 100 dpi
Z_BAND = 3.0  # the band drawn around the expected totals, in standard deviations

TARGET_COLOUR = "#6baed6"  # λ_target, μ: a filled light blue area / band
TARGET_EDGE = "#08519c"
REALISED_COLOUR = "#a50f15"  # λ_realised, N: a dark red line over it
BAND_COLOUR = "#fdae6b"  # the ±3σ band: orange, visible behind the lines
EXPECTED_COLOUR = "#000000"
GROUP_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e")
LEGEND = {"frameon": True, "framealpha": 0.9, "edgecolor": "#cccccc", "fontsize": FONT["legend"]}


@dataclass(frozen=True)
class Frame:
    """What a picture names and measures against: its dataset and partition, and each bucket's UTC start."""

    dataset: str
    partition: str
    bucket_start_utc: np.ndarray  # datetime64, one per bucket

    def times(self, buckets: int) -> np.ndarray:
        """The buckets' UTC starts as datetime64[s] (refusing a grid of another length)."""
        starts = np.asarray(self.bucket_start_utc).astype("datetime64[s]")
        if starts.shape != (buckets,):
            raise ValueError(f"{starts.size} bucket starts for {buckets} buckets")
        return starts


# ---- rendering -----------------------------------------------------------------------------------------------

def preload() -> None:
    """Import matplotlib's figure and Agg canvas on a worker thread while a state streams (its numeric work leaves
    the GIL free), so the picture drawn when it ends does not wait about 0.7 s for the import; once per process."""
    if "matplotlib.backends.backend_agg" in sys.modules:
        return

    def load() -> None:
        from matplotlib import figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401

    threading.Thread(target=load, daemon=True, name="arrival-matplotlib").start()


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A figure on its own Agg canvas (no pyplot), laid out to fit its labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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


def group_label(group_id: str) -> str:
    """A pooling group's id as a legend reads it: its parts joined by " · " instead of "|", nothing cut."""
    return " · ".join(group_id.split("|"))


def plot_markdown(png: bytes, alt: str, facts: Sequence[tuple[str, object]]) -> str:
    """The `plot` entry: the picture, then a table of the numbers it shows (one dialog shows both)."""
    return markdown_image(png, alt) + "\n\n" + markdown_table(facts)


# ---- accumulators ---------------------------------------------------------------------------------------------

def _time_axis(ax, times: np.ndarray, *, label: bool) -> None:
    """UTC dates on the x axis: a tick per day (labelled every day up to 10 days, else every few, with its weekday
    up to a week), every six hours minor; over longer grids a faint line at each day's start instead of minor
    ticks (one collection: a matplotlib tick costs milliseconds to lay out, and 90 days would need 90 of them)."""
    from matplotlib import dates, rcParams

    days = max(1, int((times[-1] - times[0]) / np.timedelta64(1, "D"))) if times.size else 1
    ax.xaxis.set_major_locator(dates.DayLocator(interval=max(1, -(-days // 10)), tz="UTC"))
    if days > 10:
        starts = np.arange(times[0].astype("datetime64[D]") + 1, times[-1], np.timedelta64(1, "D"))
        ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), colors=rcParams["grid.color"], linewidth=0.3,
                  alpha=0.3, zorder=1.5)
    else:
        ax.xaxis.set_minor_locator(dates.HourLocator(byhour=(6, 12, 18), tz="UTC"))
    ax.xaxis.set_major_formatter(dates.DateFormatter("%a %d %b" if days <= 7 else "%d %b", tz="UTC"))
    if label:
        ax.set_xlabel("bucket start (UTC)", fontsize=FONT["label"])
    else:
        ax.tick_params(labelbottom=False)
    if times.size:
        ax.set_xlim(times[0], times[-1])


def _style(ax) -> None:
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(True, which="major", linewidth=0.6, alpha=0.6)
    ax.grid(True, which="minor", axis="x", linewidth=0.3, alpha=0.3)


def _title(fig: Figure, frame: Frame, what: str) -> None:
    fig.suptitle(f"{frame.dataset}  ·  partition {frame.partition}\n{what}", fontsize=FONT["title"])


def s2_intensity_png(
    target_per_bucket: np.ndarray,
    realised_per_bucket: np.ndarray,
    top_group_factors: Mapping[str, np.ndarray],
    frame: Frame,
) -> bytes:
    """S2: Σ λ_target (a filled area) and Σ λ_realised (a line over it) per bucket; beneath, their ratio and ξ of
    up to three largest groups, both against time in UTC."""
    target = np.asarray(target_per_bucket, dtype=np.float64)
    realised = np.asarray(realised_per_bucket, dtype=np.float64)
    if target.shape != realised.shape:
        raise ValueError(f"{target.size} target buckets but {realised.size} realised buckets")
    times = frame.times(target.size)
    fig = new_figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _title(fig, frame, "total intensity over all entities per bucket; latent factor ξ beneath")
    top.fill_between(times, 0, target, color=TARGET_COLOUR, alpha=0.55, linewidth=0, label="Σ λ_target")
    top.plot(times, target, color=TARGET_EDGE, linewidth=0.8)
    top.plot(times, realised, color=REALISED_COLOUR, linewidth=1.1, label="Σ λ_realised")
    top.set_ylabel("Σ λ per bucket", fontsize=FONT["label"])
    top.set_ylim(0, 1.2 * max(float(np.max(target, initial=0)), float(np.max(realised, initial=0)), 1e-9))
    top.legend(loc="upper left", ncols=2, **LEGEND)
    _style(top)
    _time_axis(top, times, label=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(target > 0, realised / target, np.nan)
    bottom.axhline(1.0, color="#555555", linewidth=0.8, linestyle="--")
    ratio_line = bottom.plot(times, ratio, color="#000000", linewidth=1.3,
                             label="all entities: Σ λ_realised / Σ λ_target")
    groups = []
    for colour, (group_id, factor) in zip(GROUP_COLOURS, list(top_group_factors.items())[:MAX_GROUPS], strict=False):
        xi = np.asarray(factor, dtype=np.float64)
        groups += bottom.plot(times[: xi.size], xi, color=colour, linewidth=0.9, alpha=0.9, label=group_label(group_id))
    bottom.set_ylabel("ξ", fontsize=FONT["label"])
    bottom.legend(handles=ratio_line, loc="upper left", **LEGEND)
    if groups:  # below the axes, one group a line: the names are long and are never cut
        fig.legend(handles=groups, loc="outside lower center", ncols=1, title="ξ of the largest groups",
                   title_fontsize=FONT["legend"], **LEGEND)
    _style(bottom)
    _time_axis(bottom, times, label=True)
    return figure_png(fig)


def s3_counts_png(
    counts_per_bucket: np.ndarray,
    mu_per_bucket: np.ndarray,
    variance_per_bucket: np.ndarray,
    histogram: CountHistogram,
    frame: Frame,
) -> bytes:
    """S3: Σ N per bucket over Σ μ ± 3σ (σ² the summed count variances) against time in UTC, with (N − μ)/σ
    beneath; right, one μ band's counts against their law's expected frequencies."""
    counts = np.asarray(counts_per_bucket, dtype=np.float64)
    mu = np.asarray(mu_per_bucket, dtype=np.float64)
    sigma = np.sqrt(np.clip(np.asarray(variance_per_bucket, dtype=np.float64), 0.0, None))
    if not counts.shape == mu.shape == sigma.shape:
        raise ValueError(f"{counts.size} count buckets, {mu.size} μ buckets and {sigma.size} variance buckets")
    times = frame.times(mu.size)
    fig = new_figure()
    grid = fig.add_gridspec(2, 2, width_ratios=(5, 2), height_ratios=(3, 2))
    left = fig.add_subplot(grid[0, 0])
    resid = fig.add_subplot(grid[1, 0], sharex=left)
    right = fig.add_subplot(grid[:, 1])
    _title(fig, frame, "total count over all entities per bucket against its expectation")
    left.fill_between(times, mu - Z_BAND * sigma, mu + Z_BAND * sigma, color=BAND_COLOUR, alpha=0.7, linewidth=0,
                      label="Σ μ ± 3σ")
    left.plot(times, mu, color=TARGET_EDGE, linewidth=1.0, label="Σ μ (expected)")
    left.plot(times, counts, color=REALISED_COLOUR, linewidth=0.9, label="Σ N (drawn)")
    left.set_ylabel("count per bucket", fontsize=FONT["label"])
    left.set_ylim(0, 1.2 * max(float(np.max(mu + Z_BAND * sigma, initial=0)), float(np.max(counts, initial=0)), 1e-9))
    left.legend(loc="upper left", ncols=3, **LEGEND)
    _style(left)
    _time_axis(left, times, label=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (counts - mu) / sigma, 0.0)
    resid.axhspan(-Z_BAND, Z_BAND, color=BAND_COLOUR, alpha=0.7, linewidth=0)
    resid.axhline(0.0, color=TARGET_EDGE, linewidth=0.8)
    resid.plot(times, z, color=REALISED_COLOUR, linewidth=0.8)
    resid.set_ylabel("(N − μ) / σ", fontsize=FONT["label"])
    top = max(4.0, float(np.nanmax(np.abs(z))) * 1.1) if z.size else 4.0
    resid.set_ylim(-top, top)
    _style(resid)
    _time_axis(resid, times, label=True)
    ks = np.arange(histogram.kmax + 1)
    right.bar(ks, histogram.observed, width=0.8, color=TARGET_COLOUR, label="observed")
    right.plot(ks, histogram.expected, color=EXPECTED_COLOUR, marker="o", markersize=3.5, linewidth=1.0,
               label="expected")
    right.set_title(f"rows with {histogram.label}\n({histogram.rows:,} rows)", fontsize=FONT["label"])
    right.set_xlabel("count N of a row", fontsize=FONT["label"])
    right.set_ylabel("rows", fontsize=FONT["label"])
    if histogram.rows:
        right.legend(loc="upper right", **LEGEND)
    else:
        right.text(0.5, 0.5, "no rows in band", ha="center", va="center", fontsize=FONT["label"],
                   transform=right.transAxes)
    _style(right)
    right.margins(x=0.02)
    from matplotlib.ticker import MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure_png(fig)


def outside_band(counts: np.ndarray, mu: np.ndarray, variance: np.ndarray) -> int:
    """How many buckets' Σ N lie outside Σ μ ± 3σ (about 0.27 % of them when the law holds)."""
    sigma = np.sqrt(np.clip(np.asarray(variance, dtype=np.float64), 0.0, None))
    return int((np.abs(np.asarray(counts, dtype=np.float64) - np.asarray(mu, dtype=np.float64)) > Z_BAND * sigma).sum())

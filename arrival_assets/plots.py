"""Pictures for the asset pages: small PNGs drawn from arrays the states already hold while streaming.

Everything here is pure: NumPy arrays in, PNG bytes (or Markdown) out; no file is read. Figures are drawn with
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
from typing import TYPE_CHECKING

import numpy as np

from arrival_core.diagnostics import MAX_GROUPS, CountHistogram

if TYPE_CHECKING:  # matplotlib is imported when a picture is drawn, not when a command starts
    from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGSIZE = (7.0, 3.0)  # inches
DPIS = (90, 72, 60, 48, 36)  # tried in turn until the PNG fits MAX_PNG_BYTES
MAX_PNG_BYTES = 150_000
LABEL_WIDTH = 26  # characters of a group id in a legend

TARGET_COLOUR = "#1f77b4"
REALISED_COLOUR = "#d62728"
BAND_COLOUR = "#9ecae1"
EXPECTED_COLOUR = "#000000"
LEGEND = {"frameon": True, "framealpha": 0.85, "edgecolor": "none"}
ABOVE = {"loc": "lower right", "bbox_to_anchor": (1.0, 1.0), "frameon": False, "borderaxespad": 0.1}


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


def short_label(text: str, width: int = LABEL_WIDTH) -> str:
    """A label of at most `width` characters: its head and tail around an ellipsis (the tail tells groups apart)."""
    if len(text) <= width:
        return text
    tail = (width - 1) * 2 // 3
    head = width - 1 - tail
    return text[:head] + "…" + text[-tail:]


# ---- accumulators ---------------------------------------------------------------------------------------------

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
    from matplotlib.ticker import MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure_png(fig)

"""The asset-page pictures: PNG bytes, size cap, Markdown embedding, expected frequencies and accumulators."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from matplotlib.image import imread

from arrival_assets import plots
from arrival_core import diagnostics

H = 96 * 7
START = np.datetime64("2026-03-02T00:00:00")


def _frame(h: int = H, dataset: str = "s2_realised_intensity_5B") -> plots.Frame:
    return plots.Frame(dataset, "baseline_v1|42", START + np.arange(h) * np.timedelta64(900, "s"))


def _decode(png: bytes) -> np.ndarray:
    return imread(io.BytesIO(png), format="png")


def _s2_inputs(seed: int = 3, h: int = H):
    rng = np.random.default_rng(seed)
    b = np.arange(h)
    target = 50 + 40 * np.sin(b / 96 * 2 * np.pi)
    groups = {
        "baseline|high|card|physical|zg03|b07": np.exp(np.cumsum(rng.normal(scale=0.03, size=h))),
        "baseline|low|card|virtual|zg01|b02": np.exp(0.2 * np.sin(b / 50)),
        "baseline|mid|ach|physical|zg11|b00": np.ones(h),
        "baseline|mid|ach|physical|zg12|b01": np.ones(h),  # a fourth group is left out
    }
    return target, target * np.exp(0.1 * np.sin(b / 30)), groups


def _histogram(seed: int = 4) -> diagnostics.CountHistogram:
    rng = np.random.default_rng(seed)
    mu = rng.random(5_000) * 3
    band = diagnostics.HistogramBand(1.0, 2.0, 10)
    band.add(mu, rng.poisson(mu))
    return band.histogram()


def test_s2_picture_is_a_png_of_the_figure_size():
    png = plots.s2_intensity_png(*_s2_inputs(), _frame())
    assert png.startswith(plots.PNG_SIGNATURE)
    pixels = _decode(png)
    dpi = plots.DPIS[0]
    assert pixels.shape[:2] == (round(plots.FIGSIZE[1] * dpi), round(plots.FIGSIZE[0] * dpi))
    assert pixels.shape[1] >= 900  # legible in the UI's dialog: at least 900 px wide
    assert pixels[..., :3].std() > 0  # something was drawn
    assert len(png) <= plots.MAX_PNG_BYTES


def test_s3_picture_is_a_png_of_the_figure_size():
    rng = np.random.default_rng(5)
    mu = 50 + 40 * np.sin(np.arange(H) / 96 * 2 * np.pi)
    png = plots.s3_counts_png(rng.poisson(mu), mu, mu, _histogram(), _frame(dataset="s3_bucket_counts_5B"))
    assert png.startswith(plots.PNG_SIGNATURE)
    dpi = plots.DPIS[0]
    assert _decode(png).shape[:2] == (round(plots.FIGSIZE[1] * dpi), round(plots.FIGSIZE[0] * dpi))


def test_s3_picture_draws_an_empty_band():
    empty = diagnostics.HistogramBand(100.0, 200.0, 5).histogram()
    png = plots.s3_counts_png(np.zeros(10), np.zeros(10), np.zeros(10), empty, _frame(10))
    assert png.startswith(plots.PNG_SIGNATURE)


def test_pictures_repeat_byte_for_byte_and_carry_no_software_version():
    first = plots.s2_intensity_png(*_s2_inputs(), _frame())
    assert plots.s2_intensity_png(*_s2_inputs(), _frame()) == first
    assert b"matplotlib" not in first.lower() and b"Software" not in first


def test_noisy_long_horizon_stays_under_the_size_cap():
    rng = np.random.default_rng(6)
    h = 20_000
    groups = {f"g{i}": rng.random(h) * 2 for i in range(3)}
    png = plots.s2_intensity_png(rng.random(h) * 1e4, rng.random(h) * 1e4, groups, _frame(h))
    assert len(png) <= plots.MAX_PNG_BYTES
    assert _decode(png).ndim == 3


def test_figure_png_lowers_the_dpi_until_the_file_fits():
    target, realised, groups = _s2_inputs()
    full = plots.s2_intensity_png(target, realised, groups, _frame())
    fig = plots.new_figure()
    ax = fig.subplots()
    ax.plot(target)
    ax.plot(realised)
    small = plots.figure_png(fig, max_bytes=1, dpis=(90, 30))  # nothing fits: the last dpi is kept
    assert _decode(small).shape[:2] == (round(plots.FIGSIZE[1] * 30), round(plots.FIGSIZE[0] * 30))
    fits = plots.figure_png(fig, max_bytes=len(full) * 10, dpis=(90, 30))
    assert _decode(fits).shape[:2] == (round(plots.FIGSIZE[1] * 90), round(plots.FIGSIZE[0] * 90))


def test_markdown_image_round_trips_the_png():
    png = plots.s2_intensity_png(*_s2_inputs(), _frame())
    text = plots.markdown_image(png, "S2 [intensity]\nper bucket")
    head, _, payload = text.partition("](data:image/png;base64,")
    assert head == "![S2 (intensity) per bucket"
    assert payload.endswith(")")
    assert base64.b64decode(payload[:-1], validate=True) == png
    with pytest.raises(ValueError):
        plots.markdown_image(b"GIF89a", "not a png")


def _poisson_reference(mu: np.ndarray, kmax: int) -> list[float]:
    return [sum(math.exp(-m) * m**k / math.factorial(k) for m in mu.tolist()) for k in range(kmax + 1)]


def test_poisson_expected_equals_the_pmf_summed_row_by_row():
    rng = np.random.default_rng(7)
    mu = np.concatenate([rng.random(40) * 12, [0.0, 1e-9, 30.0]])
    got = diagnostics.poisson_expected(mu, 25)
    want = _poisson_reference(mu, 25)
    assert got.shape == (26,)
    assert np.max(np.abs(got - want)) < 1e-12
    assert diagnostics.poisson_expected(np.array([0.0]), 3).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert diagnostics.poisson_expected(np.array([]), 2).tolist() == [0.0, 0.0, 0.0]


def test_nb2_expected_equals_the_pmf_summed_row_by_row():
    rng = np.random.default_rng(8)
    mu, kappa = rng.random(30) * 8, 0.5 + rng.random(30) * 20
    kmax = 20

    def pmf(k: int, m: float, c: float) -> float:
        log = math.lgamma(k + c) - math.lgamma(c) - math.lgamma(k + 1) + c * math.log(c / (c + m))
        return math.exp(log + k * math.log(m / (c + m)))

    want = [sum(pmf(k, m, c) for m, c in zip(mu.tolist(), kappa.tolist(), strict=True)) for k in range(kmax + 1)]
    assert np.max(np.abs(diagnostics.nb2_expected(mu, kappa, kmax) - want)) < 1e-12
    # a very large κ is the Poisson law
    big = np.full(30, 1e9)
    assert np.max(np.abs(diagnostics.nb2_expected(mu, big, kmax) - diagnostics.poisson_expected(mu, kmax))) < 1e-6


def test_bucket_totals_equal_np_add_at_on_random_chunks():
    rng = np.random.default_rng(9)
    buckets = 37
    totals = diagnostics.BucketTotals(buckets)
    want = np.zeros(buckets)
    for size in (0, 1, 500, 1234):
        index = rng.integers(0, buckets, size)
        values = rng.random(size) * 100
        totals.add(index, values)
        np.add.at(want, index, values)
    assert np.allclose(totals.totals, want, rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        totals.add(np.array([buckets]), np.array([1.0]))


def test_bucket_totals_of_whole_entities_equal_the_indexed_sum():
    rng = np.random.default_rng(10)
    buckets, entities = 24, 17
    values = rng.random(buckets * entities)
    blocks, indexed = diagnostics.BucketTotals(buckets), diagnostics.BucketTotals(buckets)
    blocks.add_blocks(values)
    indexed.add(np.tile(np.arange(buckets), entities), values)
    assert np.allclose(blocks.totals, indexed.totals, rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        blocks.add_blocks(values[:-1])


def test_histogram_band_counts_only_its_rows_and_their_expected_frequencies():
    rng = np.random.default_rng(11)
    mu = rng.random(3_000) * 4
    counts = rng.poisson(mu)
    band = diagnostics.HistogramBand(1.0, 2.0, 4)
    band.add(mu[:1_000], counts[:1_000])
    band.add(mu[1_000:], counts[1_000:])
    inside = (mu >= 1.0) & (mu < 2.0)
    hist = band.histogram()
    assert hist.rows == inside.sum()
    assert hist.observed.tolist() == np.bincount(np.minimum(counts[inside], 5), minlength=6)[:5].tolist()
    assert hist.overflow_observed == (counts[inside] > 4).sum()
    assert np.allclose(hist.expected, diagnostics.poisson_expected(mu[inside], 4), rtol=1e-12, atol=0)
    assert hist.overflow_expected == pytest.approx(hist.rows - hist.expected.sum())
    assert hist.label == "μ in [1, 2)"


def test_histogram_band_caps_the_rows_of_a_chunk_deterministically():
    mu = np.full(1_000, 1.5)
    counts = np.arange(1_000) % 3
    band = diagnostics.HistogramBand(1.0, 2.0, 2, row_cap=10)
    band.add(mu, counts)
    assert band.rows == 10
    again = diagnostics.HistogramBand(1.0, 2.0, 2, row_cap=10)
    again.add(mu, counts)
    assert again.observed.tolist() == band.observed.tolist()


def test_largest_groups_are_the_most_populous_first():
    factors = np.arange(5 * 4, dtype=float).reshape(5, 4)
    entity_group = np.array([3, 3, 3, 1, 1, 4, 4, 0])
    top = diagnostics.largest_groups(("a", "b", "c", "d", "e"), entity_group, factors)
    assert list(top) == ["d", "b", "e"]  # 3 entities, then 2 and 2 (ties: the earlier group)
    assert top["d"].tolist() == factors[3].tolist()


def test_group_label_keeps_every_part():
    assert plots.group_label("baseline|office_hours|card_present|physical|zg03|b07") == \
        "baseline · office_hours · card_present · physical · zg03 · b07"


def test_frame_refuses_a_grid_of_another_length():
    with pytest.raises(ValueError, match="bucket starts"):
        plots.s2_intensity_png(*_s2_inputs(), _frame(H - 1))


def test_outside_band_counts_buckets_beyond_three_sigma():
    mu = np.full(6, 100.0)
    counts = np.array([100, 129, 131, 70, 69, 100])  # σ = 10: 131 and 69 lie outside ±30
    assert plots.outside_band(counts, mu, mu) == 2
    assert plots.outside_band(counts, mu, mu * 4) == 0  # σ = 20 (an NB2 variance above μ)


def test_count_variance_is_the_law_variance():
    mu, kappa = np.array([0.0, 2.0, 10.0]), np.array([1.0, 4.0, 5.0])
    assert diagnostics.count_variance(mu).tolist() == [0.0, 2.0, 10.0]
    assert diagnostics.count_variance(mu, kappa).tolist() == [0.0, 3.0, 30.0]  # μ + μ²/κ


def test_plot_markdown_is_the_picture_then_its_facts():
    png = plots.s2_intensity_png(*_s2_inputs(), _frame())
    text = plots.plot_markdown(png, "alt", [("Σ N", 5), ("group", "a|b")])
    image, table = text.split("\n\n")
    assert image == plots.markdown_image(png, "alt")
    assert table.splitlines()[2:] == ["| Σ N | 5 |", "| group | a\\|b |"]


@pytest.mark.parametrize(("days", "minor", "day_lines"), [(7, 3 * 7, 0), (90, 0, 89)])
def test_the_time_axis_marks_six_hours_on_short_grids_and_days_by_one_line_collection_on_long_ones(days, minor,
                                                                                                    day_lines):
    from matplotlib.collections import LineCollection

    h = 24 * days  # hourly buckets
    times = plots.Frame("s2_realised_intensity_5B", "baseline_v1|42",
                        START + np.arange(h) * np.timedelta64(3600, "s")).times(h)
    fig = plots.new_figure()
    ax = fig.subplots()
    ax.plot(times, np.ones(h))
    plots._time_axis(ax, times, label=True)
    fig.canvas.draw()
    inside = [t for t in ax.xaxis.get_minorticklocs() if ax.get_xlim()[0] < t < ax.get_xlim()[1]]
    assert len(inside) == minor  # 06:00, 12:00 and 18:00 of each day
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in lines) == day_lines  # each day's start after the first


def test_pictures_started_while_the_state_publishes_count_the_cpu_they_took_so_far(monkeypatch):
    """A state's pictures may start before it returns (`Pictures.start` as its `diagnosed`): the CPU seconds they
    took until the state returned are read from their thread's clock, so the step's line counts them apart from
    the state's; the first diagnostics given are drawn, later starts are ignored."""
    import threading
    import time

    from arrival_assets.assets import states

    if not states.early_pictures():
        pytest.skip("no per-thread CPU clock here: the pictures start once the state returned")
    release = threading.Event()

    def draw(diagnostics, partition):
        started = time.thread_time()
        while time.thread_time() - started < 0.05:  # 50 ms of CPU, then a wait that takes none
            pass
        release.wait(10)
        return states.Drawn({partition: dict(diagnostics)}, None, 0.0, time.thread_time() - started)

    monkeypatch.setattr(states, "draw_pictures", draw)
    pictures = states.Pictures("baseline_v1|42")
    assert pictures.cpu_so_far() == 0.0
    pictures.start({"drawn": "first"})
    deadline = time.monotonic() + 10
    while pictures.cpu_so_far() < 0.05 and time.monotonic() < deadline:
        time.sleep(0.01)
    so_far = pictures.cpu_so_far()
    assert 0.05 <= so_far < 1.0
    pictures.start({"drawn": "second"})
    release.set()
    drawn = pictures.drawn({"drawn": "third"})
    assert drawn.pictures == {"baseline_v1|42": {"drawn": "first"}}
    assert pictures.cpu_so_far() == drawn.cpu >= so_far

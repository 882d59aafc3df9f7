"""The world looks like merchant traffic where it matters downstream: closed hours, class peaks in local time
(DST included), surge windows, heavy-tailed sizes, chains and channels, virtual merchants, poolable groups."""
from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from worldlib import (
    ENTITY,
    group_ids,
    grouping_policy,
    horizon_start,
    local_clock,
    meets_targets,
    read,
    realism,
    surface,
)

from arrival_core.world import load_profile, world_identity
from arrival_core.world.merchants import draw_population

LAMBDA = "lambda_local_scenario"
BUCKET = "local_horizon_bucket_index"
ZONE = ["merchant_id", "legal_country_iso", "tzid"]


def _classes(world) -> pl.DataFrame:
    return read(world, "merchant_zone_profile_5A").select(*ZONE, "demand_class")


def _with_clock(world, lam: pl.DataFrame) -> pl.DataFrame:
    """Attach each bucket's local clock (system zoneinfo) and the entity's demand class."""
    clock = local_clock(lam["tzid"].unique().sort().to_list(), horizon_start(world), world.buckets)
    classes = _classes(world)
    return (lam.join(clock, left_on=["tzid", BUCKET], right_on=["tzid", "bucket_index"])
            .join(classes, on=ZONE))


def _surge_multiplier(world, scenario_id: str) -> pl.DataFrame:
    """The multiplier the profile's surges give each (demand class, bucket), computed here from the YAML."""
    spec = load_profile(world.profile)
    raw = next(s for s in spec.content["profile"]["scenarios"] if s["scenario_id"] == scenario_id)
    start = horizon_start(world)
    classes = list(spec.shapes.classes)
    factor = np.ones((len(classes), world.buckets))
    for window in raw.get("surges", []):
        lo, hi = (datetime.fromisoformat(window[k]) for k in ("start_utc", "end_utc"))
        first, last = int((lo - start) / timedelta(hours=1)), int((hi - start) / timedelta(hours=1))
        for c in window.get("demand_classes", classes):
            factor[classes.index(c), first:last] *= window["multiplier"]
    return pl.DataFrame({
        "demand_class": np.repeat(classes, world.buckets),
        BUCKET: np.tile(np.arange(world.buckets, dtype=np.int32), len(classes)),
        "multiplier": factor.ravel(),
    })


def test_closed_hours_have_exactly_zero_lambda(tiny_world):
    lam = _with_clock(tiny_world, surface(tiny_world, "baseline_v1"))
    assert (lam[LAMBDA] == 0).sum() > 0
    office = lam.filter(pl.col("demand_class") == "office_hours")
    hour, weekday = pl.col("local_hour"), pl.col("local_weekday")
    night_or_weekend = (weekday >= 6) | (hour < 6) | (hour >= 20)
    closed = office.filter(night_or_weekend)[LAMBDA]
    assert closed.len() > 0 and (closed == 0.0).all()
    assert (office.filter(~night_or_weekend)[LAMBDA] > 0).any()


def test_demand_classes_peak_at_their_own_local_hours(demo_world):
    lam = _with_clock(demo_world, surface(demo_world, "baseline_v1"))
    by_hour = lam.group_by("demand_class", "local_hour").agg(pl.col(LAMBDA).sum())
    peaks = dict(by_hour.sort(LAMBDA).group_by("demand_class").agg(pl.col("local_hour").last()).iter_rows())
    assert len(set(peaks.values())) >= 4, peaks
    assert 9 <= peaks["office_hours"] <= 11  # late morning
    assert peaks["evening_dining"] in (19, 20)
    assert peaks["nightlife"] in (23, 0, 1)
    assert peaks["office_hours"] != peaks["evening_dining"]


def _switching_zones(world, tzids: list[str]) -> list[str]:
    start = horizon_start(world)
    end = start + timedelta(hours=world.buckets)
    def offset(instant, tzid):
        return instant.astimezone(ZoneInfo(tzid)).utcoffset()

    return [t for t in tzids if offset(start, t) != offset(end, t)]


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_a_dst_switch_moves_the_local_peak_one_utc_hour_earlier(world_name, request):
    world = request.getfixturevalue(world_name)
    spec = load_profile(world.profile)
    shapes = spec.content["shapes"]["demand_classes"]
    midnight_classes = [c for c, s in shapes.items() if s["day_start_hour"] == 0]
    lam = surface(world, "baseline_v1")
    switching = _switching_zones(world, lam["tzid"].unique().to_list())
    lam = _with_clock(world, lam.filter(pl.col("tzid").is_in(switching)))
    lam = lam.filter(pl.col("demand_class").is_in(midnight_classes))
    days = (lam.group_by(*ENTITY, "local_date")
            .agg(n=pl.len(), top=pl.col(LAMBDA).max(),
                 local_peak=pl.col("local_hour").sort_by(LAMBDA).last(),
                 utc_peak=pl.col("utc_hour").sort_by(LAMBDA).last(),
                 offset=pl.col("utc_offset_minutes").sort_by(LAMBDA).last())
            .filter((pl.col("n") >= 23) & (pl.col("top") > 0))
            .sort(*ENTITY, "local_date"))
    checked = 0
    for (_key, frame) in days.group_by(ENTITY, maintain_order=True):
        assert frame["local_peak"].n_unique() == 1  # the peak stays put in local time...
        offsets = frame["offset"].to_list()
        if len(set(offsets)) == 1:
            continue  # every open day of this entity falls on one side of the switch
        assert offsets == sorted(offsets) and len(set(offsets)) == 2 and offsets[-1] - offsets[0] == 60
        by_offset = frame.group_by("offset").agg(pl.col("utc_peak").unique()).sort("offset")
        by_offset = by_offset["utc_peak"].to_list()
        assert [len(hours) for hours in by_offset] == [1, 1]
        before, after = by_offset[0][0], by_offset[1][0]
        assert after == (before - 1) % 24  # ...so in UTC it moves one hour earlier when clocks spring forward
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_stress_exceeds_baseline_inside_surge_windows_and_equals_it_outside(world_name, request):
    world = request.getfixturevalue(world_name)
    base = surface(world, "baseline_v1")
    stress = surface(world, "stress_v1")
    assert stress.select(*ENTITY, BUCKET).equals(base.select(*ENTITY, BUCKET))
    classes = _classes(world)
    both = (base.select(*ENTITY, BUCKET, pl.col(LAMBDA).alias("base"))
            .with_columns(stress=stress[LAMBDA])
            .join(classes, on=ZONE)
            .join(_surge_multiplier(world, "stress_v1"), on=["demand_class", BUCKET]))
    outside = both.filter(pl.col("multiplier") == 1.0)
    inside = both.filter(pl.col("multiplier") > 1.0)
    assert outside.height > 0 and inside.height > 0
    assert (outside["stress"] == outside["base"]).all()  # exactly, not approximately
    open_inside = inside.filter(pl.col("base") > 0)
    assert open_inside.height > 0 and (open_inside["stress"] > open_inside["base"]).all()
    assert (inside.filter(pl.col("base") == 0)["stress"] == 0).all()
    np.testing.assert_allclose(inside["stress"], inside["base"] * inside["multiplier"], rtol=1e-12)


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_top_one_percent_of_entities_carry_at_least_a_tenth_of_lambda(world_name, request):
    world = request.getfixturevalue(world_name)
    totals = surface(world, "baseline_v1").group_by(ENTITY).agg(pl.col(LAMBDA).sum())[LAMBDA].to_numpy()
    totals = np.sort(totals)[::-1]
    top = math.ceil(0.01 * totals.size)
    assert totals[:top].sum() / totals.sum() >= 0.10


def test_large_merchants_trade_in_several_zones_and_on_both_channels(demo_world):
    lam = surface(demo_world, "baseline_v1")
    merchants = (lam.group_by("merchant_id")
                 .agg(pl.col(LAMBDA).sum(), zones=pl.struct("legal_country_iso", "tzid").n_unique(),
                      channels=pl.col("channel_group").n_unique())
                 .sort(LAMBDA, descending=True))
    top = merchants.head(math.ceil(0.02 * merchants.height))
    assert (top["zones"] >= 2).mean() >= 0.9
    assert (top["channels"] == 2).mean() >= 0.5
    assert (merchants["channels"] == 1).mean() >= 0.5  # most small merchants keep to one channel


def test_virtual_only_merchants_exist_and_trade_mostly_card_not_present(demo_world):
    modes = read(demo_world, "virtual_classification_3B", seed=42)
    assert set(modes["virtual_mode"].unique()) == {"NON_VIRTUAL", "HYBRID", "VIRTUAL_ONLY"}
    entities = (surface(demo_world, "baseline_v1").select(ENTITY).unique()
                .join(modes.select("merchant_id", "virtual_mode"), on="merchant_id"))
    virtual = entities.filter(pl.col("virtual_mode") == "VIRTUAL_ONLY")
    assert (virtual["channel_group"] == "card_not_present").mean() >= 0.8


def _domain(world, scenario_id: str) -> pl.DataFrame:
    entities = surface(world, scenario_id).select(ENTITY).unique()
    classes = _classes(world)
    modes = read(world, "virtual_classification_3B", seed=world.seeds[0])
    modes = modes.select("merchant_id", "virtual_mode")
    return entities.join(classes, on=ZONE).join(modes, on="merchant_id")


def test_demo_world_passes_the_grouping_realism_targets(demo_world):
    policy = grouping_policy()
    targets = policy["realism_targets"]
    for scenario_id, band in (("baseline_v1", "baseline"), ("stress_v1", "stress")):
        domain = _domain(demo_world, scenario_id)
        assert domain.height >= targets["min_entities"]  # so S1 enforces the targets on this world
        metrics = realism(group_ids(domain, band, policy))
        assert meets_targets(metrics, targets) == [], metrics


def test_reference_world_passes_the_grouping_realism_targets_with_about_2000_groups():
    spec = load_profile("reference")
    mf = world_identity(spec, spec.world_seed).manifest_fingerprint
    population = draw_population(spec.population, spec.zones, spec.entities, mf)
    domain = population.entities.select(*ENTITY, "demand_class").join(
        population.merchants.select("merchant_id", "virtual_mode"), on="merchant_id")
    policy = grouping_policy()
    metrics = realism(group_ids(domain, "baseline", policy))
    assert meets_targets(metrics, policy["realism_targets"]) == [], metrics
    assert 1_500 <= metrics["groups"] <= 3_000, metrics


def test_switching_zones_are_found_in_both_test_worlds(tiny_world, demo_world):
    # Guards the DST test above from passing vacuously: each world holds zones whose offset changes.
    assert "America/New_York" in _switching_zones(tiny_world, ["America/New_York", "Asia/Tokyo"])
    assert _switching_zones(demo_world, ["Europe/London", "America/Toronto", "Asia/Tokyo"]) == [
        "Europe/London", "America/Toronto"]
    assert datetime(2026, 3, 29, tzinfo=UTC) < horizon_start(demo_world) + timedelta(hours=demo_world.buckets)

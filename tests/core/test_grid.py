"""S1 time grid: bucket count and bounds, alignment and guardrails from the policy, local annotations across DST."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import yaml

from arrival_core import contracts
from arrival_core.errors import ArrivalError
from arrival_core.grid import bucket_count, build_grid, parse_time_grid_policy, scenario_band

POLICY_DOC = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "time_grid_policy_5B.yaml").read_text())
POLICY = parse_time_grid_policy(POLICY_DOC, where="time_grid_policy_5B.yaml")
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)


def _scenario(start: datetime = MONDAY, days: float = 7, *, stress: bool = False) -> dict:
    return {"scenario_id": "stress_v1" if stress else "baseline_v1", "horizon_start_utc": start,
            "horizon_end_utc": start + timedelta(days=days), "is_baseline": not stress, "is_stress": stress}


def test_week_of_hours_gives_168_contiguous_buckets():
    grid = build_grid(_scenario(), POLICY, where="p")
    assert grid.height == 168
    assert grid["bucket_index"].to_list() == list(range(168))
    assert grid["bucket_start_utc"][0] == MONDAY
    assert grid["bucket_end_utc"][167] == MONDAY + timedelta(days=7)
    assert (grid["bucket_end_utc"] - grid["bucket_start_utc"]).unique().to_list() == [timedelta(hours=1)]
    assert grid["bucket_start_utc"][1:].equals(grid["bucket_end_utc"][:-1], check_names=False)
    assert grid["bucket_duration_seconds"].unique().to_list() == [3600]


def test_bucket_duration_comes_from_the_policy():
    quarter = replace(POLICY, bucket_duration_seconds=900)
    grid = build_grid(_scenario(days=1), quarter, where="p")
    assert grid.height == 96
    assert grid["bucket_end_utc"][0] - grid["bucket_start_utc"][0] == timedelta(minutes=15)


def test_flags_and_band_follow_the_manifest():
    grid = build_grid(_scenario(stress=True), POLICY, where="p")
    assert grid.select("is_baseline", "is_stress", "scenario_band").unique().rows() == [(False, True, "stress")]
    assert scenario_band(_scenario()) == "baseline"


def test_utc_annotations_give_iso_weekday_minutes_and_weekend():
    grid = build_grid(_scenario(), POLICY, where="p")
    assert grid["local_day_of_week"][0] == 1  # 2026-03-02 is a Monday
    assert grid["local_minutes_since_midnight"][:3].to_list() == [0, 60, 120]
    saturday = grid.filter(pl.col("bucket_index") == 5 * 24 + 13)
    assert saturday["local_day_of_week"][0] == 6
    assert saturday["local_minutes_since_midnight"][0] == 13 * 60
    assert grid.group_by("local_day_of_week").agg(pl.col("is_weekend").all()).sort("local_day_of_week")[
        "is_weekend"].to_list() == [False] * 5 + [True] * 2


def test_local_annotations_follow_the_reference_zone_across_dst():
    london = replace(POLICY, reference_tzid="Europe/London")
    grid = build_grid(_scenario(datetime(2026, 3, 28, tzinfo=UTC), days=2), london, where="p")
    # Clocks go forward at 01:00 UTC on Sunday 29 March 2026: 00:00 UTC is 00:00 GMT, 01:00 UTC is 02:00 BST.
    sunday = grid.filter(pl.col("bucket_index").is_between(24, 26))
    assert sunday["local_minutes_since_midnight"].to_list() == [0, 120, 180]
    assert sunday["local_day_of_week"].to_list() == [7, 7, 7]


@pytest.mark.parametrize("field", ["horizon_start_utc", "horizon_end_utc"])
def test_horizon_off_a_bucket_boundary_is_misaligned(field):
    scenario = _scenario()
    scenario[field] += timedelta(minutes=30)
    with pytest.raises(ArrivalError) as err:
        build_grid(scenario, POLICY, where="time_grid_policy_5B.yaml")
    assert err.value.code == "5B.S1.HORIZON_MISALIGNED"
    assert err.value.context["column"] == field and "baseline_v1" in err.value.message


def test_alignment_is_to_the_policy_bucket_not_the_hour():
    start = MONDAY + timedelta(minutes=15)
    assert bucket_count(_scenario(start, days=1), replace(POLICY, bucket_duration_seconds=900), where="p") == 96
    with pytest.raises(ArrivalError) as err:
        bucket_count(_scenario(start, days=1), POLICY, where="p")
    assert err.value.code == "5B.S1.HORIZON_MISALIGNED"


@pytest.mark.parametrize(
    "days, policy_change, text",
    [
        (401, {}, "horizon of 401 days outside [1, 400]"),
        (0, {}, "horizon of 0 days"),
        (-2, {}, "horizon of -2 days"),
        (10, {"max_buckets_per_scenario": 239}, "240 buckets > max_buckets_per_scenario 239"),
        (3, {"min_horizon_days": 7.0}, "horizon of 3 days outside [7, 400]"),
    ],
)
def test_horizon_outside_the_guardrails_is_a_breach(days, policy_change, text):
    with pytest.raises(ArrivalError) as err:
        build_grid(_scenario(days=days), replace(POLICY, **policy_change), where="time_grid_policy_5B.yaml")
    assert err.value.code == "5B.S1.GRID_GUARDRAIL_BREACH"
    assert text in err.value.message


def test_policy_without_local_annotations_is_refused():
    doc = {**POLICY_DOC, "local_annotations": {"emit": False, "reference_tzid": "Etc/UTC"}}
    with pytest.raises(ArrivalError) as err:
        parse_time_grid_policy(doc, where="time_grid_policy_5B.yaml")
    assert err.value.code == "5B.S1.POLICY_INVALID"
    assert err.value.context["field"] == "local_annotations.emit"


def test_policy_with_an_unknown_reference_zone_is_refused():
    doc = {**POLICY_DOC, "local_annotations": {"emit": True, "reference_tzid": "Mars/Olympus_Mons"}}
    with pytest.raises(ArrivalError) as err:
        parse_time_grid_policy(doc, where="time_grid_policy_5B.yaml")
    assert err.value.code == "5B.S1.POLICY_INVALID"
    assert "Mars/Olympus_Mons" in err.value.message

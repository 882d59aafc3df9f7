"""S1 time grid: one row per bucket of a scenario's horizon, its UTC bounds, flags and local-time annotations."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from .errors import ArrivalError, error_code

SECONDS_PER_DAY = 86_400
_MICROS = 1_000_000


@dataclass(frozen=True)
class TimeGridPolicy:
    """The parsed `time_grid_policy_5B` (schema-valid already; S0 sealed it)."""

    version: str
    bucket_duration_seconds: int
    alignment_mode: str
    min_horizon_days: float
    max_horizon_days: float
    max_buckets_per_scenario: int
    reference_tzid: str


def parse_time_grid_policy(doc: Mapping, *, where: str) -> TimeGridPolicy:
    """Return the time-grid policy as a frozen value; refuse settings the grid contract cannot express."""

    def invalid(field: str, why: str) -> ArrivalError:
        return ArrivalError(error_code("S1", "POLICY_INVALID"), f"{where}: {field}: {why}", file=where, field=field)

    guardrails, local = doc["guardrails"], doc["local_annotations"]
    if not local["emit"]:
        raise invalid("local_annotations.emit", "false is not supported: s1_time_grid_5B requires local annotations")
    if guardrails["min_horizon_days"] > guardrails["max_horizon_days"]:
        raise invalid("guardrails", "min_horizon_days exceeds max_horizon_days")
    try:
        pl.Series([datetime(2000, 1, 1, tzinfo=UTC)]).dt.convert_time_zone(local["reference_tzid"])
    except Exception as exc:  # noqa: BLE001 - Polars raises several types for an unknown zone
        raise invalid("local_annotations.reference_tzid", f"{local['reference_tzid']!r} is not a known time zone ({exc})")
    return TimeGridPolicy(
        version=doc["version"],
        bucket_duration_seconds=int(doc["bucket_duration_seconds"]),
        alignment_mode=doc["alignment_mode"],
        min_horizon_days=float(guardrails["min_horizon_days"]),
        max_horizon_days=float(guardrails["max_horizon_days"]),
        max_buckets_per_scenario=int(guardrails["max_buckets_per_scenario"]),
        reference_tzid=local["reference_tzid"],
    )


def _to_micros(value: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime (no float rounding)."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * SECONDS_PER_DAY + delta.seconds) * _MICROS + delta.microseconds


def bucket_count(scenario: Mapping, policy: TimeGridPolicy, *, where: str) -> int:
    """Check the scenario horizon's alignment and guardrails; return its number of buckets H."""
    sid = scenario["scenario_id"]
    start, end = scenario["horizon_start_utc"], scenario["horizon_end_utc"]
    step = policy.bucket_duration_seconds * _MICROS
    start_us, end_us = _to_micros(start), _to_micros(end)
    for field, value, micros in (("horizon_start_utc", start, start_us), ("horizon_end_utc", end, end_us)):
        if micros % step:
            raise ArrivalError(
                error_code("S1", "HORIZON_MISALIGNED"),
                f"{where}: scenario {sid}: {field} {value.isoformat()} is not on a {policy.bucket_duration_seconds}-second "
                f"bucket boundary of time_grid_policy_5B ({policy.alignment_mode})",
                file=where, scenario_id=sid, column=field, value=value.isoformat(),
                bucket_duration_seconds=policy.bucket_duration_seconds,
            )
    days = (end_us - start_us) / (SECONDS_PER_DAY * _MICROS)
    buckets = (end_us - start_us) // step
    breaches = []
    if not policy.min_horizon_days <= days <= policy.max_horizon_days:
        breaches.append(f"horizon of {days:g} days outside [{policy.min_horizon_days:g}, {policy.max_horizon_days:g}]")
    if buckets > policy.max_buckets_per_scenario:
        breaches.append(f"{buckets} buckets > max_buckets_per_scenario {policy.max_buckets_per_scenario}")
    if breaches:
        raise ArrivalError(
            error_code("S1", "GRID_GUARDRAIL_BREACH"),
            f"{where}: scenario {sid} ({start.isoformat()} .. {end.isoformat()}): " + "; ".join(breaches),
            file=where, scenario_id=sid, horizon_days=days, buckets=buckets,
        )
    return int(buckets)


def build_grid(scenario: Mapping, policy: TimeGridPolicy, *, where: str) -> pl.DataFrame:
    """Return the scenario's buckets 0..H-1 with UTC bounds, flags and annotations in `reference_tzid` local time."""
    buckets = bucket_count(scenario, policy, where=where)
    step = policy.bucket_duration_seconds * _MICROS
    start_us = _to_micros(scenario["horizon_start_utc"])
    index = pl.int_range(0, buckets, dtype=pl.Int32, eager=True).alias("bucket_index")
    starts = (pl.lit(start_us, dtype=pl.Int64) + index.cast(pl.Int64) * step)
    grid = pl.DataFrame(index).with_columns(
        starts.cast(pl.Datetime("us", "UTC")).alias("bucket_start_utc"),
        (starts + step).cast(pl.Datetime("us", "UTC")).alias("bucket_end_utc"),
    )
    local = pl.col("bucket_start_utc").dt.convert_time_zone(policy.reference_tzid)
    return grid.with_columns(
        pl.lit(policy.bucket_duration_seconds, dtype=pl.Int32).alias("bucket_duration_seconds"),
        pl.lit(bool(scenario["is_baseline"])).alias("is_baseline"),
        pl.lit(bool(scenario["is_stress"])).alias("is_stress"),
        pl.lit(scenario_band(scenario)).alias("scenario_band"),
        local.dt.weekday().cast(pl.Int8).alias("local_day_of_week"),
        (local.dt.hour().cast(pl.Int16) * 60 + local.dt.minute().cast(pl.Int16)).alias("local_minutes_since_midnight"),
        (local.dt.weekday() >= 6).alias("is_weekend"),
    )


def scenario_band(scenario: Mapping) -> str:
    """Return baseline or stress from the manifest flags (S0 guarantees exactly one is set)."""
    return "baseline" if scenario["is_baseline"] else "stress"

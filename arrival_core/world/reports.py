"""What each upstream segment's bundle reports about the world (seed-invariant facts, no clock values)."""
from __future__ import annotations

from typing import Any

import polars as pl

from ..encoding import canonical_json
from .merchants import Population
from .profiles import Profile
from .shapes import SLOTS_PER_WEEK

LAYER1_SEGMENTS = ("1A", "1B", "2A", "2B", "3A", "3B")


def json_member(obj: Any) -> bytes:
    """Return a bundle member's bytes: canonical JSON and a newline."""
    return canonical_json(obj) + b"\n"


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counted = frame[column].value_counts().sort(column)
    return dict(zip(counted[column].cast(pl.String).to_list(), counted["count"].to_list()))


def segment_facts(spec: Profile, population: Population) -> dict[str, dict[str, Any]]:
    """Return, per layer-1 segment, the counts its bundle vouches for."""
    ent, mer = population.entities, population.merchants
    zones = ent.select("legal_country_iso", "tzid").unique().sort("legal_country_iso", "tzid")
    zone_counts = (ent.group_by("merchant_id")
                   .agg(pl.struct("legal_country_iso", "tzid").n_unique().cast(pl.String).alias("zones")))
    horizon = spec.horizon
    return {
        "1A": {"merchants": mer.height, "merchants_by_demand_class": _counts(mer, "demand_class")},
        "1B": {"zones": [list(z) for z in zip(zones["legal_country_iso"].to_list(), zones["tzid"].to_list())],
               "entities_by_country": _counts(ent, "legal_country_iso")},
        "2A": {"tzids": sorted(set(spec.zones.tzids)), "horizon_start_utc": horizon.start.isoformat(),
               "horizon_days": horizon.days, "bucket_seconds": horizon.bucket_seconds,
               "weekly_slots": SLOTS_PER_WEEK},
        "2B": {"entities": ent.height, "entities_by_channel_group": _counts(ent, "channel_group")},
        "3A": {"merchant_zones": ent.select("merchant_id", "legal_country_iso", "tzid").n_unique(),
               "merchants_by_zone_count": _counts(zone_counts, "zones")},
        "3B": {"merchants_by_virtual_mode": _counts(mer, "virtual_mode")},
    }

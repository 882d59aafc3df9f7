"""The zone catalogue (countries, IANA zones, weights) and each zone's local clock, DST included."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from ..encoding import load_yaml
from ..errors import ArrivalError, error_code

_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class Zones:
    """The zones a profile trades in, in catalogue order: (country, tzid) pairs and their relative weights."""

    countries: tuple[str, ...]
    tzids: tuple[str, ...]
    weights: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.tzids)


def load_zones(
    path: Path, countries: Sequence[str] | None = None, tzids: Sequence[str] | None = None
) -> tuple[Zones, Any]:
    """Read the catalogue, keep the given countries and zones (all when None); return them and the doc."""
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
        rows = [(str(z["country"]), str(z["tzid"]), float(z["weight"])) for z in doc["zones"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise _invalid(path, f"cannot be read as a zone catalogue: {exc}") from exc
    bad = [c for c, _, _ in rows if not _COUNTRY_RE.fullmatch(c)]
    if bad:
        raise _invalid(path, f"country {bad[0]!r} is not an ISO 3166-1 alpha-2 code "
                             "(quote NO, which YAML reads as false)")
    pairs = [(c, t) for c, t, _ in rows]
    if len(set(pairs)) != len(pairs):
        raise _invalid(path, "a (country, tzid) pair is listed twice")
    if any(w <= 0 for _, _, w in rows):
        raise _invalid(path, "every zone weight must be > 0")
    for position, wanted in ((0, countries), (1, tzids)):
        if wanted is None:
            continue
        unknown = sorted(set(wanted) - {r[position] for r in rows})
        if unknown:
            raise _invalid(path, f"{['countries', 'tzids'][position]} {unknown} are not in the catalogue")
        rows = [r for r in rows if r[position] in set(wanted)]
    if not rows:
        raise _invalid(path, "the profile's filters keep no zone")
    return Zones(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows)), doc


def local_slots(tzids: Sequence[str], start: datetime, buckets: int, bucket_seconds: int) -> np.ndarray:
    """Return the local weekly slot (weekday*24 + hour, Monday 00h = 0) of each bucket start, (zones, H).

    One vector conversion per zone with the time-zone database Polars ships, so DST shifts fall where they do.
    """
    step = timedelta(seconds=bucket_seconds)
    utc = pl.datetime_range(start, start + (buckets - 1) * step, step, time_unit="us", time_zone="UTC",
                            eager=True)
    slots = np.empty((len(tzids), buckets), dtype=np.int16)
    for z, tzid in enumerate(tzids):  # one vector conversion per zone
        try:
            local = utc.dt.convert_time_zone(tzid)
        except Exception as exc:  # Polars raises its own error kinds for an unknown zone
            raise ArrivalError(error_code("WORLD", "PROFILE_INVALID"), f"time zone {tzid!r} is not known: {exc}",
                               tzid=tzid) from exc
        weekday = local.dt.weekday().to_numpy().astype(np.int16) - 1  # ISO 1..7 -> 0..6
        slots[z] = weekday * 24 + local.dt.hour().to_numpy().astype(np.int16)
    return slots


def _invalid(path: Path, message: str) -> ArrivalError:
    return ArrivalError(error_code("WORLD", "PROFILE_INVALID"), f"{path}: {message}", file=str(path))

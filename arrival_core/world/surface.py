"""The deterministic λ surface: weekly volume × the class's local-time shape × the surge multipliers."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from .merchants import ENTITY_KEY
from .profiles import Horizon, ScenarioSpec

SECONDS_PER_HOUR = 3600


def surge_multipliers(scenario: ScenarioSpec, horizon: Horizon, classes: tuple[str, ...]) -> np.ndarray:
    """Return a scenario's (class, bucket) multipliers: 1 outside its surges, their product inside."""
    starts = horizon.start.timestamp() + horizon.bucket_seconds * np.arange(horizon.buckets)
    out = np.ones((len(classes), horizon.buckets), dtype=np.float64)
    for surge in scenario.surges:  # a handful of windows, each a vector update
        inside = (starts >= surge.start.timestamp()) & (starts < surge.end.timestamp())
        names = surge.demand_classes or classes
        rows = [classes.index(c) for c in names]
        out[np.ix_(rows, inside)] *= surge.multiplier
    return out


@dataclass(frozen=True)
class SurfaceLaw:
    """Everything λ depends on besides the entity: shapes, local slots per zone and the bucket scale."""

    weights: np.ndarray  # (classes, 168) weekly shape, each row sums to 1
    slots: np.ndarray  # (zones, buckets) local weekday*24 + hour of each bucket start
    bucket_scale: float  # bucket length in hours: λ per bucket = weekly × hourly weight × this

    def baseline(self, weekly: np.ndarray, class_index: np.ndarray, zone: np.ndarray) -> np.ndarray:
        """Return baseline λ, shape (entities, buckets); closed hours are exactly 0."""
        return weekly[:, None] * self.weights[class_index[:, None], self.slots[zone]] * self.bucket_scale

    def scenario(
        self, weekly: np.ndarray, class_index: np.ndarray, zone: np.ndarray, multipliers: np.ndarray
    ) -> np.ndarray:
        """Return a scenario's λ: the baseline times the multipliers (exactly the baseline where 1)."""
        return self.baseline(weekly, class_index, zone) * multipliers[class_index]


def surface_frames(
    entities: pl.DataFrame,
    law: SurfaceLaw,
    multipliers: np.ndarray,
    manifest_fingerprint: str,
    scenario_id: str,
    chunk_entities: int,
) -> Iterator[pl.DataFrame]:
    """Yield a scenario's λ rows in writer order (entity key, then bucket), whole entities per chunk."""
    buckets = law.slots.shape[1]
    bucket_index = np.arange(buckets, dtype=np.int32)
    for start in range(0, entities.height, chunk_entities):  # chunks of whole entities, vector bodies
        chunk = entities.slice(start, chunk_entities)
        lam = law.scenario(chunk["weekly"].to_numpy(), chunk["class_index"].to_numpy(),
                           chunk["zone"].to_numpy(), multipliers)
        keys = chunk.select(ENTITY_KEY)[np.repeat(np.arange(chunk.height), buckets)]
        yield keys.select(
            pl.lit(manifest_fingerprint, dtype=pl.String).alias("manifest_fingerprint"),
            pl.lit(scenario_id, dtype=pl.String).alias("scenario_id"),
            *ENTITY_KEY,
            pl.Series("local_horizon_bucket_index", np.tile(bucket_index, chunk.height)),
            pl.Series("lambda_local_scenario", lam.ravel()),
        )

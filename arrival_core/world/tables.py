"""The world's tables as frames (manifest, zone profile, virtual classification) and their parquet bytes."""
from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import pyarrow as pa

from .. import contracts, table_schema
from ..sink import ParquetSink
from ..store import Store
from .merchants import Population
from .profiles import Profile


def arrow_schema(dataset_id: str, store: Store) -> pa.Schema:
    """Return the Arrow schema a dataset's table schema gives (the dtypes every writer of it uses)."""
    dtypes = table_schema.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    return pl.DataFrame(schema=dtypes).to_arrow().schema


# The 5A writer's format, fixed: the bundle records each file's sha256, and the manifest fingerprint (so every
# 5B identity and RNG stream) depends on those bytes.
UPSTREAM_PARQUET_OPTIONS = {
    "compression": "zstd", "compression_level": 1, "use_dictionary": True, "write_statistics": True,
    "store_schema": False,
}


def parquet_bytes(frames: Iterable[pl.DataFrame], schema: pa.Schema) -> tuple[pa.Buffer, int]:
    """Encode frames (already in writer order) as one parquet file in memory, in the store's fixed row groups.

    In memory so the 5A bundle can carry each file's sha256 before the transaction publishes anything.
    """
    out = pa.BufferOutputStream()
    sink = ParquetSink(out, schema, options=UPSTREAM_PARQUET_OPTIONS)
    for frame in frames:
        sink.write(frame)
    sink.close()
    return out.getvalue(), sink.rows


def scenario_manifest(spec: Profile) -> pl.DataFrame:
    """Return scenario_manifest_5A: one row per scenario on the profile's horizon, by scenario_id."""
    scenarios = sorted(spec.scenarios, key=lambda s: s.scenario_id)
    n = len(scenarios)
    return pl.DataFrame(
        {
            "scenario_id": [s.scenario_id for s in scenarios],
            "scenario_version": [s.scenario_version for s in scenarios],
            "is_baseline": [s.is_baseline for s in scenarios],
            "is_stress": [s.is_stress for s in scenarios],
            "horizon_start_utc": [spec.horizon.start] * n,
            "horizon_end_utc": [spec.horizon.end] * n,
            "labels": [list(s.labels) for s in scenarios],
        },
        schema=table_schema.polars_schema(contracts.dataset("scenario_manifest_5A").schema_ref),
    )


def zone_profile(population: Population, mf: str) -> pl.DataFrame:
    """Return merchant_zone_profile_5A: each merchant zone's class and weekly arrivals over channels."""
    return (
        population.entities.group_by("merchant_id", "legal_country_iso", "tzid", maintain_order=True)
        .agg(pl.col("demand_class").first(), pl.col("weekly").sum().alias("expected_weekly_arrivals"))
        .select(pl.lit(mf, dtype=pl.String).alias("manifest_fingerprint"), pl.all())
    )


def virtual_classification(population: Population, mf: str, seed: int) -> pl.DataFrame:
    """Return virtual_classification_3B for a seed: the seed column is the only thing the seed changes."""
    return population.merchants.select(
        pl.lit(seed, dtype=pl.UInt64).alias("seed"),
        pl.lit(mf, dtype=pl.String).alias("manifest_fingerprint"),
        "merchant_id",
        "virtual_mode",
    )

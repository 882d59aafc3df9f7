"""Reading published outputs and the check settings, for the checks and `arrival verify`."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from .. import contracts, gate
from ..errors import ArrivalError, error_code
from ..identity import Identity
from ..store import Store
from .plan import read_domain
from .shell import read_receipt

# ---- reading published outputs (for checks and `arrival verify`) ---------------------------------------------------

def output_path(store: Store, dataset_id: str, identity: Identity) -> Path:
    """Where a 5B output of a partition lives."""
    return store.path(dataset_id, **identity.tokens())


def table_rows(path: Path) -> int:
    """Row count of a parquet file, from its footer."""
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def read_slices(path: Path, length: int, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pl.DataFrame]]:
    """Consecutive row slices of a parquet file, `length` rows each, as (first row, frame)."""
    scan = pl.scan_parquet(path)
    total = table_rows(path)
    for start in range(0, total, max(1, length)):
        part = scan if columns is None else scan.select(columns)
        yield start, part.slice(start, length).collect()


def read_table(path: Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """A whole (small) parquet table."""
    return pl.read_parquet(path, columns=list(columns) if columns else None)


def read_entity_keys(path: Path) -> pl.DataFrame:
    """The distinct entities of a λ surface (key columns only)."""
    return read_domain(path, code=error_code("S1", "DOMAIN_INVALID"))


def read_rows(path: Path, start: int, length: int) -> pl.DataFrame:
    """Rows [start, start + length) of a parquet file."""
    return pl.scan_parquet(path).slice(start, length).collect()


def world_scenarios(store: Store) -> list[str]:
    """The scenario ids of a world's scenario manifest, sorted (validated as S0 validates them)."""
    path = store.path("scenario_manifest_5A", manifest_fingerprint=read_receipt(store)["manifest_fingerprint"])
    try:
        manifest = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ArrivalError(error_code("S0", "SCENARIO_MANIFEST_INVALID"), f"{path} cannot be read: {exc}", file=str(path))
    return gate.check_scenario_manifest(manifest, where=str(path), contracts_dir=store.contracts_dir)


def read_config(store: Store, name: str) -> dict:
    """A configuration file of the store's config/ that is not a sealed policy (`<name>.yaml`), validated."""
    return contracts.read_config_file(store.config_dir, name, store.contracts_dir)


def read_check_policy(store: Store) -> dict:
    """config/check_policy.yaml (the corridors' false-alarm probability), validated."""
    return read_config(store, "check_policy")

"""Test-side helpers for S2/S3: run the states on a world, read their outputs, edit policies in a config copy."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import configlib
import polars as pl

from arrival_core import contracts, pipeline
from arrival_core.encoding import canonical_json
from arrival_core.identity import Identity, PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo
from arrival_core.world.hashgate import bundle_files

RUNNERS = (pipeline.run_s0, pipeline.run_s1, pipeline.run_s2, pipeline.run_s3, pipeline.run_audit)
TABLES = ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian",
          "rng_trace_arrival_lgcp_gaussian", "s3_bucket_counts_5B", "rng_event_arrival_bucket_count",
          "rng_trace_arrival_bucket_count")
ENTITY = ["merchant_id", "legal_country_iso", "tzid", "channel_group"]


def store(world: WorldInfo | Path, config_dir: Path | None = None) -> Store:
    root = world.root if isinstance(world, WorldInfo) else world
    return Store(run_root=Path(root), config_dir=config_dir or contracts.DEFAULT_CONFIG_DIR)


def run_all(st: Store, *, seed: int = 42, scenario_id: str = "baseline_v1", chunk_entities: int | None = None,
            upto: str = "run_audit") -> Identity:
    """Run S0 → audit (or up to a named runner) for one partition; return its identity."""
    for runner in RUNNERS:
        extra = {"chunk_entities": chunk_entities} if runner in (pipeline.run_s2, pipeline.run_s3) else {}
        result = runner(st, PartitionKey(seed, scenario_id), pipeline.RunOptions(**extra))
        if runner.__name__ == upto:
            break
    return result.identity


def identity(st: Store, *, seed: int = 42, scenario_id: str = "baseline_v1") -> Identity:
    return pipeline.resolve_identity(st, PartitionKey(seed, scenario_id), state="S2")


def path(st: Store, dataset_id: str, ident: Identity) -> Path:
    return st.path(dataset_id, **ident.tokens())


def read(st: Store, dataset_id: str, ident: Identity) -> pl.DataFrame:
    return pl.read_parquet(path(st, dataset_id, ident))


def outputs(root: Path) -> dict[str, bytes]:
    """Every 5B output file under a run root (run reports excluded), by relative path."""
    base = Path(root) / "data" / "layer2" / "5B"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and "run_report" not in p.parts}


edited_config = configlib.edited_config  # a copy of the shipped config dir with one policy edited


def revalidate_5a(root: Path) -> None:
    """Rebuild the 5A bundle over the 5A tables as they are now, as an upstream that validated edited data
    would: its table listing records their current sha256, and its index and flag pass again."""
    st = store(Path(root))
    mf = json.loads(st.path("run_receipt").read_bytes())["manifest_fingerprint"]
    entry = st.entry("validation_bundle_5A")
    folder = st.path(entry.id, manifest_fingerprint=mf)
    listing = json.loads((folder / "tables.json").read_bytes())
    for row in listing:
        row["sha256_hex"] = hashlib.sha256((Path(root) / row["path"]).read_bytes()).hexdigest()
    members = {p.name: p.read_bytes() for p in folder.iterdir()
               if p.name not in (entry.raw["index_file"], entry.raw["flag_file"])}
    members["tables.json"] = canonical_json(listing) + b"\n"
    for name, data in bundle_files(entry, mf, members).items():
        (folder / name).write_bytes(data)


def world_root_of(file: Path) -> Path:
    """The run root holding a file (the nearest folder with a run_receipt.json)."""
    return next(p for p in Path(file).parents if (p / "run_receipt.json").is_file())

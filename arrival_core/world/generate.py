"""The world generator: `create_world` publishes a whole synthetic upstream world; `ensure_seed` adds a seed's 3B file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import polars as pl
import pyarrow as pa

from .. import contracts
from ..encoding import canonical_json, le64, sha256_hex, uer
from ..errors import ArrivalError
from ..identity import validate_hex64, validate_seed
from ..store import ROW_GROUP_ROWS, ParquetSink, Store, Transaction, read_json
from .hashgate import bundle_files
from .merchants import Population, draw_population
from .profiles import Profile, load_profile
from .shapes import SLOTS_PER_WEEK
from .surface import SECONDS_PER_HOUR, SurfaceLaw, surface_frames, surge_multipliers
from .zones import local_slots

GENERATOR_VERSION = "arrival.world.v1"
RECEIPT_SPEC_VERSION = "upstream-1.0"
MANIFEST_DOMAIN = "arrival.world.manifest_fingerprint.v1"
PARAMETER_DOMAIN = "arrival.world.parameter_hash.v1"
LAYER1_SEGMENTS = ("1A", "1B", "2A", "2B", "3A", "3B")
STATE = "WORLD"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorldIdentity:
    """The identity a profile and world_seed give a world."""

    manifest_fingerprint: str
    parameter_hash: str
    run_id: str


@dataclass(frozen=True)
class WorldInfo:
    """What `create_world` made: where, which identity, which scenarios and seeds, and the rows of each table."""

    root: Path
    profile: str
    world_seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str
    scenario_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    entities: int
    buckets: int
    rows: Mapping[str, int]  # "<dataset_id>" or "<dataset_id>[<token>=<value>]" -> rows


def world_identity(profile: Profile, world_seed: int) -> WorldIdentity:
    """Return mf, upstream ph and run_id: domain-separated sha256 of the canonical profile content and world_seed."""
    content = canonical_json(profile.content)
    seed = le64(validate_seed(world_seed))
    mf = sha256_hex(uer(MANIFEST_DOMAIN) + uer(GENERATOR_VERSION) + uer(content) + seed)
    ph = sha256_hex(uer(PARAMETER_DOMAIN) + uer(content) + seed)
    return WorldIdentity(mf, ph, f"world-{profile.name}-{mf[:16]}")


def create_world(
    profile: str,
    root: Path,
    *,
    world_seed: int | None = None,
    seeds: Sequence[int] = (42,),
    progress: Progress | None = None,
) -> WorldInfo:
    """Generate a profile's world under `root` and publish it atomically; re-creating the same world is a no-op."""
    say = progress or (lambda _message: None)
    spec = load_profile(profile)
    ws = validate_seed(spec.world_seed if world_seed is None else world_seed)
    seed_list = tuple(sorted({validate_seed(s) for s in seeds}))
    ident = world_identity(spec, ws)
    mf = ident.manifest_fingerprint
    population = draw_population(spec.population, spec.zones, spec.entities, mf)
    say(f"world {spec.name}: {population.entities.height:,} entities of {population.merchants.height:,} merchants, "
        f"{spec.horizon.buckets:,} buckets, {len(spec.scenarios)} scenario(s)")
    law = SurfaceLaw(
        weights=spec.shapes.table(),
        slots=local_slots(spec.zones.tzids, spec.horizon.start, spec.horizon.buckets, spec.horizon.bucket_seconds),
        bucket_scale=spec.horizon.bucket_seconds / SECONDS_PER_HOUR,
    )
    store = Store(run_root=Path(root).resolve())
    rows: dict[str, int] = {}
    with store.transaction(STATE) as tx:
        tables = _publish_5a_tables(tx, store, spec, population, law, mf, rows, say)
        for seed in seed_list:
            rows[f"virtual_classification_3B[seed={seed}]"] = _publish_3b(tx, store, population, mf, seed)
        _publish_bundles(tx, store, spec, ws, ident, population, tables)
        tx.write_json("run_receipt", store.path("run_receipt"), receipt(spec, ws, ident))
        say(f"world {spec.name}: publishing under {store.run_root}")
    return WorldInfo(
        root=store.run_root, profile=spec.name, world_seed=ws, manifest_fingerprint=mf,
        parameter_hash=ident.parameter_hash, run_id=ident.run_id,
        scenario_ids=tuple(sorted(s.scenario_id for s in spec.scenarios)), seeds=seed_list,
        entities=population.entities.height, buckets=spec.horizon.buckets, rows=rows,
    )


def ensure_seed(root: Path, seed: int) -> Path:
    """Return the seed's 3B file; a synthetic world writes it (as `create_world` would), a real one must have it."""
    store = Store(run_root=Path(root).resolve())
    receipt_path = store.path("run_receipt")
    if not receipt_path.exists():
        raise ArrivalError("5B.WORLD.ARTEFACT_MISSING", f"{receipt_path} is missing: {store.run_root} holds no world",
                           file=str(receipt_path))
    doc = read_json(receipt_path)
    if not isinstance(doc, dict):
        raise ArrivalError("5B.WORLD.ARTEFACT_MISSING", f"{receipt_path} is not a JSON object", file=str(receipt_path))
    mf = validate_hex64(doc.get("manifest_fingerprint"), "manifest_fingerprint")
    target = store.path("virtual_classification_3B", seed=validate_seed(seed), manifest_fingerprint=mf)
    if target.exists():
        return target
    if doc.get("synthetic") is not True:
        raise ArrivalError(
            "5B.WORLD.ARTEFACT_MISSING",
            f"{target} is missing; the world at {store.run_root} is not synthetic, so it is never invented",
            file=str(target), seed=seed,
        )
    spec = load_profile(str(doc.get("profile")))
    ws = validate_seed(doc.get("world_seed"))
    if world_identity(spec, ws).manifest_fingerprint != mf:
        raise ArrivalError(
            "5B.WORLD.PROFILE_INVALID",
            f"profile {spec.name!r} with world_seed {ws} no longer gives manifest_fingerprint {mf} of {receipt_path}; "
            f"the profile or its catalogues changed since the world was made, so seed {seed} cannot be added",
            file=str(receipt_path), profile=spec.name,
        )
    population = draw_population(spec.population, spec.zones, spec.entities, mf)
    with store.transaction(STATE) as tx:
        _publish_3b(tx, store, population, mf, validate_seed(seed))
    return target


def receipt(spec: Profile, world_seed: int, ident: WorldIdentity) -> dict[str, Any]:
    """Return run_receipt.json of a synthetic world (no wall-clock values)."""
    return {
        "run_id": ident.run_id,
        "parameter_hash": ident.parameter_hash,
        "manifest_fingerprint": ident.manifest_fingerprint,
        "spec_version": RECEIPT_SPEC_VERSION,
        "synthetic": True,
        "profile": spec.name,
        "world_seed": world_seed,
    }


# ---- tables ----------------------------------------------------------------------------------------------------

def arrow_schema(dataset_id: str, store: Store) -> pa.Schema:
    """Return the Arrow schema a dataset's table schema gives (the dtypes every writer of it uses)."""
    dtypes = contracts.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    return pl.DataFrame(schema=dtypes).to_arrow().schema


def parquet_bytes(frames: Iterable[pl.DataFrame], schema: pa.Schema) -> tuple[pa.Buffer, int]:
    """Encode frames (in writer order) as one parquet file in memory, with the store's fixed row groups."""
    sink_file = pa.BufferOutputStream()
    sink = ParquetSink(sink_file, schema)
    for frame in frames:
        sink.write(frame)
    sink.close()
    return sink_file.getvalue(), sink.rows


@dataclass(frozen=True)
class _Table:
    dataset_id: str
    path: Path
    sha256: str
    rows: int
    scenario_id: str | None = None


def _publish_table(tx: Transaction, store: Store, dataset_id: str, frames: Iterable[pl.DataFrame],
                   **tokens: object) -> _Table:
    target = store.path(dataset_id, **tokens)
    data, rows = parquet_bytes(frames, arrow_schema(dataset_id, store))
    tx.write_bytes(dataset_id, target, data, rows)
    return _Table(dataset_id, target, sha256_hex(data), rows, tokens.get("scenario_id"))


def _publish_5a_tables(tx: Transaction, store: Store, spec: Profile, population: Population, law: SurfaceLaw,
                       mf: str, rows: dict[str, int], say: Progress) -> list[_Table]:
    tables = [
        _publish_table(tx, store, "scenario_manifest_5A", [scenario_manifest(spec)], manifest_fingerprint=mf),
        _publish_table(tx, store, "merchant_zone_profile_5A", [zone_profile(population, mf)], manifest_fingerprint=mf),
    ]
    chunk = max(1, ROW_GROUP_ROWS // spec.horizon.buckets)
    for scenario in sorted(spec.scenarios, key=lambda s: s.scenario_id):
        multipliers = surge_multipliers(scenario, spec.horizon, spec.shapes.classes)
        frames = surface_frames(population.entities, law, multipliers, mf, scenario.scenario_id, chunk)
        frames = _reporting(frames, say, scenario.scenario_id, population.entities.height, chunk)
        tables.append(_publish_table(tx, store, "merchant_zone_scenario_local_5A", frames,
                                     manifest_fingerprint=mf, scenario_id=scenario.scenario_id))
    for t in tables:
        rows[t.dataset_id if t.scenario_id is None else f"{t.dataset_id}[scenario_id={t.scenario_id}]"] = t.rows
    return tables


def _reporting(frames: Iterable[pl.DataFrame], say: Progress, scenario_id: str, entities: int,
               chunk: int) -> Iterable[pl.DataFrame]:
    """Pass frames through, reporting progress about every tenth of the entities."""
    step = max(1, -(-entities // chunk) // 10)
    for i, frame in enumerate(frames):
        yield frame
        if (i + 1) % step == 0 or (i + 1) * chunk >= entities:
            say(f"lambda surface {scenario_id}: {min((i + 1) * chunk, entities):,}/{entities:,} entities")


def scenario_manifest(spec: Profile) -> pl.DataFrame:
    """Return scenario_manifest_5A: one row per scenario, all on the profile's horizon."""
    scenarios = sorted(spec.scenarios, key=lambda s: s.scenario_id)
    return pl.DataFrame({
        "scenario_id": [s.scenario_id for s in scenarios],
        "scenario_version": [s.scenario_version for s in scenarios],
        "is_baseline": [s.is_baseline for s in scenarios],
        "is_stress": [s.is_stress for s in scenarios],
        "horizon_start_utc": [spec.horizon.start] * len(scenarios),
        "horizon_end_utc": [spec.horizon.end] * len(scenarios),
        "labels": [list(s.labels) for s in scenarios],
    }, schema={"scenario_id": pl.String, "scenario_version": pl.String, "is_baseline": pl.Boolean,
               "is_stress": pl.Boolean, "horizon_start_utc": pl.Datetime("us", "UTC"),
               "horizon_end_utc": pl.Datetime("us", "UTC"), "labels": pl.List(pl.String)})


def zone_profile(population: Population, mf: str) -> pl.DataFrame:
    """Return merchant_zone_profile_5A: per merchant zone, its class and expected weekly arrivals over channels."""
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


def _publish_3b(tx: Transaction, store: Store, population: Population, mf: str, seed: int) -> int:
    table = _publish_table(tx, store, "virtual_classification_3B", [virtual_classification(population, mf, seed)],
                           seed=seed, manifest_fingerprint=mf)
    return table.rows


# ---- HashGate bundles ------------------------------------------------------------------------------------------

def _json(obj: Any) -> bytes:
    return canonical_json(obj) + b"\n"


def segment_facts(spec: Profile, population: Population) -> dict[str, dict[str, Any]]:
    """Return the seed-invariant facts each upstream segment's bundle reports about the world."""
    ent, mer = population.entities, population.merchants

    def counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame[column].value_counts().sort(column).iter_rows()}

    zones = ent.select("legal_country_iso", "tzid").unique().sort("legal_country_iso", "tzid")
    per_merchant = ent.group_by("merchant_id").agg(pl.struct("legal_country_iso", "tzid").n_unique().alias("zones"))
    return {
        "1A": {"merchants": mer.height, "merchants_by_demand_class": counts(mer, "demand_class")},
        "1B": {"zones": [list(z) for z in zones.iter_rows()], "entities_by_country": counts(ent, "legal_country_iso")},
        "2A": {"tzids": sorted(set(spec.zones.tzids)), "horizon_start_utc": spec.horizon.start.isoformat(),
               "horizon_days": spec.horizon.days, "bucket_seconds": spec.horizon.bucket_seconds,
               "weekly_slots": SLOTS_PER_WEEK},
        "2B": {"entities": ent.height, "entities_by_channel_group": counts(ent, "channel_group")},
        "3A": {"merchant_zones": ent.select("merchant_id", "legal_country_iso", "tzid").n_unique(),
               "merchants_by_zone_count": counts(per_merchant.with_columns(pl.col("zones").cast(pl.String)), "zones")},
        "3B": {"merchants_by_virtual_mode": counts(mer, "virtual_mode")},
    }


def _publish_bundles(tx: Transaction, store: Store, spec: Profile, world_seed: int, ident: WorldIdentity,
                     population: Population, tables: list[_Table]) -> None:
    mf = ident.manifest_fingerprint
    facts = segment_facts(spec, population)
    report = {"status": "PASS", "manifest_fingerprint": mf, "parameter_hash": ident.parameter_hash,
              "generator": GENERATOR_VERSION, "profile": spec.name, "world_seed": world_seed}
    for segment in LAYER1_SEGMENTS:
        members = {"report.json": _json({**report, "segment": segment}), "facts.json": _json(facts[segment])}
        _write_bundle(tx, store, f"validation_bundle_{segment}", mf, members)
    listing = [
        {"dataset_id": t.dataset_id, "path": t.path.relative_to(store.run_root).as_posix(), "rows": t.rows,
         "scenario_id": t.scenario_id, "sha256_hex": t.sha256}
        for t in tables
    ]
    members = {"report.json": _json({**report, "segment": "5A"}), "tables.json": _json(listing)}
    _write_bundle(tx, store, "validation_bundle_5A", mf, members)


def _write_bundle(tx: Transaction, store: Store, dataset_id: str, mf: str, members: Mapping[str, bytes]) -> None:
    entry = store.entry(dataset_id)
    folder = store.path(dataset_id, manifest_fingerprint=mf)
    for name, data in bundle_files(entry, mf, members).items():
        tx.write_bytes(dataset_id, folder / name, data)

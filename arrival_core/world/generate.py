"""The world generator: `create_world` publishes a synthetic world; `ensure_seed` adds a seed's 3B file."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..encoding import canonical_json, le64, sha256_file, sha256_hex, uer
from ..errors import ArrivalError, error_code
from ..identity import validate_hex64, validate_seed
from ..sink import ROW_GROUP_ROWS
from ..store import Store, Transaction, read_json
from .hashgate import bundle_files
from .merchants import Population, draw_population
from .profiles import Profile, load_profile
from .reports import LAYER1_SEGMENTS, json_member, segment_facts
from .surface import SECONDS_PER_HOUR, SurfaceLaw, surface_frames, surge_multipliers
from .tables import arrow_schema, parquet_bytes, scenario_manifest, virtual_classification, zone_profile
from .zones import local_slots

GENERATOR_VERSION = "arrival.world.v1"
RECEIPT_SPEC_VERSION = "upstream-1.0"
MANIFEST_DOMAIN = "arrival.world.manifest_fingerprint.v1"
PARAMETER_DOMAIN = "arrival.world.parameter_hash.v1"
STATE = "WORLD"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorldIdentity:
    """The identity a profile and world_seed give a world."""

    manifest_fingerprint: str
    parameter_hash: str
    run_id: str


@dataclass(frozen=True)
class WorldInfo(WorldIdentity):
    """What `create_world` made: its identity, where, its scenarios and seeds, and the rows of each table file."""

    root: Path
    profile: str
    world_seed: int
    scenario_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    entities: int
    buckets: int
    rows: Mapping[str, int]  # "<dataset_id>" or "<dataset_id>[<token>=<value>]" -> rows


@dataclass(frozen=True)
class _Table:
    dataset_id: str
    path: Path
    sha256: str
    rows: int
    token: tuple[str, object] | None = None  # the partition token that tells files of one dataset apart

    @property
    def label(self) -> str:
        if self.token is None:
            return self.dataset_id
        return f"{self.dataset_id}[{self.token[0]}={self.token[1]}]"


def world_identity(profile: Profile, world_seed: int) -> WorldIdentity:
    """Return mf, upstream ph and run_id: domain-separated sha256s of the profile content and seed."""
    content = canonical_json(profile.content)
    seed = le64(validate_seed(world_seed))
    mf = sha256_hex(uer(MANIFEST_DOMAIN) + uer(GENERATOR_VERSION) + uer(content) + seed)
    ph = sha256_hex(uer(PARAMETER_DOMAIN) + uer(content) + seed)
    return WorldIdentity(mf, ph, f"world-{profile.name}-{mf[:16]}")


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


def create_world(
    profile: str,
    root: Path,
    *,
    world_seed: int | None = None,
    seeds: Sequence[int] = (42,),
    progress: Progress | None = None,
) -> WorldInfo:
    """Generate a profile's world under `root` and publish it atomically; re-creating it is a no-op."""
    say = progress or (lambda _message: None)
    spec = load_profile(profile)
    ws = validate_seed(spec.world_seed if world_seed is None else world_seed)
    seed_list = tuple(sorted({validate_seed(s) for s in seeds}))
    ident = world_identity(spec, ws)
    mf = ident.manifest_fingerprint
    population = draw_population(spec.population, spec.zones, spec.entities, mf)
    horizon = spec.horizon
    say(f"world {spec.name}: {population.entities.height:,} entities of {population.merchants.height:,} "
        f"merchants, {horizon.buckets:,} buckets, {len(spec.scenarios)} scenario(s)")
    law = SurfaceLaw(
        weights=spec.shapes.table(),
        slots=local_slots(spec.zones.tzids, horizon.start, horizon.buckets, horizon.bucket_seconds),
        bucket_scale=horizon.bucket_seconds / SECONDS_PER_HOUR,
    )
    store = Store(run_root=Path(root).resolve())
    with store.transaction(STATE) as tx:
        tables_5a = _publish_5a_tables(tx, store, spec, population, law, mf, say)
        tables_3b = [_publish_3b(tx, store, population, mf, seed) for seed in seed_list]
        _publish_bundles(tx, store, spec, ws, ident, population, tables_5a)
        tx.write_json("run_receipt", store.path("run_receipt"), receipt(spec, ws, ident))
        say(f"world {spec.name}: publishing under {store.run_root}")
    return WorldInfo(
        root=store.run_root, profile=spec.name, world_seed=ws, manifest_fingerprint=mf,
        parameter_hash=ident.parameter_hash, run_id=ident.run_id,
        scenario_ids=tuple(sorted(s.scenario_id for s in spec.scenarios)), seeds=seed_list,
        entities=population.entities.height, buckets=horizon.buckets,
        rows={t.label: t.rows for t in tables_5a + tables_3b},
    )


def ensure_seed(root: Path, seed: int) -> Path:
    """Return the seed's 3B file, written as `create_world` would for a synthetic world (never a real one)."""
    store = Store(run_root=Path(root).resolve())
    receipt_path = store.path("run_receipt")
    if not receipt_path.exists():
        message = f"{receipt_path} is missing: {store.run_root} holds no world"
        raise ArrivalError(error_code("WORLD", "ARTEFACT_MISSING"), message, file=str(receipt_path))
    doc = read_json(receipt_path)
    if not isinstance(doc, dict):
        raise ArrivalError(error_code("WORLD", "ARTEFACT_MISSING"), f"{receipt_path} is not a JSON object",
                           file=str(receipt_path))
    mf = validate_hex64(doc.get("manifest_fingerprint"), "manifest_fingerprint")
    seed = validate_seed(seed)
    target = store.path("virtual_classification_3B", seed=seed, manifest_fingerprint=mf)
    if target.exists():
        return target
    if doc.get("synthetic") is not True:
        raise ArrivalError(
            error_code("WORLD", "ARTEFACT_MISSING"),
            f"{target} is missing; the world at {store.run_root} is not synthetic, so it is never invented",
            file=str(target), seed=seed,
        )
    population = _population(store, doc, receipt_path, seed)
    with store.transaction(STATE) as tx:
        _publish_3b(tx, store, population, mf, seed)
    return target


def verify_seed_file(root: Path, seed: int) -> str:
    """The sha256 of a synthetic world's seed-scoped 3B file, proved equal to the bytes the generator gives for
    that seed (it is deterministic, so the comparison is exact); another file under the same identity is
    `5B.S0.UPSTREAM_NOT_PASS` naming both digests. A real world's file is left to its bundle."""
    store = Store(run_root=Path(root).resolve())
    receipt_path = store.path("run_receipt")
    doc = read_json(receipt_path)
    if not isinstance(doc, dict) or doc.get("synthetic") is not True:
        raise ArrivalError(error_code("WORLD", "ARTEFACT_MISSING"), f"{receipt_path} is not a synthetic world's",
                           file=str(receipt_path))
    mf = validate_hex64(doc.get("manifest_fingerprint"), "manifest_fingerprint")
    seed = validate_seed(seed)
    target = store.path("virtual_classification_3B", seed=seed, manifest_fingerprint=mf)
    population = _population(store, doc, receipt_path, seed)
    data, _ = parquet_bytes([virtual_classification(population, mf, seed)],
                            arrow_schema("virtual_classification_3B", store))
    expected, found = sha256_hex(data), sha256_file(target)
    if found != expected:
        raise ArrivalError(
            error_code("S0", "UPSTREAM_NOT_PASS"),
            f"{target} has sha256 {found}, but the synthetic world's generator gives sha256 {expected} for seed "
            f"{seed}: the file was changed after the world made it",
            file=str(target), seed=seed, sha256=found, expected_sha256=expected, segment="3B",
        )
    return found


def _population(store: Store, doc: Mapping[str, Any], receipt_path: Path, seed: int) -> Population:
    """The synthetic world's population, after proving its profile still gives the world's fingerprint."""
    mf = doc["manifest_fingerprint"]
    spec = load_profile(str(doc.get("profile")))
    ws = validate_seed(doc.get("world_seed"))
    if world_identity(spec, ws).manifest_fingerprint != mf:
        raise ArrivalError(
            error_code("WORLD", "PROFILE_INVALID"),
            f"profile {spec.name!r} with world_seed {ws} no longer gives manifest_fingerprint {mf} of "
            f"{receipt_path}; the profile or its catalogues changed since the world was made, "
            f"so seed {seed} cannot be added",
            file=str(receipt_path), profile=spec.name,
        )
    return draw_population(spec.population, spec.zones, spec.entities, mf)


# ---- publishing ------------------------------------------------------------------------------------------

def _publish_table(tx: Transaction, store: Store, dataset_id: str, frames: Iterable[pl.DataFrame],
                   token: tuple[str, object] | None = None, **tokens: object) -> _Table:
    if token is not None:
        tokens[token[0]] = token[1]
    target = store.path(dataset_id, **tokens)
    data, rows = parquet_bytes(frames, arrow_schema(dataset_id, store))
    tx.write_bytes(dataset_id, target, data, rows)
    return _Table(dataset_id, target, sha256_hex(data), rows, token)


def _publish_5a_tables(tx: Transaction, store: Store, spec: Profile, population: Population, law: SurfaceLaw,
                       mf: str, say: Progress) -> list[_Table]:
    tables = [
        _publish_table(tx, store, "scenario_manifest_5A", [scenario_manifest(spec)], manifest_fingerprint=mf),
        _publish_table(tx, store, "merchant_zone_profile_5A", [zone_profile(population, mf)],
                       manifest_fingerprint=mf),
    ]
    chunk = max(1, ROW_GROUP_ROWS // spec.horizon.buckets)
    for scenario in sorted(spec.scenarios, key=lambda s: s.scenario_id):
        multipliers = surge_multipliers(scenario, spec.horizon, spec.shapes.classes)
        frames = surface_frames(population.entities, law, multipliers, mf, scenario.scenario_id, chunk)
        frames = _reporting(frames, say, f"lambda surface {scenario.scenario_id}", population.entities.height,
                            chunk)
        tables.append(_publish_table(tx, store, "merchant_zone_scenario_local_5A", frames,
                                     ("scenario_id", scenario.scenario_id), manifest_fingerprint=mf))
    return tables


def _reporting(frames: Iterable[pl.DataFrame], say: Progress, what: str, entities: int,
               chunk: int) -> Iterator[pl.DataFrame]:
    """Pass frames through, reporting progress about every tenth of the entities."""
    step = max(1, -(-entities // chunk) // 10)
    for i, frame in enumerate(frames):
        yield frame
        done = min((i + 1) * chunk, entities)
        if (i + 1) % step == 0 or done == entities:
            say(f"{what}: {done:,}/{entities:,} entities")


def _publish_3b(tx: Transaction, store: Store, population: Population, mf: str, seed: int) -> _Table:
    frame = virtual_classification(population, mf, seed)
    return _publish_table(tx, store, "virtual_classification_3B", [frame], ("seed", seed),
                          manifest_fingerprint=mf)


def _publish_bundles(tx: Transaction, store: Store, spec: Profile, world_seed: int, ident: WorldIdentity,
                     population: Population, tables_5a: list[_Table]) -> None:
    """Stage the seven bundles; the 5A one lists every 5A table file with its sha256 and rows."""
    mf = ident.manifest_fingerprint
    report = {"status": "PASS", "manifest_fingerprint": mf, "parameter_hash": ident.parameter_hash,
              "generator": GENERATOR_VERSION, "profile": spec.name, "world_seed": world_seed}
    members: dict[str, dict[str, bytes]] = {
        segment: {"report.json": json_member({**report, "segment": segment}),
                  "facts.json": json_member(facts)}
        for segment, facts in segment_facts(spec, population).items()
    }
    listing = [
        {"dataset_id": t.dataset_id, "path": t.path.relative_to(store.run_root).as_posix(), "rows": t.rows,
         "scenario_id": None if t.token is None else t.token[1], "sha256_hex": t.sha256}
        for t in tables_5a
    ]
    members["5A"] = {"report.json": json_member({**report, "segment": "5A"}),
                     "tables.json": json_member(listing)}
    for segment in (*LAYER1_SEGMENTS, "5A"):
        dataset_id = f"validation_bundle_{segment}"
        folder = store.path(dataset_id, manifest_fingerprint=mf)
        for name, data in bundle_files(store.entry(dataset_id), mf, members[segment]).items():
            tx.write_bytes(dataset_id, folder / name, data)

"""The imperative shell: identity, gate loading, and load → compute → validate → publish → report, per state.

Every state runner goes through `execute_state`, which validates the partition keys before any path is
built, runs the state body, and writes one run report per execution (PASS or FAIL) in its own transaction.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import queue
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from . import audit, contracts, counts, gate, grid, grouping, latent, reports
from . import store as store_module
from .encoding import sha256_file, sha256_hex
from .errors import ALL_CODES, ArrivalError
from .gate import Gate, SegmentGate, state_code
from .identity import Identity, compute_parameter_hash, validate_scenario_id, validate_seed
from .rng import ledger, streams
from .store import Published, Store

_FILE_CHUNK = 1 << 20


@dataclass(frozen=True)
class StateResult:
    """What one successful state execution produced."""

    state: str  # "S0" | "S1" | ...
    identity: Identity
    published: tuple[Published, ...]
    report: dict
    report_path: Path


@dataclass
class StateRun:
    """One execution of a state: what its body has learnt so far, for the run report (PASS or FAIL)."""

    store: Store
    state: str
    seed: int
    scenario_id: str
    run_id: str
    identity: Identity | None = None
    scenario_set: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of a block to the phase's timing (a log value, never an identity output)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - start, 6)

    def code(self, category: str) -> str:
        """The canonical code of a category for this state."""
        return state_code(self.state, category)


StateBody = Callable[[StateRun], Sequence[Published]]


def execute_state(
    store: Store, state: str, *, seed: int | str, scenario_id: str, run_id: str | None, body: StateBody
) -> StateResult:
    """Run a state body for one partition and write its run report; re-raise the failure after reporting it."""
    seed_value, sid = validate_seed(seed), validate_scenario_id(scenario_id)
    run_id = run_id or uuid.uuid4().hex
    report_path = store.path("run_report_5B", state=state, seed=seed_value, scenario_id=sid, run_id=run_id)
    run = StateRun(store, state, seed_value, sid, run_id)
    started, clock = reports.utc_now(), time.perf_counter()
    failure: Exception | None = None
    published: tuple[Published, ...] = ()
    try:
        published = tuple(body(run))
    except Exception as exc:  # reported (with no code unless it is an ArrivalError), then re-raised unchanged
        failure = exc
    run.timings["total"] = round(time.perf_counter() - clock, 6)
    report = reports.build_report(
        state=state, seed=seed_value, scenario_id=sid, run_id=run_id, identity=run.identity,
        scenario_set=run.scenario_set, failure=failure, started_at_utc=started, finished_at_utc=reports.utc_now(),
        metrics=run.metrics, published=published, timings=run.timings,
    )
    try:
        with store.transaction(gate.CODE_STATE.get(state, state)) as tx:
            tx.write_json("run_report_5B", report_path, report)
    except ArrivalError as report_failure:
        if failure is not None:
            raise failure from report_failure
        raise
    if failure is not None:
        raise failure
    assert run.identity is not None, f"{state} passed without resolving its identity"
    return StateResult(state, run.identity, published, report, report_path)


# ---- identity (DESIGN §2) ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """The world's run receipt and the bytes of the six policy files, read once per execution."""

    receipt: Mapping
    manifest_fingerprint: str
    upstream_parameter_hash: str
    parameter_hash: str
    policy_bytes: Mapping[str, bytes]
    policy_paths: Mapping[str, Path]


def read_world(store: Store, state: str) -> World:
    """Read and validate run_receipt.json and hash the policy files into the parameter_hash (§2.1)."""
    path = store.path("run_receipt")
    missing, invalid = (
        ("5B.S0.RUN_RECEIPT_MISSING", "5B.S0.RUN_RECEIPT_INVALID") if state == "S0"
        else (state_code(state, "S0_GATE_INVALID"),) * 2
    )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArrivalError(missing, f"{path} does not exist: the run root holds no world", file=str(path))
    except OSError as exc:
        raise ArrivalError(missing, f"{path} cannot be read: {exc}", file=str(path))
    receipt = gate.parse_run_receipt(raw, where=str(path), code=invalid, contracts_dir=store.contracts_dir)
    policy_bytes, policy_paths = {}, {}
    for entry in gate.policy_entries(store.contracts_dir):
        policy_path = store.path(entry.id)
        try:
            policy_bytes[entry.id] = policy_path.read_bytes()
        except OSError as exc:
            raise ArrivalError(_policy_code(state, entry.id), f"policy file {policy_path} cannot be read: {exc}",
                               file=str(policy_path), field=entry.id)
        policy_paths[entry.id] = policy_path
    ph = compute_parameter_hash(
        receipt["parameter_hash"], [(pid, sha256_hex(data)) for pid, data in policy_bytes.items()]
    )
    return World(receipt, receipt["manifest_fingerprint"], receipt["parameter_hash"], ph, policy_bytes, policy_paths)


def resolve_identity(store: Store, *, seed: int | str, scenario_id: str, state: str) -> Identity:
    """Validate the partition keys, then derive (ph, mf) from the run receipt and the policy files."""
    seed_value, sid = validate_seed(seed), validate_scenario_id(scenario_id)
    world = read_world(store, state)
    return Identity(world.parameter_hash, world.manifest_fingerprint, seed_value, sid)


def _parse_policy(data: bytes, entry: contracts.DatasetEntry, path: Path, *, code: str, store: Store) -> dict:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ArrivalError(code, f"{path} is not YAML: {exc}", file=str(path))
    contracts.validate_document(doc, entry.schema_ref, code=code, where=str(path), contracts_dir=store.contracts_dir)
    return doc


# Which code a policy failing its schema raises in each state (default: POLICY_INVALID, else S0_GATE_INVALID).
_POLICY_CODES = {
    "S2": {"arrival_lgcp_config_5B": "LGCP_CONFIG_INVALID", "arrival_rng_policy_5B": "RNG_POLICY_INVALID"},
    "S3": {"arrival_count_config_5B": "COUNT_CONFIG_INVALID", "arrival_rng_policy_5B": "RNG_POLICY_INVALID"},
    "AUDIT": {"arrival_rng_policy_5B": "RNG_POLICY_INVALID"},
}


def _policy_code(state: str, policy_id: str) -> str:
    category = _POLICY_CODES.get(state, {}).get(policy_id, "POLICY_INVALID")
    code = state_code(state, category)
    return code if code in ALL_CODES else state_code(state, "S0_GATE_INVALID")


# ---- the gate (DESIGN §5, last paragraph) ---------------------------------------------------------------------------

def _read_json_file(path: Path, *, code: str, what: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ArrivalError(code, f"{what} {path} does not exist; run S0 for this parameter_hash first", file=str(path))
    except (OSError, ValueError) as exc:
        raise ArrivalError(code, f"{what} {path} cannot be read: {exc}", file=str(path))


def load_gate(store: Store, identity: Identity, *, state: str) -> Gate:
    """Re-validate the S0 receipt and sealed inputs, recompute their digest, and parse the sealed policies."""
    code = state_code(state, "S0_GATE_INVALID")
    cd = store.contracts_dir
    receipt_path = store.path("s0_gate_receipt_5B", **identity.tokens())
    rows_path = store.path("sealed_inputs_5B", **identity.tokens())
    receipt = _read_json_file(receipt_path, code=code, what="s0_gate_receipt_5B")
    rows = _read_json_file(rows_path, code=code, what="sealed_inputs_5B")
    contracts.validate_document(receipt, gate.RECEIPT_SCHEMA, code=code, where=str(receipt_path), contracts_dir=cd)
    contracts.validate_document(rows, gate.SEALED_INPUTS_SCHEMA, code=code, where=str(rows_path), contracts_dir=cd)
    entries = gate.policy_entries(cd)
    by_id = gate.check_gate(receipt, rows, identity, state=state, policy_ids=[e.id for e in entries],
                            receipt_where=str(receipt_path), rows_where=str(rows_path))
    policies = {}
    for entry in entries:
        path = store.path(entry.id)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArrivalError(code, f"sealed policy {path} cannot be read: {exc}", file=str(path))
        if sha256_hex(data) != by_id[entry.id]["sha256_hex"]:
            raise ArrivalError(code, f"policy {path} changed since S0 sealed it", file=str(path))
        policies[entry.id] = _parse_policy(data, entry, path, code=_policy_code(state, entry.id), store=store)
    return Gate(state, identity, receipt, by_id, policies, store)


# ---- outputs ---------------------------------------------------------------------------------------------------

def arrow_schema(store: Store, dataset_id: str) -> pa.Schema:
    """The explicit Arrow schema of a table dataset, derived from its contract."""
    dtypes = contracts.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    return pl.DataFrame(schema=dtypes).to_arrow().schema


def conform(store: Store, dataset_id: str, frame: pl.DataFrame, identity: Identity) -> pl.DataFrame:
    """Add the identity columns the dataset carries and put the columns in contract order and dtypes."""
    dtypes = contracts.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    values = {"manifest_fingerprint": identity.manifest_fingerprint, "parameter_hash": identity.parameter_hash,
              "seed": identity.seed, "scenario_id": identity.scenario_id}
    frame = frame.with_columns(pl.lit(v).alias(k) for k, v in values.items() if k in dtypes)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in dtypes.items())


def validate_output(store: Store, dataset_id: str, frame: pl.DataFrame, *, code: str, path: Path) -> None:
    """Validate a table output in full against its contract, primary key and writer order."""
    entry = store.entry(dataset_id)
    contracts.validate_table(frame, entry.schema_ref, code=code, where=str(path), primary_key=entry.primary_key,
                             writer_sort=entry.writer_sort, contracts_dir=store.contracts_dir)


def read_sealed_table(g: Gate, artifact_id: str, *, code: str, **tokens: object) -> tuple[pl.DataFrame, Path]:
    """Read a small sealed ROW_LEVEL parquet input whole; a content-sealed single file must still match its seal."""
    path = g.path(artifact_id, **tokens)
    row = g.sealed(artifact_id)
    try:
        data = path.read_bytes()
        frame = pl.read_parquet(io.BytesIO(data))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ArrivalError(code, f"sealed input {artifact_id} cannot be read at {path}: {exc}", file=str(path))
    if row["digest_kind"] == "content" and "scenario_id" not in row["partition_keys"]:
        digest = sha256_hex(data)
        if digest != row["sha256_hex"]:
            raise ArrivalError(state_code(g.state, "S0_GATE_INVALID"),
                               f"{path} changed since S0 sealed it (sha256 {digest}, sealed {row['sha256_hex']})",
                               file=str(path), artifact_id=artifact_id)
    return frame, path


# ---- S0: gate and sealed inputs -------------------------------------------------------------------------------

def _hash_members(folder: Path, paths: Sequence[str]) -> tuple[dict[str, str | None], str]:
    """Stream every member once: its own sha256 (None when missing) and the digest of all bytes in index order."""
    bundle = hashlib.sha256()
    digests: dict[str, str | None] = {}
    root = folder.resolve()
    for rel in paths:
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            digests[rel] = None
            continue
        own = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_FILE_CHUNK):
                own.update(chunk)
                bundle.update(chunk)
        digests[rel] = own.hexdigest()
    return digests, bundle.hexdigest()


def verify_bundle(store: Store, entry: contracts.DatasetEntry, mf: str) -> SegmentGate:
    """Verify one upstream HashGate bundle (§3.1): index, members, flag; MISSING when index or flag is absent."""
    folder = store.path(entry.id, manifest_fingerprint=mf)
    index_path, flag_path = folder / entry.raw["index_file"], folder / entry.raw["flag_file"]
    cd = store.contracts_dir
    try:
        for path, what in ((index_path, "index"), (flag_path, "flag")):
            if not path.is_file():
                raise gate.BundleNotPass("MISSING", f"{what} {path} is missing")
        members = gate.parse_bundle_index(entry, index_path.read_bytes(), mf, where=str(index_path), contracts_dir=cd)
        digests, bundle_digest = _hash_members(folder, [m.path for m in members])
        gate.check_members(members, digests, folder=str(folder))
        claimed = gate.parse_flag(entry, flag_path.read_bytes(), where=str(flag_path), contracts_dir=cd)
        gate.check_flag(claimed, bundle_digest, where=str(flag_path))
    except gate.BundleNotPass as verdict:
        return SegmentGate(entry.owner_segment, verdict.status, None, verdict.reason)
    return SegmentGate(entry.owner_segment, "PASS", bundle_digest)


def _observe_inputs(store: Store, mf: str, scenario_set: Sequence[str]) -> dict[str, gate.Observed]:
    """Content digests of the sealed data inputs (scenario-partitioned ones over their per-scenario files)."""
    observed = {}
    for entry in gate.sealed_entries(store.contracts_dir):
        if entry.kind != "input" or entry.seed_scoped:
            continue
        scenarios = scenario_set if "scenario_id" in entry.partition_keys else [None]
        found, missing = [], []
        for sid in scenarios:
            path = store.path(entry.id, manifest_fingerprint=mf, scenario_id=sid)
            if path.is_file():
                found.append((sid, sha256_file(path)))
            else:
                missing.append(str(path))
        if missing:
            observed[entry.id] = gate.Observed(None, len(found), tuple(missing))
        elif scenarios == [None]:
            observed[entry.id] = gate.Observed(found[0][1])
        else:
            observed[entry.id] = gate.Observed(gate.scenario_surface_digest(found), len(found))
    return observed


def _read_registry(store: Store) -> dict:
    path = store.contracts_dir / "artefact_registry_5B.yaml"
    try:
        doc = yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise ArrivalError("5B.CONTRACT_INVALID", f"artefact registry {path} cannot be read: {exc}", file=str(path))
    return gate.check_registry(doc, gate.sealed_entries(store.contracts_dir), where=str(path),
                               contracts_dir=store.contracts_dir)


def _s0_body(run: StateRun) -> Sequence[Published]:
    store, cd = run.store, run.store.contracts_dir
    with run.timed("load"):
        world = read_world(store, "S0")
        mf = world.manifest_fingerprint
        run.identity = identity = Identity(world.parameter_hash, mf, run.seed, run.scenario_id)
        bundles = [e for e in gate.sealed_entries(cd) if e.kind == "bundle"]
        gates = [verify_bundle(store, e, mf) for e in bundles]
        run.metrics["upstream_segments"] = {g.segment: g.status for g in gates}
        gate.require_all_pass(gates)
        for entry in gate.policy_entries(cd):
            _parse_policy(world.policy_bytes[entry.id], entry, world.policy_paths[entry.id],
                          code="5B.S0.POLICY_INVALID", store=store)
        manifest_path = store.path("scenario_manifest_5A", manifest_fingerprint=mf)
        try:
            manifest = pl.read_parquet(manifest_path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ArrivalError("5B.S0.SCENARIO_MANIFEST_INVALID", f"{manifest_path} cannot be read: {exc}",
                               file=str(manifest_path))
        run.scenario_set = gate.check_scenario_manifest(manifest, where=str(manifest_path), contracts_dir=cd)
        if run.scenario_id not in run.scenario_set:
            raise gate.scenario_not_in_set(run.scenario_id, run.scenario_set)
        observed = _observe_inputs(store, mf, run.scenario_set)
        observed |= {e.id: gate.Observed(g.bundle_digest_sha256) for e, g in zip(bundles, gates)}
        observed |= {pid: gate.Observed(sha256_hex(data)) for pid, data in world.policy_bytes.items()}
        registry = _read_registry(store)
    with run.timed("compute"):
        rows, optional_missing = gate.seal_inputs(gate.sealed_entries(cd), registry, observed)
        receipt = gate.build_receipt(identity=identity, upstream_parameter_hash=world.upstream_parameter_hash,
                                     scenario_set=run.scenario_set, gates=gates, rows=rows,
                                     optional_missing=optional_missing)
    sealed_path = store.path("sealed_inputs_5B", **identity.tokens())
    receipt_path = store.path("s0_gate_receipt_5B", **identity.tokens())
    with run.timed("validate"):
        code = "5B.S0.OUTPUT_SCHEMA_INVALID"
        contracts.validate_document(rows, gate.SEALED_INPUTS_SCHEMA, code=code, where=str(sealed_path), contracts_dir=cd)
        contracts.validate_document(receipt, gate.RECEIPT_SCHEMA, code=code, where=str(receipt_path), contracts_dir=cd)
    run.metrics |= {
        "scenario_count": len(run.scenario_set),
        "sealed_inputs_row_count": len(rows),
        "sealed_inputs_digest": receipt["sealed_inputs_digest"],
        "optional_missing": optional_missing,
    }
    with run.timed("publish"):
        with store.transaction("S0") as tx:
            tx.write_json("sealed_inputs_5B", sealed_path, rows, rows=len(rows))
            tx.write_json("s0_gate_receipt_5B", receipt_path, receipt)
    return tx.published


def run_s0(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None) -> StateResult:
    """S0: verify the upstream HashGates and policies and seal every input (seed-invariant outputs per (ph, mf))."""
    return execute_state(store, "S0", seed=seed, scenario_id=scenario_id, run_id=run_id, body=_s0_body)


# ---- S1: time grid and grouping ------------------------------------------------------------------------------

def _read_domain(path: Path, *, code: str) -> pl.DataFrame:
    """The distinct entities of a scenario's λ surface, reading only the key columns.

    Keeping only rows whose key differs from the previous row first is exact in any row order and, on a
    writer-sorted surface, leaves one row per entity for the final `unique` (3x faster than hashing every row).
    """
    keys = list(grouping.ENTITY_KEYS)
    run_heads = ~pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys])
    try:
        return pl.scan_parquet(path).select(keys).filter(run_heads).unique().collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ArrivalError(code, f"{path}: cannot read the entity keys {list(grouping.ENTITY_KEYS)}: {exc}",
                           file=str(path))


def _read_virtual(g: Gate, identity: Identity) -> tuple[pl.DataFrame, Path]:
    """The seed's virtual classification: it must exist and carry this seed and fingerprint."""
    path = g.path("virtual_classification_3B", seed=identity.seed)
    if not path.is_file():
        raise ArrivalError(
            "5B.S1.DOMAIN_INVALID",
            f"virtual_classification_3B for seed {identity.seed} is missing at {path}; every entity needs a virtual mode",
            file=str(path), artifact_id="virtual_classification_3B", seed=identity.seed,
        )
    frame, path = read_sealed_table(g, "virtual_classification_3B", code="5B.S1.INPUT_SCHEMA_INVALID",
                                    seed=identity.seed)
    return frame, path


def _check_input(store: Store, dataset_id: str, frame: pl.DataFrame, path: Path, identity: Identity) -> None:
    """Validate an input table in full and check its identity columns equal the partition's."""
    code = "5B.S1.INPUT_SCHEMA_INVALID"
    entry = store.entry(dataset_id)
    contracts.validate_table(frame, entry.schema_ref, code=code, where=str(path), primary_key=entry.primary_key,
                             contracts_dir=store.contracts_dir)
    for column, value in (("manifest_fingerprint", identity.manifest_fingerprint), ("seed", identity.seed)):
        if column in frame.columns:
            wrong = frame.filter(pl.col(column) != value)
            if wrong.height:
                raise ArrivalError(
                    code, f"{path}: {wrong.height} row(s) have {column} {wrong[column][0]!r}, expected {value!r}",
                    file=str(path), column=column, key={k: wrong[k][0] for k in entry.primary_key},
                )


def _s1_body(run: StateRun) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0}
    with run.timed("load"):
        run.identity = identity = resolve_identity(store, seed=run.seed, scenario_id=run.scenario_id, state="S1")
        g = load_gate(store, identity, state="S1")
        run.scenario_set = g.scenario_set
        grid_policy_path = g.path("time_grid_policy_5B")
        grouping_policy_path = g.path("grouping_policy_5B")
        grid_policy = grid.parse_time_grid_policy(g.policy("time_grid_policy_5B"), where=str(grid_policy_path))
        group_policy = grouping.parse_grouping_policy(g.policy("grouping_policy_5B"))
        manifest, manifest_path = read_sealed_table(g, "scenario_manifest_5A", code="5B.S1.INPUT_SCHEMA_INVALID")
        _check_input(store, "scenario_manifest_5A", manifest, manifest_path, identity)
        scenario = manifest.filter(pl.col("scenario_id") == identity.scenario_id).row(0, named=True)
        profile, profile_path = read_sealed_table(g, "merchant_zone_profile_5A", code="5B.S1.INPUT_SCHEMA_INVALID")
        _check_input(store, "merchant_zone_profile_5A", profile, profile_path, identity)
        virtual, virtual_path = _read_virtual(g, identity)
        _check_input(store, "virtual_classification_3B", virtual, virtual_path, identity)
        surface_path = g.path("merchant_zone_scenario_local_5A")
        domain = _read_domain(surface_path, code="5B.S1.DOMAIN_INVALID")
        if domain.height == 0:
            raise ArrivalError("5B.S1.DOMAIN_INVALID", f"{surface_path}: the λ surface has no entities",
                               file=str(surface_path))
    with run.timed("compute"):
        time_grid = conform(store, "s1_time_grid_5B", grid.build_grid(scenario, grid_policy,
                                                                       where=str(grid_policy_path)), identity)
        features = grouping.attach_features(domain, profile, virtual, policy=group_policy,
                                            where_profile=str(profile_path), where_virtual=str(virtual_path))
        groups = conform(store, "s1_grouping_5B", grouping.assign_groups(
            features, scenario_band=grid.scenario_band(scenario), policy=group_policy), identity)
        realism = grouping.measure_realism(groups, group_policy.realism)
    run.metrics |= {
        "bucket_count": time_grid.height,
        "bucket_duration_seconds": grid_policy.bucket_duration_seconds,
        **realism.metrics(),
    }
    grid_path = store.path("s1_time_grid_5B", **identity.tokens())
    grouping_path = store.path("s1_grouping_5B", **identity.tokens())
    with run.timed("validate"):
        validate_output(store, "s1_time_grid_5B", time_grid, code="5B.S1.TIME_GRID_SCHEMA_INVALID", path=grid_path)
        validate_output(store, "s1_grouping_5B", groups, code="5B.S1.GROUPING_SCHEMA_INVALID", path=grouping_path)
        grouping.enforce_realism(realism, scenario_id=identity.scenario_id, where=str(grouping_policy_path))
    with run.timed("publish"):
        with store.transaction("S1") as tx:
            tx.write_parquet("s1_time_grid_5B", grid_path, time_grid, arrow_schema(store, "s1_time_grid_5B"))
            tx.write_parquet("s1_grouping_5B", grouping_path, groups, arrow_schema(store, "s1_grouping_5B"))
    run.metrics["scenario_count_succeeded"] = 1
    return tx.published


def run_s1(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None) -> StateResult:
    """S1: build the scenario's time grid and pooling groups (seed-invariant outputs per (ph, mf, scenario))."""
    return execute_state(store, "S1", seed=seed, scenario_id=scenario_id, run_id=run_id, body=_s1_body)


# ---- S2 / S3: streaming helpers ------------------------------------------------------------------------------------

DEFAULT_CHUNK_ROWS = 4_000_000  # rows per streamed chunk (bounds memory); any chunk size gives the same bytes


def default_chunk_entities(buckets: int) -> int:
    """Entities per chunk so that a chunk holds about DEFAULT_CHUNK_ROWS rows."""
    return max(1, DEFAULT_CHUNK_ROWS // max(1, buckets))


def _sink_schema(store: Store, dataset_id: str) -> pa.Schema:
    """The contract's Arrow schema with string columns dictionary-encoded: the store keeps no Arrow schema in the
    file, so readers see plain strings, and constant or low-cardinality columns are never expanded."""
    schema = arrow_schema(store, dataset_id)
    dictionary = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([pa.field(f.name, dictionary) if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                      else f for f in schema])


# Expanding dictionary strings for a plain-string sink allocates a few hundred MB per row group that live only until
# they are encoded; the system allocator hands such blocks back and forth faster here than Arrow's default pool.
_CAST_POOL = pa.system_memory_pool()


class _ValueSets:
    """The value set of every column of a streamed table: each string column's dictionary values and each other
    column's extremes. Checking these against the contract checks every row's column rules (enums, patterns,
    ranges) without materialising the rows; nulls are refused as they arrive."""

    def __init__(self, store: Store, dataset_id: str, path: Path, code: str) -> None:
        self._store, self._dataset_id, self._path, self._code = store, dataset_id, path, code
        self._values: dict[str, set] = {}

    def add(self, table: pa.Table) -> None:
        for name in table.column_names:
            column = table[name]
            if column.null_count:
                raise ArrivalError(self._code, f"{self._path}: column {name} holds {column.null_count} null(s)",
                                   file=str(self._path), column=name)
            seen = self._values.setdefault(name, set())
            if pa.types.is_dictionary(column.type):  # every dictionary entry is a domain value, used or not
                for chunk in column.chunks:
                    if len(chunk):
                        seen.update(chunk.dictionary.to_pylist())
            elif pa.types.is_boolean(column.type) or pa.types.is_string(column.type) or \
                    pa.types.is_large_string(column.type):
                seen.update(pc.unique(column).to_pylist())
            elif len(column):
                extremes = pc.min_max(column)  # skips NaN, so non-finite values are added below
                seen.update((extremes["min"].as_py(), extremes["max"].as_py()))
                if pa.types.is_floating(column.type) and not math.isfinite(pc.sum(column).as_py()):
                    seen.update(pc.unique(pc.filter(column, pc.invert(pc.is_finite(column)))).to_pylist())

    def validate(self) -> None:
        """Raise the state's schema code naming the column and value that break the contract."""
        dtypes = contracts.polars_schema(self._store.entry(self._dataset_id).schema_ref, self._store.contracts_dir)
        if not self._values:
            return
        width = max(len(v) for v in self._values.values())
        frame = pl.DataFrame({name: pl.Series(name, _padded(sorted(self._values.get(name, ()), key=repr), width),
                                              dtype=dtype, strict=False) for name, dtype in dtypes.items()})
        contracts.validate_table(frame, self._store.entry(self._dataset_id).schema_ref, code=self._code,
                                 where=f"{self._path} (value sets of its rows)", contracts_dir=self._store.contracts_dir)


def _padded(values: list, width: int) -> list:
    return values + values[-1:] * (width - len(values)) if values else [None] * width


class _Output:
    """One streamed output file: its value sets are checked before commit, its rows encoded on a worker thread.

    The producer casts each table to the sink's schema and cuts it at the file's row-group boundaries, so the
    worker only encodes (whole row groups pass through the store's sink without being copied)."""

    def __init__(self, tx, store: Store, dataset_id: str, path: Path, code: str) -> None:
        self._schema = _sink_schema(store, dataset_id)
        self._sink = tx.parquet(dataset_id, path, self._schema)
        self.values = _ValueSets(store, dataset_id, path, code)
        self._offset = 0
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (table := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sink.write(table)
                except Exception as exc:  # noqa: BLE001 - any writer failure is re-raised by the producer
                    self._error = exc

    def write(self, table: pa.Table) -> None:
        """Check and queue a table's rows (blocks while the worker is more than a few row groups behind)."""
        if self._error is not None:
            raise self._error
        self.values.add(table)
        step = store_module.ROW_GROUP_ROWS
        start = 0
        while start < table.num_rows:
            length = min(table.num_rows - start, step - (self._offset + start) % step)
            piece = table.slice(start, length)
            self._queue.put(pa.table([pc.cast(piece[f.name], f.type, memory_pool=_CAST_POOL) for f in self._schema],
                                     schema=self._schema))
            start += length
        self._offset += table.num_rows

    def finish(self) -> None:
        """Wait until every queued table is written; re-raise a failure of the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


@contextmanager
def _outputs(tx, store: Store, specs: Sequence[tuple[str, Path, str]]) -> Iterator[list[_Output]]:
    """Streamed outputs (dataset, path, schema code) that are drained and checked before the transaction commits,
    and always drained before it aborts."""
    outputs = [_Output(tx, store, *spec) for spec in specs]
    try:
        yield outputs
    except BaseException:
        for out in outputs:
            with contextlib.suppress(Exception):  # the original failure is the one to report
                out.finish()
        raise
    for out in outputs:
        out.finish()
        out.values.validate()


def _identity_columns(identity: Identity, n: int, *, seeded: bool = True) -> dict[str, pa.Array]:
    cols = {"manifest_fingerprint": latent.constant(identity.manifest_fingerprint, n),
            "parameter_hash": latent.constant(identity.parameter_hash, n)}
    if seeded:
        cols["seed"] = pa.array(np.full(n, identity.seed, dtype=np.uint64))
    cols["scenario_id"] = latent.constant(identity.scenario_id, n)
    return cols


def _read_s1(store: Store, identity: Identity, state: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scenario's time grid and grouping, present and schema-valid, else `S1_OUTPUT_MISSING`."""
    code = state_code(state, "S1_OUTPUT_MISSING")
    frames = []
    for dataset_id in ("s1_time_grid_5B", "s1_grouping_5B"):
        path = store.path(dataset_id, **identity.tokens())
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ArrivalError(code, f"{dataset_id} for scenario {identity.scenario_id} cannot be read at {path}: "
                                     f"{exc}; run S1 first", file=str(path), dataset=dataset_id)
        validate_output(store, dataset_id, frame, code=code, path=path)
        _require_identity(frame, identity, path, code=code)
        frames.append(frame)
    grid_frame, groups = frames
    if not np.array_equal(grid_frame["bucket_index"].to_numpy(), np.arange(grid_frame.height)):
        raise ArrivalError(code, f"s1_time_grid_5B for {identity.scenario_id}: bucket_index is not 0..H-1")
    return grid_frame, groups


def _identity_values(identity: Identity, columns: Sequence[str]) -> dict[str, object]:
    """The partition's value of each identity column among `columns`."""
    values = {"manifest_fingerprint": identity.manifest_fingerprint, "parameter_hash": identity.parameter_hash,
              "seed": identity.seed, "scenario_id": identity.scenario_id}
    return {c: values[c] for c in columns if c in values}


def _require_identity(frame: pl.DataFrame, identity: Identity, path: Path, *, code: str) -> None:
    """Every identity column a frame carries must equal the partition's value."""
    for column, value in _identity_values(identity, frame.columns).items():
        if frame.height and (frame[column] != value).any():
            raise ArrivalError(code, f"{path}: column {column} holds {frame.filter(pl.col(column) != value)[column][0]!r},"
                                     f" expected {value!r}", file=str(path), column=column)


def surface_path(g: Gate, identity: Identity) -> Path:
    """The scenario's λ surface, still matching the digest S0 sealed (over every scenario's file)."""
    code = "5B.S2.LAMBDA_SOURCE_MISSING"
    artifact = "merchant_zone_scenario_local_5A"
    row = g.sealed(artifact, code=code)
    files = [(sid, g.path(artifact, code=code, scenario_id=sid)) for sid in g.scenario_set]
    for sid, path in files:
        if not path.is_file():
            raise ArrivalError(code, f"λ surface {artifact} for scenario {sid} is missing at {path}",
                               file=str(path), artifact_id=artifact)
    digest = gate.scenario_surface_digest([(sid, sha256_file(path)) for sid, path in files])
    if digest != row["sha256_hex"]:
        raise ArrivalError("5B.S2.S0_GATE_INVALID", f"{artifact} changed since S0 sealed it (digest {digest}, "
                                                    f"sealed {row['sha256_hex']})", artifact_id=artifact)
    return dict(files)[identity.scenario_id]


def _read_whole_entities(path: Path, columns: list[str], strings: list[str], buckets: int, chunk_entities: int
                         ) -> Iterator[tuple[int, pa.Table]]:
    """(first entity, rows) of at most `chunk_entities` whole entities, reading each row group once with the
    string columns dictionary-encoded (the file's row count is a multiple of `buckets`, checked by the caller)."""
    source = pq.ParquetFile(path, read_dictionary=strings)
    step = max(1, chunk_entities) * buckets
    pending: list[pa.Table] = []
    held, entity = 0, 0
    for group in range(source.num_row_groups):  # row groups, not rows
        part = source.read_row_group(group, columns=columns)
        pending.append(part)
        held += part.num_rows
        last = group == source.num_row_groups - 1
        if held < step and not last:
            continue
        table = pa.concat_tables(pending)
        start = 0
        while table.num_rows - start >= step or (last and start < table.num_rows):
            length = min(step, table.num_rows - start)
            yield entity, table.slice(start, length)
            entity += length // buckets
            start += length
        pending, held = [table.slice(start)], table.num_rows - start


def _stream_chunks(store: Store, dataset_id: str, path: Path, columns: list[str], domain: latent.Domain,
                   chunk_entities: int, *, bucket_column: str, group_column: str | None,
                   identity: Mapping[str, object], identity_code: str, state: str) -> Iterator[tuple[int, int, pa.Table]]:
    """Yield (e0, e1, rows) of whole entities in writer order, refusing a file that does not tile the domain or
    whose identity columns differ from the partition's."""
    surface = dataset_id
    dtypes = contracts.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    strings = [c for c in columns if dtypes.get(c) == pl.String]
    scan = pl.scan_parquet(path)
    try:
        total = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise ArrivalError(state_code(state, "DOMAIN_ALIGN_FAILED"), f"{path} cannot be read: {exc}", file=str(path))
    if total != domain.rows:
        raise _alignment_error(scan, domain, bucket_column, state=state, where=str(path), surface=surface)
    for e0, chunk in _read_whole_entities(path, columns, strings, domain.buckets, chunk_entities):
        e1 = e0 + chunk.num_rows // domain.buckets
        bad_key, bad_group = latent.chunk_misaligned(chunk, domain, e0, e1, bucket_column, group_column=group_column)
        if bad_key is not None:
            raise _alignment_error(scan, domain, bucket_column, state=state, where=str(path), surface=surface)
        if bad_group is not None:
            key = latent.row_key(chunk, bad_group, (*grouping.ENTITY_KEYS, bucket_column))
            expected = domain.group_ids[domain.entity_group[e0 + bad_group // domain.buckets]]
            raise ArrivalError(state_code(state, "DOMAIN_ALIGN_FAILED"),
                               f"{path}: the row at {key} carries {group_column} {chunk[group_column][bad_group]} "
                               f"but s1_grouping_5B assigns {expected!r}", file=str(path), key=key)
        for column, value in identity.items():
            if (row := latent.first_mismatch(chunk[column], value)) is not None:
                key = latent.row_key(chunk, row, (*grouping.ENTITY_KEYS, bucket_column))
                raise ArrivalError(identity_code,
                                   f"{path}: the row at {key} has {column} {chunk[column][row]}, the partition's is "
                                   f"{value!r}", file=str(path), column=column, key=key)
        yield e0, e1, chunk


def _alignment_error(scan: pl.LazyFrame, domain: latent.Domain, bucket_column: str, *, state: str, where: str,
                     surface: str) -> ArrivalError:
    """Summarise the file per entity (only when it failed to align) and explain the first defect."""
    b = pl.col(bucket_column)
    summary = scan.group_by(list(grouping.ENTITY_KEYS)).agg(
        pl.len().alias("rows"), b.n_unique().alias("distinct"), b.min().alias("min_bucket"),
        b.max().alias("max_bucket"), b.cast(pl.Int64).sum().alias("sum_bucket")).collect()
    return latent.alignment_error(summary, domain, state=state, where=where, surface=surface)


# ---- S2: latent intensity ------------------------------------------------------------------------------------------

def _latent_field_table(field: latent.LatentField, domain: latent.Domain, identity: Identity) -> pa.Table:
    """s2_latent_field_5B: one row per (group, bucket), groups in group_id order."""
    g, h = len(field.group_id), field.buckets
    n = g * h
    cols = _identity_columns(identity, n)
    cols["group_id"] = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(g, dtype=np.int32), h)),
                                                      domain.dictionaries["group_id"])
    cols |= {
        "bucket_index": pa.array(np.tile(np.arange(h, dtype=np.int32), g)),
        "latent_value": pa.array(field.latent.ravel()),
        "latent_mean": pa.array(np.zeros(n)),
        "latent_std": pa.array(np.repeat(field.sigma, h)),
        "length_scale_buckets": pa.array(np.repeat(field.length_scale, h)),
        "lambda_random_component": pa.array(field.factor.ravel()),
        "clipped": pa.array(field.clipped.ravel()),
    }
    return pa.table(cols)


def _latent_events_table(field: latent.LatentField, domain: latent.Domain, identity: Identity,
                         rng: audit.RngPolicy) -> pa.Table:
    """rng_event_arrival_lgcp_gaussian: one event per group (H blocks, 2H draws) in group_id order."""
    n = field.events
    fid = latent.FAMILY_ID
    cols = {"module": latent.constant(rng.module(fid), n), "substream_label": latent.constant(rng.substream(fid), n),
            "family_id": latent.constant(fid, n)}
    cols |= _identity_columns(identity, n)
    cols["group_id"] = pa.DictionaryArray.from_arrays(pa.array(np.arange(n, dtype=np.int32)),
                                                      domain.dictionaries["group_id"])
    cols |= {
        "rng_key": pa.array(field.rng_key),
        "rng_counter_before_lo": pa.array(field.counter_before[1]),
        "rng_counter_before_hi": pa.array(field.counter_before[0]),
        "rng_counter_after_lo": pa.array(field.counter_after[1]),
        "rng_counter_after_hi": pa.array(field.counter_after[0]),
        "draws": pa.array(np.full(n, 2 * field.buckets, dtype=np.int64)),
        "blocks": pa.array(np.full(n, field.buckets, dtype=np.int64)),
    }
    return pa.table(cols)


def _trace_table(trace: pl.DataFrame, identity: Identity, rng: audit.RngPolicy, family_id: str) -> pa.Table:
    n = trace.height
    cols = {"module": latent.constant(rng.module(family_id), n),
            "substream_label": latent.constant(rng.substream(family_id), n)}
    cols |= _identity_columns(identity, n)
    for name in trace.columns:
        cols[name] = trace[name].to_arrow()
    return pa.table(cols)


def _realised_table(domain: latent.Domain, e0: int, e1: int, identity: Identity, lgcp: latent.LgcpPolicy,
                    target: np.ndarray, factor: np.ndarray, realised: np.ndarray) -> pa.Table:
    """s2_realised_intensity_5B rows of entities e0..e1 (bucket order within each entity)."""
    n = len(target)
    cols = _identity_columns(identity, n) | latent.entity_columns(domain, e0, e1, with_group=True)
    cols |= {"lambda_baseline": pa.array(target), "lambda_random_component": pa.array(factor),
             "lambda_realised": pa.array(realised), "kernel_id": latent.constant(lgcp.kernel_id, n),
             "config_version": latent.constant(lgcp.version, n)}
    return pa.table(cols)


@dataclass
class _Summary:
    """Running min / max / sum / count of a value over streamed chunks."""

    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self.count += len(values)
            self.total += float(values.sum())
            self.low = min(self.low, float(values.min()))
            self.high = max(self.high, float(values.max()))

    def metrics(self, name: str) -> dict[str, float | None]:
        empty = self.count == 0
        return {f"{name}_min": None if empty else self.low, f"{name}_max": None if empty else self.high,
                f"{name}_mean": None if empty else self.total / self.count}


def _s2_body(run: StateRun, chunk_entities: int | None) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0, "scenario_count_failed": 1}
    with run.timed("load"):
        run.identity = identity = resolve_identity(store, seed=run.seed, scenario_id=run.scenario_id, state="S2")
        g = load_gate(store, identity, state="S2")
        run.scenario_set = g.scenario_set
        lgcp = latent.parse_lgcp_policy(g.policy("arrival_lgcp_config_5B"))
        rng = audit.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        time_grid, groups = _read_s1(store, identity, "S2")
        surface = surface_path(g, identity)
        params = latent.group_parameters(groups, lgcp)
        domain = latent.build_domain(groups, time_grid.height, tuple(params["group_id"].to_list()))
    h = domain.buckets
    run.metrics |= {"total_bucket_count": h, "total_entity_bucket_count": domain.rows,
                    "total_entity_count": domain.size, "total_group_count": len(domain.group_ids),
                    "total_latent_values": len(domain.group_ids) * h, "latent_model_id": lgcp.latent_model_id}
    with run.timed("latent"):
        field = latent.sample_latent(params, lgcp, h, manifest_fingerprint=identity.manifest_fingerprint,
                                     parameter_hash=identity.parameter_hash, seed=identity.seed,
                                     scenario_id=identity.scenario_id, domain_sep=rng.domain_sep)
        trace = audit.uniform_trace_frame(field.events, 2 * h, h, append_events=rng.trace_append_events)
    tokens = identity.tokens()
    paths = {d: store.path(d, **tokens) for d in ("s2_realised_intensity_5B", "s2_latent_field_5B",
                                                  "rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian")}
    target_stats, realised_stats = _Summary(), _Summary()
    capped = 0
    columns = [*grouping.ENTITY_KEYS, "local_horizon_bucket_index", "lambda_local_scenario", "manifest_fingerprint",
               "scenario_id"]
    where = str(surface)
    specs = [("s2_realised_intensity_5B", "REALISED_SCHEMA_INVALID"),
             ("rng_event_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH"),
             ("rng_trace_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH")]
    if lgcp.emit_latent_field:
        specs.append(("s2_latent_field_5B", "LATENT_SCHEMA_INVALID"))
    with run.timed("stream"), store.transaction("S2") as tx, \
            _outputs(tx, store, [(d, paths[d], f"5B.S2.{category}") for d, category in specs]) as outputs:
        writer, events_out, trace_out, *field_out = outputs
        events_out.write(_latent_events_table(field, domain, identity, rng))
        trace_out.write(_trace_table(trace, identity, rng, latent.FAMILY_ID))
        for out in field_out:
            out.write(_latent_field_table(field, domain, identity))
        for e0, e1, chunk in _stream_chunks(
                store, "merchant_zone_scenario_local_5A", surface, columns, domain,
                chunk_entities or default_chunk_entities(h), bucket_column="local_horizon_bucket_index",
                group_column=None, identity=_identity_values(identity, columns),
                identity_code="5B.S2.DOMAIN_ALIGN_FAILED", state="S2"):
            target = chunk["lambda_local_scenario"].to_numpy()
            error = latent.numeric_error(target, chunk, "local_horizon_bucket_index", column="lambda_local_scenario",
                                         code="5B.S2.REALISED_NUMERIC_INVALID", where=where)
            if error is not None:
                raise error
            factor, realised = latent.realise(target, domain.entity_group[e0:e1], field, lgcp.lambda_max)
            if lgcp.lambda_max is not None:
                capped += int((target * factor > lgcp.lambda_max).sum())
            error = latent.numeric_error(realised, chunk, "local_horizon_bucket_index", column="lambda_realised",
                                         code="5B.S2.REALISED_NUMERIC_INVALID", where=where)
            if error is not None:
                raise error
            target_stats.add(target)
            realised_stats.add(realised)
            writer.write(_realised_table(domain, e0, e1, identity, lgcp, target, factor, realised))
    factor_stats = _Summary()
    factor_stats.add(field.factor.ravel())
    run.metrics |= {
        "scenario_count_succeeded": 1, "scenario_count_failed": 0,
        "latent_field_rows_written": field.factor.size if lgcp.emit_latent_field else 0,
        "latent_rng_event_count": field.events, "latent_rng_total_draws": 2 * h * field.events,
        "latent_rng_total_blocks": h * field.events, "rng_trace_appends": trace.height,
        **factor_stats.metrics("lambda_random_component"),
        "latent_gaussian_mean": float(field.latent.mean()), "latent_gaussian_var": float(field.latent.var()),
        "latent_values_clipped": int(field.clipped.sum()),
        "latent_values_clipped_low": int((field.clipped & (field.factor == lgcp.min_factor)).sum()),
        "latent_values_clipped_high": int((field.clipped & (field.factor == lgcp.max_factor)).sum()),
        "lambda_max_capped_rows": capped,
        **target_stats.metrics("lambda_target"), **realised_stats.metrics("lambda_realised"),
        "chunk_entities": chunk_entities or default_chunk_entities(h),
    }
    return tx.published


def run_s2(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None,
           chunk_entities: int | None = None) -> StateResult:
    """S2: sample one latent field per group and publish λ_realised, the field and the RNG log (per seed)."""
    return execute_state(store, "S2", seed=seed, scenario_id=scenario_id, run_id=run_id,
                         body=lambda run: _s2_body(run, chunk_entities))


# ---- S3: bucket counts ---------------------------------------------------------------------------------------------

_S2_COLUMNS = ["manifest_fingerprint", "parameter_hash", "seed", "scenario_id", *grouping.ENTITY_KEYS, "bucket_index",
               "group_id", "lambda_realised"]


def _counts_table(domain: latent.Domain, e0: int, e1: int, identity: Identity, policy: counts.CountPolicy,
                  mu: np.ndarray, draws: counts.CountDraws) -> pa.Table:
    """s3_bucket_counts_5B rows of entities e0..e1; μ is λ_realised itself (never rescaled)."""
    n = len(mu)
    cols = _identity_columns(identity, n) | latent.entity_columns(domain, e0, e1, with_group=True)
    cols |= {"lambda_realised": pa.array(mu), "mu": pa.array(mu), "count_N": pa.array(draws.count),
             "count_law_id": latent.constant(policy.law, n), "count_capped": pa.array(draws.capped)}
    return pa.table(cols)


def _count_events_table(domain: latent.Domain, e0: int, e1: int, identity: Identity, policy: counts.CountPolicy,
                        rng: audit.RngPolicy, draws: counts.CountDraws) -> pa.Table:
    """rng_event_arrival_bucket_count rows: one per drawing (entity, bucket), in writer order."""
    n = len(draws.key)
    fid = counts.FAMILY_ID
    cols = {"module": latent.constant(rng.module(fid), n), "substream_label": latent.constant(rng.substream(fid), n),
            "family_id": latent.constant(fid, n)}
    cols |= _identity_columns(identity, n)
    cols |= latent.entity_columns(domain, e0, e1, with_group=False, rows=draws.event_rows)
    cols |= {
        "rng_key": pa.array(draws.key),
        "rng_counter_before_lo": pa.array(draws.before_lo),
        "rng_counter_before_hi": pa.array(draws.before_hi),
        "rng_counter_after_lo": pa.array(draws.after_lo),
        "rng_counter_after_hi": pa.array(draws.after_hi),
        "draws": pa.array(np.full(n, policy.draws_per_event, dtype=np.int64)),
        "blocks": pa.array(np.ones(n, dtype=np.int64)),
    }
    return pa.table(cols)


def _s3_body(run: StateRun, chunk_entities: int | None) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0, "scenario_count_failed": 1}
    with run.timed("load"):
        run.identity = identity = resolve_identity(store, seed=run.seed, scenario_id=run.scenario_id, state="S3")
        g = load_gate(store, identity, state="S3")
        run.scenario_set = g.scenario_set
        policy = counts.parse_count_policy(g.policy("arrival_count_config_5B"))
        rng = audit.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        time_grid, groups = _read_s1(store, identity, "S3")
        domain = latent.build_domain(groups, time_grid.height, tuple(groups["group_id"].unique().sort().to_list()))
        kappa = counts.entity_kappa(groups, policy) if policy.law == "nb2" else None
        source = store.path("s2_realised_intensity_5B", **identity.tokens())
        if not source.is_file():
            raise ArrivalError("5B.S3.S2_OUTPUT_MISSING", f"s2_realised_intensity_5B is missing at {source}; run S2 "
                                                          f"for seed {identity.seed} first", file=str(source))
    h = domain.buckets
    step = chunk_entities or default_chunk_entities(h)
    run.metrics |= {"total_bucket_count": h, "total_entity_bucket_count": domain.rows, "total_entity_count": domain.size,
                    "total_group_count": len(domain.group_ids), "count_law_id": policy.law, "chunk_entities": step}
    tokens = identity.tokens()
    paths = {d: store.path(d, **tokens) for d in ("s3_bucket_counts_5B", "rng_event_arrival_bucket_count",
                                                  "rng_trace_arrival_bucket_count")}
    mu_stats, count_stats = _Summary(), _Summary()
    events = capped = 0
    specs = [(d, paths[d], f"5B.S3.{category}") for d, category in (
        ("s3_bucket_counts_5B", "COUNTS_SCHEMA_INVALID"), ("rng_event_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"),
        ("rng_trace_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"))]
    with run.timed("stream"), store.transaction("S3") as tx, _outputs(tx, store, specs) as outputs:
        count_out, event_out, trace_out = outputs
        for e0, e1, chunk in _stream_chunks(
                store, "s2_realised_intensity_5B", source, _S2_COLUMNS, domain, step, bucket_column="bucket_index",
                group_column="group_id", identity=_identity_values(identity, _S2_COLUMNS),
                identity_code="5B.S3.S2_OUTPUT_MISSING", state="S3"):
            mu = chunk["lambda_realised"].to_numpy()
            error = latent.numeric_error(mu, chunk, "bucket_index", column="lambda_realised",
                                         code="5B.S3.S2_OUTPUT_MISSING", where=str(source))
            if error is not None:
                raise error
            bases = streams.stream_bases(counts.FAMILY_ID, identity.manifest_fingerprint, identity.parameter_hash,
                                         identity.seed, identity.scenario_id,
                                         counts.domain_keys(domain.entities.slice(e0, e1 - e0)),
                                         domain_sep=rng.domain_sep)
            draws = counts.draw_counts(mu, np.repeat(np.arange(e1 - e0), h),
                                       np.tile(np.arange(h, dtype=np.int32), e1 - e0), bases,
                                       None if kappa is None else kappa[e0:e1], policy)
            events += len(draws.key)
            capped += int(draws.capped.sum())
            mu_stats.add(mu)
            count_stats.add(draws.count.astype(np.float64))
            count_out.write(_counts_table(domain, e0, e1, identity, policy, mu, draws))
            event_out.write(_count_events_table(domain, e0, e1, identity, policy, rng, draws))
        trace = audit.uniform_trace_frame(events, policy.draws_per_event, 1, append_events=rng.trace_append_events)
        trace_out.write(_trace_table(trace, identity, rng, counts.FAMILY_ID))
    run.metrics |= {
        "scenario_count_succeeded": 1, "scenario_count_failed": 0,
        "count_rng_event_count": events, "count_rng_total_draws": events * policy.draws_per_event,
        "count_rng_total_blocks": events, "rng_trace_appends": trace.height,
        "zero_intensity_rows": domain.rows - events, "capped_count_rows": capped,
        **mu_stats.metrics("lambda_realised"), **count_stats.metrics("count_N"),
        "count_N_total": round(count_stats.total),
    }
    return tx.published


def run_s3(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None,
           chunk_entities: int | None = None) -> StateResult:
    """S3: draw a count per (entity, bucket) from λ_realised and publish the counts and their RNG log (per seed)."""
    return execute_state(store, "S3", seed=seed, scenario_id=scenario_id, run_id=run_id,
                         body=lambda run: _s3_body(run, chunk_entities))


# ---- audit: RNG accounting per partition ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FamilyLedger:
    """One RNG family of a partition as published: event-log totals, its trace, and what the outputs imply."""

    family_id: str
    events: audit.FamilyTotals
    trace: pl.DataFrame
    expected: audit.FamilyTotals
    event_path: Path
    trace_path: Path


def _scan_existing(store: Store, dataset_id: str, identity: Identity, *, code: str) -> tuple[pl.LazyFrame, Path]:
    path = store.path(dataset_id, **identity.tokens())
    if not path.is_file():
        raise ArrivalError(code, f"{dataset_id} is missing at {path}; run its state for seed {identity.seed} first",
                           file=str(path), dataset=dataset_id)
    return pl.scan_parquet(path), path


def _event_totals(scan: pl.LazyFrame) -> audit.FamilyTotals:
    row = scan.select(pl.len().alias("events"), pl.col("draws").sum().alias("draws"),
                      pl.col("blocks").sum().alias("blocks")).collect().row(0)
    return audit.FamilyTotals(*(int(v or 0) for v in row))


def read_ledger(g: Gate, family_id: str) -> FamilyLedger:
    """One family's published log and trace, and the totals its own state's outputs imply under the policies
    (the S2 family reads only S2's outputs, so its checks can run before S3)."""
    store, identity = g.store, g.identity
    if family_id == latent.FAMILY_ID:
        code = "5B.S3.S2_OUTPUT_MISSING"
        lgcp = latent.parse_lgcp_policy(g.policy("arrival_lgcp_config_5B"))
        realised, _ = _scan_existing(store, "s2_realised_intensity_5B", identity, code=code)
        groups, buckets = realised.select(pl.col("group_id").n_unique(),
                                          pl.col("bucket_index").n_unique()).collect().row(0)
        if lgcp.latent_model_id == "none":
            groups = 0
        events_id, trace_id = "rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian"
        expected = audit.FamilyTotals(groups, 2 * buckets * groups, buckets * groups)
    elif family_id == counts.FAMILY_ID:
        code = "5B.S3.RNG_ACCOUNTING_MISMATCH"
        policy = counts.parse_count_policy(g.policy("arrival_count_config_5B"))
        events_id, trace_id = "rng_event_arrival_bucket_count", "rng_trace_arrival_bucket_count"
        expected = _count_expectation(store, identity, policy)
    else:
        raise ArrivalError("5B.S3.RNG_ACCOUNTING_MISMATCH", f"unknown RNG family {family_id!r}", family=family_id)
    events, event_path = _scan_existing(store, events_id, identity, code=code)
    trace, trace_path = _scan_existing(store, trace_id, identity, code=code)
    return FamilyLedger(family_id, _event_totals(events), trace.collect(), expected, event_path, trace_path)


def read_ledgers(g: Gate) -> tuple[FamilyLedger, FamilyLedger]:
    """Both families' ledgers (S2's latent family, then S3's count family)."""
    return read_ledger(g, latent.FAMILY_ID), read_ledger(g, counts.FAMILY_ID)


def _count_expectation(store: Store, identity: Identity, policy: counts.CountPolicy) -> audit.FamilyTotals:
    scan, _ = _scan_existing(store, "s3_bucket_counts_5B", identity, code="5B.S3.RNG_ACCOUNTING_MISMATCH")
    drawing = int(scan.select((pl.col("mu") > policy.lambda_zero_eps).sum()).collect().item())
    return audit.FamilyTotals(drawing, drawing * policy.draws_per_event, drawing)


def _audit_body(run: StateRun) -> Sequence[Published]:
    store = run.store
    with run.timed("load"):
        run.identity = identity = resolve_identity(store, seed=run.seed, scenario_id=run.scenario_id, state="AUDIT")
        g = load_gate(store, identity, state="AUDIT")
        run.scenario_set = g.scenario_set
        rng = audit.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        ledgers = read_ledgers(g)
    with run.timed("reconcile"):
        for lg in ledgers:
            audit.reconcile(lg.family_id, events=lg.events, trace=audit.trace_totals(lg.trace), expected=lg.expected,
                            trace_issues=audit.trace_problems(lg.trace, append_events=rng.trace_append_events),
                            code="5B.S3.RNG_ACCOUNTING_MISMATCH", where=str(lg.event_path))
            run.metrics[lg.family_id] = {"events": lg.events.events, "draws": lg.events.draws,
                                         "blocks": lg.events.blocks, "trace_appends": lg.trace.height}
        record = ledger.audit_record(g.policy("arrival_rng_policy_5B"), g.sealed("arrival_rng_policy_5B")["sha256_hex"],
                                     identity.tokens(), {lg.family_id: lg.trace for lg in ledgers})
        path = store.path("rng_audit_log_5B", **identity.tokens())
        contracts.validate_document(record, store.entry("rng_audit_log_5B").schema_ref,
                                    code="5B.S3.RNG_ACCOUNTING_MISMATCH", where=str(path),
                                    contracts_dir=store.contracts_dir)
    with run.timed("publish"), store.transaction("S3") as tx:
        tx.write_json("rng_audit_log_5B", path, record)
    return tx.published


def run_audit(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None) -> StateResult:
    """Audit: reconcile both RNG families (events ↔ trace ↔ outputs) and publish the partition's audit record."""
    return execute_state(store, "AUDIT", seed=seed, scenario_id=scenario_id, run_id=run_id, body=_audit_body)


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


def read_document(path: Path) -> object:
    """A JSON document."""
    return json.loads(Path(path).read_bytes())


def read_entity_keys(path: Path) -> pl.DataFrame:
    """The distinct entities of a λ surface (key columns only)."""
    return _read_domain(path, code="5B.S1.DOMAIN_INVALID")


def read_rows(path: Path, start: int, length: int) -> pl.DataFrame:
    """Rows [start, start + length) of a parquet file."""
    return pl.scan_parquet(path).slice(start, length).collect()


def world_scenarios(store: Store) -> list[str]:
    """The scenario ids of a world's scenario manifest, sorted (validated as S0 validates them)."""
    world = read_world(store, "S0")
    path = store.path("scenario_manifest_5A", manifest_fingerprint=world.manifest_fingerprint)
    try:
        manifest = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ArrivalError("5B.S0.SCENARIO_MANIFEST_INVALID", f"{path} cannot be read: {exc}", file=str(path))
    return gate.check_scenario_manifest(manifest, where=str(path), contracts_dir=store.contracts_dir)

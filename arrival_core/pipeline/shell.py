"""The imperative shell: execute_state, identity, gate loading and the output helpers every state shares.

Every state runner is `run_xx(store, key, options)` (a `PartitionKey`, validated where it entered: the CLI, the
Dagster partition key, the bench) and goes through `execute_state`, which runs the state body and writes one run
report per execution (PASS or FAIL) in its own transaction.
"""
from __future__ import annotations

import errno
import io
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import yaml

from .. import contracts, gate, memory, reports, table_schema, tables
from ..encoding import sha256_hex
from ..errors import ArrivalError, error_code, has_code
from ..gate import Gate
from ..identity import Identity, PartitionKey, compute_parameter_hash
from ..rng.errors import CounterWrapError, RngArgumentError
from ..store import Published, Store, read_json, sweep_stale_subfolders
from . import records

Progress = Callable[[str, int, int], None]  # (state, rows done, rows in all), called as a state streams
Diagnosed = Callable[[Mapping[str, object]], None]  # a streamed state's diagnostics, once its last chunk is taken


@dataclass(frozen=True)
class StateResult:
    """What one successful state execution produced."""

    state: str  # "S0" | "S1" | ...
    identity: Identity
    published: tuple[Published, ...]
    report: dict
    report_path: Path
    diagnostics: Mapping[str, object] = field(default_factory=dict)  # for pictures, progress and the state's
    # checks (what it read that they would read again); never published


@dataclass
class StateRun:
    """One execution of a state: what its body has learnt so far, for the run report (PASS or FAIL)."""

    store: Store
    state: str
    key: PartitionKey
    run_id: str
    parameter_hash: str | None = None  # the one S0 sealed for this run (None: derive it from the live policies)
    identity: Identity | None = None
    scenario_set: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    progress: Progress | None = None
    diagnosed: Diagnosed | None = None
    diagnostics: dict = field(default_factory=dict)
    gate: Gate | None = None  # opened once per execution (a verify attempt and the body share it)
    rows_done: int = 0

    def advance(self, rows: int, total: int) -> None:
        """Count rows streamed and tell the progress callback (rows done, rows in all)."""
        self.rows_done += rows
        if self.progress is not None:
            self.progress(self.state, self.rows_done, total)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of a block to the phase's timing (a log value, never an identity output)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - start, 6)

    def open_gate(self) -> tuple[Identity, Gate]:
        """Resolve this partition's identity and its re-validated S0 gate (once per execution); record both on the
        run for the report."""
        if self.gate is None:
            self.identity = resolve_identity(self.store, self.key, state=self.state,
                                             parameter_hash=self.parameter_hash)
            self.gate = load_gate(self.store, self.identity, state=self.state)
            self.scenario_set = self.gate.scenario_set
        assert self.identity is not None
        return self.identity, self.gate


StateBody = Callable[[StateRun], Sequence[Published]]


@dataclass(frozen=True)
class RunOptions:
    """How one state execution runs; none of them changes a published byte."""

    run_id: str | None = None  # the run report's id (default: a fresh one)
    parameter_hash: str | None = None  # the one S0 sealed for the run (None: the live policies'); S0 seals, ignores it
    chunk_entities: int | None = None  # entities per streamed chunk (S2, S3; default from config/runtime.yaml)
    progress: Progress | None = None  # told the rows done as S2 and S3 stream
    reuse: bool = False  # verify a partition whose commit record matches its files instead of recomputing it
    observe: object | None = None  # S2 and S3: a `stream_state.StreamObserver` inspecting their outputs' row groups
    diagnosed: Diagnosed | None = None  # S2 and S3: told their diagnostics (what the pictures show) once the last
    # chunk is taken, while the outputs still finish and publish; it must return at once and never raise


DEFAULT_OPTIONS = RunOptions()  # a runner's default: a fresh run id, live policies, computed, silent
Runner = Callable[[Store, PartitionKey, RunOptions], StateResult]  # every state's: `run_xx(store, key, options)`


def execute_state(store: Store, state: str, key: PartitionKey, options: RunOptions, body: StateBody) -> StateResult:
    """Run a state body for one partition and write its run report; re-raise the failure after reporting it.

    `options.parameter_hash` pins the identity S0 sealed for the run, so a policy edited while the run goes on
    fails the gate (S0_GATE_INVALID naming the file) instead of moving later steps to another parameter_hash.
    With `options.reuse`, a partition whose commit record still matches its files is verified, not recomputed."""
    if not isinstance(key, PartitionKey):
        raise TypeError(f"{state}: the partition is a PartitionKey (validated where it entered), got {key!r}")
    memory.keep_freed_memory()
    seed_value, sid, reuse = key.seed, key.scenario_id, options.reuse
    run_id = options.run_id or uuid.uuid4().hex
    report_path = store.path("run_report_5B", state=state, seed=seed_value, scenario_id=sid, run_id=run_id)
    run = StateRun(store, state, key, run_id, options.parameter_hash, progress=options.progress,
                   diagnosed=options.diagnosed)
    started, clock = reports.utc_now(), time.perf_counter()
    failure: Exception | None = None
    published: tuple[Published, ...] = ()
    verified = False
    try:
        reused = _verified(run) if reuse else None
        verified = reused is not None
        published = reused if verified else tuple(body(run))
    except (RngArgumentError, CounterWrapError) as exc:
        failure = rng_failure(state, exc)
        failure.__cause__ = exc
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        failure = io_failure(state, exc)
        failure.__cause__ = exc
    except Exception as exc:  # noqa: BLE001 - reported (coded or not), then re-raised unchanged
        failure = exc
    run.timings["total"] = round(time.perf_counter() - clock, 6)
    report = reports.build_report(
        state=state, seed=seed_value, scenario_id=sid, run_id=run_id, identity=run.identity,
        scenario_set=run.scenario_set, failure=failure, started_at_utc=started, finished_at_utc=reports.utc_now(),
        metrics=run.metrics, published=published, timings=run.timings,
    )
    try:
        sweep_stale_subfolders(report_path.parent.parent)  # reports a killed run left half-written
        with store.transaction(state) as tx:
            tx.write_json("run_report_5B", report_path, report)
    except ArrivalError as report_failure:
        if failure is not None:
            raise failure from report_failure
        raise
    if failure is not None:
        raise failure
    assert run.identity is not None, f"{state} passed without resolving its identity"
    if not verified and published:
        records.write_commit_record(store, state, run.identity, published)
    return StateResult(state, run.identity, published, report, report_path, run.diagnostics)


_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EISDIR, errno.EEXIST})


def io_failure(state: str, exc: BaseException) -> ArrivalError:
    """The state's IO_READ_FAILED / IO_WRITE_FAILED for an I/O or decode failure no reader or writer coded
    closer to its cause, naming the file when the error knows it."""
    write = isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS
    path = getattr(exc, "filename", None)
    what = "write" if write else "read"
    where = f" {path}" if path else ""
    return ArrivalError(error_code(state, "IO_WRITE_FAILED" if write else "IO_READ_FAILED"),
                        f"cannot {what}{where}: {exc}", file=None if path is None else str(path))


def rng_failure(state: str, exc: RngArgumentError | CounterWrapError) -> ArrivalError:
    """The canonical code of an RNG-layer failure in a state: a counter wrap is an accounting failure, a shape
    outside the gamma law's domain a count-policy failure, and a λ or uniform outside its domain a numeric one."""
    if isinstance(exc, CounterWrapError):
        category = "RNG_ACCOUNTING_MISMATCH"
    elif exc.argument == "shape":
        category = "COUNT_CONFIG_INVALID"
    else:
        category = "REALISED_NUMERIC_INVALID" if state == "S2" else "COUNTS_NUMERIC_INVALID"
    return ArrivalError(error_code(state, category), str(exc), function=exc.function)


def _verified(run: StateRun) -> tuple[Published, ...] | None:
    """The state's outputs when its commit record matches them (the gate is re-validated first), else None."""
    identity, _ = run.open_gate()
    found = records.verified_outputs(run.store, run.state, identity)
    if found is not None:
        run.metrics["verified"] = True
    return found


# ---- identity ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """The world's run receipt and the bytes of the six policy files, read once per execution."""

    receipt: Mapping
    manifest_fingerprint: str
    upstream_parameter_hash: str
    parameter_hash: str
    policy_bytes: Mapping[str, bytes]
    policy_paths: Mapping[str, Path]


def read_receipt(store: Store, state: str = "S0") -> dict:
    """The world's validated run_receipt.json (S0's codes when S0 or a caller outside a state reads it)."""
    path = store.path("run_receipt")
    missing, invalid = (
        (error_code("S0", "RUN_RECEIPT_MISSING"), error_code("S0", "RUN_RECEIPT_INVALID")) if state == "S0"
        else (error_code(state, "S0_GATE_INVALID"),) * 2
    )
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArrivalError(missing, f"{path} does not exist: the run root holds no world", file=str(path)) from exc
    except OSError as exc:
        raise ArrivalError(missing, f"{path} cannot be read: {exc}", file=str(path)) from exc
    return gate.parse_run_receipt(raw, where=str(path), code=invalid, contracts_dir=store.contracts_dir)


def read_world(store: Store, state: str) -> World:
    """Read and validate run_receipt.json and hash the policy files into the parameter_hash (§2.1)."""
    receipt = read_receipt(store, state)
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


def resolve_identity(store: Store, key: PartitionKey, *, state: str, parameter_hash: str | None = None) -> Identity:
    """A partition's identity: mf from the run receipt and ph as pinned for the run, else as the live policy files
    give it (§2.1)."""
    if parameter_hash is not None:
        receipt = read_receipt(store, state)
        return Identity(parameter_hash, receipt["manifest_fingerprint"], key.seed, key.scenario_id)
    world = read_world(store, state)
    return Identity(world.parameter_hash, world.manifest_fingerprint, key.seed, key.scenario_id)


def parse_policy(data: bytes, entry: contracts.DatasetEntry, path: Path, *, code: str, store: Store) -> dict:
    """A policy file's YAML document, validated against its schema (`code` names the failure)."""
    try:
        doc = contracts.parse_yaml(data)
    except yaml.YAMLError as exc:
        raise ArrivalError(code, f"{path} is not YAML within the document limits: {exc}", file=str(path)) from exc
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
    return error_code(state, category if has_code(state, category) else "S0_GATE_INVALID")


# ---- the gate (DESIGN §5, last paragraph) ---------------------------------------------------------------------------

def _read_json_file(path: Path, *, code: str, what: str) -> object:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ArrivalError(code, f"{what} {path} does not exist; run S0 for this parameter_hash first", file=str(path))
    except (OSError, ValueError) as exc:
        raise ArrivalError(code, f"{what} {path} cannot be read: {exc}", file=str(path))


def load_gate(store: Store, identity: Identity, *, state: str) -> Gate:
    """Re-validate the S0 receipt and sealed inputs, recompute their digest, and parse the sealed policies."""
    code = error_code(state, "S0_GATE_INVALID")
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
        policies[entry.id] = parse_policy(data, entry, path, code=_policy_code(state, entry.id), store=store)
    return Gate(state, identity, receipt, by_id, policies, store)


# ---- outputs ---------------------------------------------------------------------------------------------------

def arrow_schema(store: Store, dataset_id: str) -> pa.Schema:
    """The explicit Arrow schema of a table dataset, derived from its contract: a column is nullable in the file
    only when its contract allows nulls."""
    spec = table_schema.table_spec(Path(store.contracts_dir).resolve(), store.entry(dataset_id).schema_ref)
    schema = pl.DataFrame(schema={c.name: c.dtype for c in spec.columns}).to_arrow().schema
    return pa.schema([f.with_nullable(c.nullable) for f, c in zip(schema, spec.columns)])


def conform(store: Store, dataset_id: str, frame: pl.DataFrame, identity: Identity) -> pl.DataFrame:
    """Add the identity columns the dataset carries and put the columns in contract order and dtypes."""
    dtypes = table_schema.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    frame = frame.with_columns(pl.lit(v).alias(k) for k, v in identity.columns().items() if k in dtypes)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in dtypes.items())


def validate_output(store: Store, dataset_id: str, frame: pl.DataFrame, *, code: str, path: Path) -> None:
    """Validate a table output in full against its contract, primary key and writer order."""
    entry = store.entry(dataset_id)
    tables.validate_table(frame, entry.schema_ref, code=code, where=str(path), primary_key=entry.primary_key,
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
            raise ArrivalError(error_code(g.state, "S0_GATE_INVALID"),
                               f"{path} changed since S0 sealed it (sha256 {digest}, sealed {row['sha256_hex']})",
                               file=str(path), artifact_id=artifact_id)
    return frame, path



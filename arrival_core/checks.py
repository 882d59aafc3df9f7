"""Checks of every 5B output, shared by the Dagster asset checks and `arrival verify`.

`evaluate` reads a dataset once (in row slices, so memory stays bounded) plus what it must be compared against,
and returns one outcome per spec. Reads go through `pipeline`; the statistics live in `corridors`-style pure
functions below so tests can call them on arrays.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from . import audit, contracts, counts, latent, pipeline
from .errors import ArrivalError
from .gate import Gate
from .grouping import ENTITY_KEYS
from .identity import Identity
from .rng import ledger, streams, variates
from .rng.philox import add_counter
from .store import Store

SCHEMA_VALID = "schema_valid"
PRIMARY_KEY_UNIQUE = "primary_key_unique"
DOMAIN_COMPLETE = "domain_complete"
NUMERIC_VALID = "numeric_valid"
GATE_CONSISTENT = "gate_consistent"
RNG_ACCOUNTING = "rng_accounting"
RNG_REPLAY = "rng_replay"
TRACE_SCHEMA_VALID = "trace_schema_valid"
TRACE_CONSISTENT = "trace_consistent"
LATENT_CORRIDOR = "latent_corridor"
COUNT_CORRIDOR = "count_corridor"

FALSE_ALARM = 1e-6  # per evaluation of a statistical corridor
NORMAL_CORRIDOR_Z = 6.0  # nominal two-sided 2e-9 under the normal approximation; the margin covers its error
REPLAY_MODES = ("sample", "full")


@dataclass(frozen=True)
class CheckSpec:
    """One check of one dataset: ERROR checks that block downstream assets, or WARN corridors."""

    name: str
    dataset_id: str
    severity: str  # "ERROR" | "WARN"
    blocking: bool
    description: str


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check for one partition; metadata is JSON-able and carries a Markdown `table_md`."""

    name: str
    dataset_id: str
    passed: bool
    severity: str
    summary: str
    metadata: dict


def _error(name: str, dataset_id: str, description: str) -> CheckSpec:
    return CheckSpec(name, dataset_id, "ERROR", True, description)


def _table_specs(dataset_id: str, *extra: CheckSpec) -> tuple[CheckSpec, ...]:
    return (
        _error(SCHEMA_VALID, dataset_id, "Every row satisfies the table contract (columns, dtypes, nulls, enums, "
                                         "ranges, patterns), checked in full."),
        _error(PRIMARY_KEY_UNIQUE, dataset_id, "Primary key unique and rows in writer order, across the whole file."),
        *extra,
    )


def _trace_specs(dataset_id: str) -> tuple[CheckSpec, ...]:
    return (
        _error(TRACE_SCHEMA_VALID, dataset_id, "The RNG trace satisfies its contract, keyed by append_index."),
        _error(TRACE_CONSISTENT, dataset_id, "Appends are full batches in writer order, running totals add up, and "
                                             "the totals equal the event log's."),
    )


_ACCOUNTING = ("Events ↔ trace ↔ outputs ↔ audit: the event log's events, draws and blocks equal the trace totals, "
               "what the outputs imply under the policies, and the audit record when present.")
_REPLAY = ("Re-derives RNG events from stream_base + Philox2x64-10 (replay_sample_events of them, or every one "
           "under `arrival verify`) and compares them exactly.")

CHECKS: tuple[CheckSpec, ...] = (
    _error(SCHEMA_VALID, "sealed_inputs_5B", "sealed_inputs_5B validates against its schema."),
    _error(PRIMARY_KEY_UNIQUE, "sealed_inputs_5B", "(owner_segment, artifact_id) unique and sorted."),
    _error(GATE_CONSISTENT, "sealed_inputs_5B", "The receipt's sealed_inputs_digest equals the recomputed digest and "
                                                "every sealed policy still has its sealed sha256."),
    _error(SCHEMA_VALID, "s0_gate_receipt_5B", "s0_gate_receipt_5B validates against its schema."),
    _error(GATE_CONSISTENT, "s0_gate_receipt_5B", "Every upstream segment PASSed and the receipt names this "
                                                  "parameter_hash, fingerprint and scenario."),
    *_table_specs("s1_time_grid_5B", _error(DOMAIN_COMPLETE, "s1_time_grid_5B",
                                            "Buckets 0..H-1, contiguous, spanning the manifest horizon exactly.")),
    *_table_specs("s1_grouping_5B", _error(DOMAIN_COMPLETE, "s1_grouping_5B",
                                           "Exactly one row per distinct entity of the scenario's λ surface.")),
    *_table_specs(
        "s2_realised_intensity_5B",
        _error(DOMAIN_COMPLETE, "s2_realised_intensity_5B", "Exactly grid × grouping: every grouped entity once per "
                                                            "bucket, with the group S1 assigned."),
        _error(NUMERIC_VALID, "s2_realised_intensity_5B", "λ_baseline equals the sealed λ_target, ξ lies within the "
                                                          "clipping factors and equals the latent field, and "
                                                          "λ_realised = min(λ_baseline·ξ, lambda_max) exactly."),
        _error(RNG_REPLAY, "s2_realised_intensity_5B", "ξ of the rows of replayed groups equals a fresh derivation "
                                                       "of their latent fields. " + _REPLAY),
    ),
    *_table_specs(
        "s2_latent_field_5B",
        _error(DOMAIN_COMPLETE, "s2_latent_field_5B", "Exactly one row per (group, bucket)."),
        _error(NUMERIC_VALID, "s2_latent_field_5B", "σ and length scale follow the LGCP policy per group, "
                                                    "ξ = clip(exp(Z − σ²/2)) and `clipped` marks exactly the "
                                                    "clipped factors."),
        _error(RNG_REPLAY, "s2_latent_field_5B", "Latent values of replayed groups equal a fresh derivation. " + _REPLAY),
        CheckSpec(LATENT_CORRIDOR, "s2_latent_field_5B", "WARN", False,
                  "Pooled latent variance ≈ σ² and lag-1 autocorrelation ≈ φ (OU) or 0 (iid), within rigorous "
                  "Laurent–Massart / martingale bounds; false-alarm probability ≤ 1e-6."),
    ),
    *_table_specs(
        "rng_event_arrival_lgcp_gaussian",
        _error(RNG_ACCOUNTING, "rng_event_arrival_lgcp_gaussian", _ACCOUNTING + " One event per group: 2H draws, "
                                                                                "H blocks."),
        _error(RNG_REPLAY, "rng_event_arrival_lgcp_gaussian", "Key and counters of the events equal the group's "
                                                              "stream base and base + H. " + _REPLAY),
    ),
    *_trace_specs("rng_trace_arrival_lgcp_gaussian"),
    *_table_specs(
        "s3_bucket_counts_5B",
        _error(DOMAIN_COMPLETE, "s3_bucket_counts_5B", "Exactly the rows of s2_realised_intensity_5B, in order, with "
                                                       "the same λ_realised."),
        _error(NUMERIC_VALID, "s3_bucket_counts_5B", "μ = λ_realised, 0 ≤ N ≤ max_count_per_bucket, N = 0 where "
                                                     "μ ≤ lambda_zero_eps, count_law_id is the policy's law."),
        _error(RNG_REPLAY, "s3_bucket_counts_5B", "count_N of replayed rows equals PoissonInv / GammaInv from a "
                                                  "fresh stream derivation. " + _REPLAY),
        CheckSpec(COUNT_CORRIDOR, "s3_bucket_counts_5B", "WARN", False,
                  "Counts vs μ: total within a Poisson Bernstein bound and dispersion index ≈ 1 (Poisson), or mean "
                  "and variance μ + μ²/κ within 6 standard errors (NB2); false-alarm probability ≤ 1e-6."),
    ),
    *_table_specs(
        "rng_event_arrival_bucket_count",
        _error(RNG_ACCOUNTING, "rng_event_arrival_bucket_count", _ACCOUNTING + " One event per count row with "
                                                                               "μ > lambda_zero_eps, same keys."),
        _error(RNG_REPLAY, "rng_event_arrival_bucket_count", "Key and counters equal the entity's stream base + "
                                                             "bucket_index (and + 1 after). " + _REPLAY),
    ),
    *_trace_specs("rng_trace_arrival_bucket_count"),
    _error(SCHEMA_VALID, "rng_audit_log_5B", "rng_audit_log_5B validates against its schema."),
    _error(RNG_ACCOUNTING, "rng_audit_log_5B", "The audit record equals the one recomputed from the event logs and "
                                               "traces of both families."),
)


def checks_for(dataset_id: str) -> tuple[CheckSpec, ...]:
    """Every check of one dataset, in catalogue order."""
    return tuple(spec for spec in CHECKS if spec.dataset_id == dataset_id)


# ---- results -------------------------------------------------------------------------------------------------------

@dataclass
class _Result:
    """A check's verdict under construction: problems found (with offending keys) and facts for the table."""

    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    offending: list = field(default_factory=list)

    def fail(self, message: str, key: Mapping | None = None) -> None:
        if len(self.problems) < 5:
            self.problems.append(message)
        if key is not None and len(self.offending) < 5:
            self.offending.append({k: _jsonable(v) for k, v in key.items()})


def _jsonable(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _outcome(spec: CheckSpec, result: _Result) -> CheckOutcome:
    passed = not result.problems
    summary = "passed" if passed else "; ".join(result.problems)
    facts = {k: _jsonable(v) for k, v in result.facts.items()}
    rows = [("status", "PASS" if passed else ("FAIL" if spec.severity == "ERROR" else "WARN"))]
    rows += list(facts.items()) + [(f"problem {i + 1}", p) for i, p in enumerate(result.problems)]
    table = "\n".join(["| field | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows])
    metadata = {**facts, "table_md": table}
    if result.offending:
        metadata["offending_keys"] = result.offending
    return CheckOutcome(spec.name, spec.dataset_id, passed, spec.severity, summary, metadata)


def _cell(value: object) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


# ---- context -------------------------------------------------------------------------------------------------------

@dataclass
class _Context:
    """What the evaluators of one partition share: identity, replay mode, policies, S1 domain (read lazily)."""

    store: Store
    identity: Identity
    replay: str
    dataset_id: str

    def path(self, dataset_id: str):
        return pipeline.output_path(self.store, dataset_id, self.identity)

    @cached_property
    def gate(self) -> Gate:
        return pipeline.load_gate(self.store, self.identity, state=self.store.entry(self.dataset_id).state or "S1")

    @cached_property
    def rng(self) -> audit.RngPolicy:
        return audit.parse_rng_policy(self.gate.policy("arrival_rng_policy_5B"))

    @cached_property
    def lgcp(self) -> latent.LgcpPolicy:
        return latent.parse_lgcp_policy(self.gate.policy("arrival_lgcp_config_5B"))

    @cached_property
    def count_policy(self) -> counts.CountPolicy:
        return counts.parse_count_policy(self.gate.policy("arrival_count_config_5B"))

    @cached_property
    def grouping(self) -> pl.DataFrame:
        return pipeline.read_table(self.path("s1_grouping_5B"))

    @cached_property
    def params(self) -> pl.DataFrame:
        return latent.group_parameters(self.grouping, self.lgcp)

    @cached_property
    def domain(self) -> latent.Domain:
        buckets = pipeline.table_rows(self.path("s1_time_grid_5B"))
        return latent.build_domain(self.grouping, buckets, tuple(self.params["group_id"].to_list()))

    def sample(self, total: int, *, full: bool | None = None) -> np.ndarray:
        """Deterministic replay positions: all under `full`, else replay_sample_events evenly spaced ones."""
        everything = self.replay == "full" if full is None else full
        m = total if everything else min(total, self.rng.replay_sample_events)
        return np.unique((np.arange(m) * total) // max(m, 1)).astype(np.int64)

    def replay_groups(self) -> tuple[np.ndarray, latent.LatentField]:
        """The replayed groups (indices in group_id order) and their freshly derived latent fields."""
        chosen = self.sample(len(self.domain.group_ids))
        ident = self.identity
        field = latent.sample_latent(self.params[chosen], self.lgcp, self.domain.buckets,
                                     manifest_fingerprint=ident.manifest_fingerprint,
                                     parameter_hash=ident.parameter_hash, seed=ident.seed,
                                     scenario_id=ident.scenario_id, domain_sep=self.rng.domain_sep)
        return chosen, field


def evaluate(store: Store, identity: Identity, dataset_id: str, *, replay: str = "sample") -> list[CheckOutcome]:
    """Run every check of one dataset for one partition; a dataset that cannot be read fails all its checks."""
    specs = checks_for(dataset_id)
    if not specs:
        raise ValueError(f"no checks are defined for dataset {dataset_id!r}")
    if replay not in REPLAY_MODES:
        raise ValueError(f"replay must be one of {REPLAY_MODES}, got {replay!r}")
    ctx = _Context(store, identity, replay, dataset_id)
    results: dict[str, _Result] = {}
    try:
        results = _EVALUATORS[dataset_id](ctx)
    except (ArrivalError, OSError, pl.exceptions.PolarsError) as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, ArrivalError) else f"cannot be read: {exc}"
        results = {}
        for spec in specs:
            results[spec.name] = _Result()
            results[spec.name].fail(reason)
    out = []
    for spec in specs:
        result = results.get(spec.name)
        if result is None:
            result = _Result()
            result.fail("not evaluated")
        out.append(_outcome(spec, result))
    return out


# ---- shared table scanning -----------------------------------------------------------------------------------------

_KEY_KINDS = ("pk_duplicate", "unsorted")


def _require(path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")


class _TableScan:
    """Schema and key checks of a table fed slice by slice, including the seams between slices."""

    def __init__(self, ctx: _Context, dataset_id: str) -> None:
        self.entry = ctx.store.entry(dataset_id)
        self.contracts_dir = ctx.store.contracts_dir
        self.schema, self.key = _Result(), _Result()
        self.rows = 0
        self._tail: pl.DataFrame | None = None

    def feed(self, start: int, frame: pl.DataFrame) -> None:
        entry = self.entry
        for v in contracts.table_violations(frame, entry.schema_ref, primary_key=entry.primary_key,
                                            writer_sort=entry.writer_sort, contracts_dir=self.contracts_dir):
            (self.key if v.kind in _KEY_KINDS else self.schema).fail(f"rows from {start}: {v.message}",
                                                                     v.example_key or None)
        if self._tail is not None and frame.height:
            seam = pl.concat([self._tail, frame.head(1)], how="vertical_relaxed")
            for v in contracts.table_violations(seam, entry.schema_ref, primary_key=entry.primary_key,
                                                writer_sort=entry.writer_sort, contracts_dir=self.contracts_dir):
                if v.kind in _KEY_KINDS:
                    self.key.fail(f"at row {start}: {v.message}", v.example_key or None)
        if frame.height:
            self._tail = frame.tail(1)
        self.rows += frame.height

    def results(self) -> dict[str, _Result]:
        self.schema.facts["rows"] = self.rows
        return {SCHEMA_VALID: self.schema, PRIMARY_KEY_UNIQUE: self.key}


def _scan_table(ctx: _Context, dataset_id: str, slice_rows: int,
                on_slice: Callable[[int, pl.DataFrame], None] | None = None) -> dict[str, _Result]:
    path = ctx.path(dataset_id)
    _require(path)
    scan = _TableScan(ctx, dataset_id)
    for start, frame in pipeline.read_slices(path, slice_rows):
        scan.feed(start, frame)
        if on_slice is not None:
            on_slice(start, frame)
    return scan.results()


def _document_schema(ctx: _Context, dataset_id: str, doc: object) -> _Result:
    result = _Result()
    try:
        contracts.validate_document(doc, ctx.store.entry(dataset_id).schema_ref, code="5B.CONTRACT_INVALID",
                                    where=str(ctx.path(dataset_id)), contracts_dir=ctx.store.contracts_dir)
    except ArrivalError as err:
        result.fail(err.message)
    return result


def _key_of(frame: pl.DataFrame, row: int, columns: tuple[str, ...]) -> dict:
    return {c: frame[c][row] for c in columns if c in frame.columns}


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


# ---- S0 and S1 -----------------------------------------------------------------------------------------------------

def _sealed_inputs(ctx: _Context) -> dict[str, _Result]:
    path = ctx.path("sealed_inputs_5B")
    _require(path)
    rows = pipeline.read_document(path)
    key, consistent = _Result(), _Result()
    if isinstance(rows, list):
        keys = [(r.get("owner_segment"), r.get("artifact_id")) for r in rows if isinstance(r, dict)]
        if len(set(keys)) != len(keys):
            key.fail("(owner_segment, artifact_id) repeats")
        if keys != sorted(keys, key=str):
            key.fail("rows are not sorted by (owner_segment, artifact_id)")
        key.facts["rows"] = len(rows)
    try:
        _ = ctx.gate  # loading the gate recomputes the digest and re-checks every sealed policy
    except ArrivalError as err:
        consistent.fail(f"{err.code}: {err.message}")
    return {SCHEMA_VALID: _document_schema(ctx, "sealed_inputs_5B", rows), PRIMARY_KEY_UNIQUE: key,
            GATE_CONSISTENT: consistent}


def _receipt(ctx: _Context) -> dict[str, _Result]:
    path = ctx.path("s0_gate_receipt_5B")
    _require(path)
    receipt = pipeline.read_document(path)
    consistent = _Result()
    try:
        g = ctx.gate
        statuses = {seg: v["status"] for seg, v in g.receipt["upstream_segments"].items()}
        consistent.facts |= {f"upstream {seg}": status for seg, status in sorted(statuses.items())}
        if any(status != "PASS" for status in statuses.values()):
            consistent.fail(f"upstream segments not PASS: {statuses}")
        if ctx.identity.scenario_id not in g.scenario_set:
            consistent.fail(f"scenario {ctx.identity.scenario_id} is not in the receipt's scenario_set")
    except ArrivalError as err:
        consistent.fail(f"{err.code}: {err.message}")
    return {SCHEMA_VALID: _document_schema(ctx, "s0_gate_receipt_5B", receipt), GATE_CONSISTENT: consistent}


def _time_grid(ctx: _Context) -> dict[str, _Result]:
    results = _scan_table(ctx, "s1_time_grid_5B", pipeline.DEFAULT_CHUNK_ROWS)
    frame = pipeline.read_table(ctx.path("s1_time_grid_5B"))
    domain = _Result()
    manifest, _ = pipeline.read_sealed_table(ctx.gate, "scenario_manifest_5A", code="5B.S1.INPUT_SCHEMA_INVALID")
    scenario = manifest.filter(pl.col("scenario_id") == ctx.identity.scenario_id)
    if frame.height == 0 or scenario.height != 1:
        domain.fail(f"{frame.height} bucket(s); scenario rows in the manifest: {scenario.height}")
    else:
        if not np.array_equal(frame["bucket_index"].to_numpy(), np.arange(frame.height)):
            domain.fail("bucket_index is not 0..H-1")
        if not frame["bucket_start_utc"].slice(1).equals(frame["bucket_end_utc"].slice(0, frame.height - 1)):
            domain.fail("buckets are not contiguous (a start differs from the previous end)")
        row = scenario.row(0, named=True)
        if frame["bucket_start_utc"][0] != row["horizon_start_utc"] or frame["bucket_end_utc"][-1] != row["horizon_end_utc"]:
            domain.fail(f"grid spans {frame['bucket_start_utc'][0]}..{frame['bucket_end_utc'][-1]}, manifest horizon "
                        f"{row['horizon_start_utc']}..{row['horizon_end_utc']}")
        domain.facts["buckets"] = frame.height
    return results | {DOMAIN_COMPLETE: domain}


def _grouping(ctx: _Context) -> dict[str, _Result]:
    results = _scan_table(ctx, "s1_grouping_5B", pipeline.DEFAULT_CHUNK_ROWS)
    domain = _Result()
    surface = ctx.gate.path("merchant_zone_scenario_local_5A")
    entities = pipeline.read_entity_keys(surface)
    grouped = ctx.grouping.select(ENTITY_KEYS)
    keys = list(ENTITY_KEYS)
    for label, left, right in (("λ surface entities with no grouping row", entities, grouped),
                               ("grouping rows with no λ surface entity", grouped, entities)):
        extra = left.join(right, on=keys, how="anti").sort(keys)
        if extra.height:
            domain.fail(f"{extra.height} {label}", extra.row(0, named=True))
    domain.facts |= {"entities": grouped.height, "groups": ctx.grouping["group_id"].n_unique()}
    return results | {DOMAIN_COMPLETE: domain}


# ---- S2 ------------------------------------------------------------------------------------------------------------

def _latent_matrix(ctx: _Context) -> pl.DataFrame | None:
    """The published latent field's columns (G·H rows), or None when the policy does not emit it."""
    path = ctx.path("s2_latent_field_5B")
    if not path.is_file():
        return None
    return pipeline.read_table(path, ["group_id", "bucket_index", "latent_value", "latent_std",
                                      "length_scale_buckets", "lambda_random_component", "clipped"])


def _realised(ctx: _Context) -> dict[str, _Result]:
    d, lgcp = ctx.domain, ctx.lgcp
    h = d.buckets
    path = ctx.path("s2_realised_intensity_5B")
    _require(path)
    total = pipeline.table_rows(path)
    domain, numeric, replay = _Result(), _Result(), _Result()
    aligned = [total == d.rows]
    if not aligned[0]:
        domain.fail(f"{total} rows, expected {d.size} entities × {h} buckets = {d.rows}")
    chosen, fresh = ctx.replay_groups()
    position = np.full(len(d.group_ids), -1)
    position[chosen] = np.arange(len(chosen))
    published = _latent_matrix(ctx)
    factors = None if published is None else published["lambda_random_component"].to_numpy().reshape(-1, h)
    slice_rows = pipeline.default_chunk_entities(h) * h
    source = pipeline.read_slices(pipeline.surface_path(ctx.gate, ctx.identity), slice_rows, ["lambda_local_scenario"])
    replayed = [0]

    def on_slice(start: int, frame: pl.DataFrame) -> None:
        if not aligned[0]:
            return
        e0 = start // h
        e1 = e0 + frame.height // h
        bad_key, bad_group = latent.chunk_misaligned(frame.to_arrow(), d, e0, e1, "bucket_index", group_column="group_id")
        if bad_key is not None or bad_group is not None:
            row = bad_key if bad_key is not None else bad_group
            domain.fail(f"row {start + row} breaks grid × grouping", _key_of(frame, row, (*ENTITY_KEYS, "bucket_index")))
            aligned[0] = False
            return
        target = frame["lambda_baseline"].to_numpy()
        factor = frame["lambda_random_component"].to_numpy()
        realised = frame["lambda_realised"].to_numpy()
        group = np.repeat(d.entity_group[e0:e1], h)
        bucket = frame["bucket_index"].to_numpy()
        _, src = next(source)
        checks = [
            ("λ_baseline differs from the sealed λ_target", target != src["lambda_local_scenario"].to_numpy()),
            ("ξ outside [min_factor, max_factor]", (factor < lgcp.min_factor) | (factor > lgcp.max_factor)),
            ("λ_realised ≠ min(λ_baseline·ξ, lambda_max)",
             realised != (target * factor if lgcp.lambda_max is None else np.minimum(target * factor, lgcp.lambda_max))),
        ]
        if factors is not None:
            checks.append(("ξ differs from s2_latent_field_5B", factor != factors[group, bucket]))
        for label, bad in checks:
            if (i := _first(bad)) is not None:
                numeric.fail(f"{int(bad.sum())} row(s): {label}", _key_of(frame, i, (*ENTITY_KEYS, "bucket_index")))
        rows = position[group] >= 0
        replayed[0] += int(rows.sum())
        bad = np.zeros(len(factor), dtype=bool)
        bad[rows] = factor[rows] != fresh.factor[position[group[rows]], bucket[rows]]
        if (i := _first(bad)) is not None:
            replay.fail(f"{int(bad.sum())} row(s) have ξ that does not replay", _key_of(frame, i, (*ENTITY_KEYS, "bucket_index")))

    results = _scan_table(ctx, "s2_realised_intensity_5B", slice_rows, on_slice)
    domain.facts |= {"rows": total, "entities": d.size, "buckets": h}
    replay.facts |= {"groups_replayed": len(chosen), "rows_compared": replayed[0], "mode": ctx.replay}
    return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay}


def _latent_field(ctx: _Context) -> dict[str, _Result]:
    lgcp, d = ctx.lgcp, ctx.domain
    if not ctx.path("s2_latent_field_5B").is_file() and not lgcp.emit_latent_field:
        result = _Result(facts={"emitted": False})
        return {spec.name: result for spec in checks_for("s2_latent_field_5B")}
    results = _scan_table(ctx, "s2_latent_field_5B", pipeline.DEFAULT_CHUNK_ROWS)
    table = _latent_matrix(ctx)
    g, h = len(d.group_ids), d.buckets
    domain, numeric, replay, corridor = _Result(), _Result(), _Result(), _Result()
    if table.height != g * h or not table["group_id"].equals(pl.Series(d.group_ids).gather(
            np.repeat(np.arange(g), h)), check_names=False) or not np.array_equal(
            table["bucket_index"].to_numpy(), np.tile(np.arange(h), g)):
        domain.fail(f"{table.height} rows; expected {g} groups × {h} buckets in (group_id, bucket) order")
        return results | {name: domain for name in (DOMAIN_COMPLETE, NUMERIC_VALID, RNG_REPLAY, LATENT_CORRIDOR)}
    domain.facts |= {"groups": g, "buckets": h}
    latent_z = table["latent_value"].to_numpy().reshape(g, h)
    factor = table["lambda_random_component"].to_numpy().reshape(g, h)
    none = lgcp.latent_model_id == "none"
    sigma = np.zeros(g) if none else ctx.params["sigma"].to_numpy()
    expected_std = np.repeat(sigma, h)
    raw = np.exp(latent_z - 0.5 * (sigma * sigma)[:, None])
    for label, bad in (
        ("latent_std differs from the policy's σ", table["latent_std"].to_numpy() != expected_std),
        ("length_scale_buckets differs from the policy",
         table["length_scale_buckets"].to_numpy() != np.repeat(ctx.params["length_scale_buckets"].to_numpy(), h)),
        ("ξ ≠ clip(exp(Z − σ²/2))", (factor != np.clip(raw, lgcp.min_factor, lgcp.max_factor)).ravel()),
        ("`clipped` does not mark the clipped factors", table["clipped"].to_numpy() != (factor != raw).ravel()),
    ):
        if (i := _first(bad)) is not None:
            numeric.fail(f"{int(bad.sum())} row(s): {label}", {"group_id": table["group_id"][i],
                                                              "bucket_index": table["bucket_index"][i]})
    chosen, fresh = ctx.replay_groups()
    bad = (latent_z[chosen] != fresh.latent) | (factor[chosen] != fresh.factor)
    if bad.any():
        gi, t = np.argwhere(bad)[0]
        replay.fail(f"{int(bad.sum())} latent value(s) do not replay", {"group_id": d.group_ids[chosen[gi]],
                                                                         "bucket_index": int(t)})
    replay.facts |= {"groups_replayed": len(chosen), "mode": ctx.replay}
    if none:
        corridor.facts["model"] = "none (ξ ≡ 1)"
        if (latent_z != 0).any() or (factor != 1).any():
            corridor.fail("latent_model_id none but Z ≠ 0 or ξ ≠ 1")
    else:
        phi = np.zeros(g) if lgcp.latent_model_id == "log_gaussian_iid_v1" else ctx.params["phi"].to_numpy()
        stats = latent_corridor(latent_z, sigma, phi, FALSE_ALARM)
        corridor.facts |= {k: v for k, v in stats.items() if k != "passed"}
        if not stats["variance_ok"]:
            corridor.fail(f"pooled Σ Z²/σ² = {stats['sum_sq']:.6g} outside [{stats['sum_sq_low']:.6g}, "
                          f"{stats['sum_sq_high']:.6g}] (σ̂/σ = {stats['sigma_ratio']:.4f})")
        if not stats["lag1_ok"]:
            corridor.fail(f"lag-1 martingale statistic {stats['lag1_stat']:.6g} outside ±{stats['lag1_bound']:.6g} "
                          f"(ρ̂ = {stats['lag1_estimate']:.4f}, mean φ = {stats['phi_mean']:.4f})")
    return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay, LATENT_CORRIDOR: corridor}


def latent_corridor(z: np.ndarray, sigma: np.ndarray, phi: np.ndarray, alpha: float) -> dict:
    """Rigorous corridors for G stationary AR(1) paths Z (G×H) with known σ_g, φ_g; false alarm ≤ alpha in total.

    Variance: Q = Σ Z²/σ² is a Gaussian quadratic form Σ λ_i w_i² (λ = eigenvalues of the AR(1) correlation
    matrices), so Laurent–Massart gives Q − GH ∈ [−2√(Vx), 2√(Vx) + 2Mx] with V = Σ tr(R²), M ≥ max λ_i =
    (1+φ)/(1−φ), x = ln(4/alpha) (alpha/4 per side). Lag-1: T = Σ Z_t(Z_{t+1} − φZ_t)/σ² is a martingale with
    conditionally Gaussian increments of variance v_t = (1−φ²)Z_t²/σ², so P(|T| ≥ a, Σv ≤ b) ≤ 2exp(−a²/2b); b
    bounds Σv by Laurent–Massart at alpha/4 and a is set so the exponential term is alpha/4.
    """
    g, h = z.shape
    w = z / sigma[:, None]
    k = np.arange(1, h)
    trace_r2 = h + 2.0 * np.array([np.sum((h - k) * p ** (2 * k)) for p in phi])
    x = math.log(4.0 / alpha)
    sum_sq = float((w * w).sum())
    v, m = float(trace_r2.sum()), float(np.max((1 + phi) / (1 - phi)))
    low, high = g * h - 2 * math.sqrt(v * x), g * h + 2 * math.sqrt(v * x) + 2 * m * x
    head = w[:, :-1]
    lag_stat = float((head * (w[:, 1:] - phi[:, None] * head)).sum())
    weight = 1.0 - phi * phi
    k1 = np.arange(1, h - 1)
    trace_r2_head = (h - 1) + 2.0 * np.array([np.sum((h - 1 - k1) * p ** (2 * k1)) for p in phi])
    v_mean = float((weight * (h - 1)).sum())
    v_bound = v_mean + 2 * math.sqrt(float((weight * weight * trace_r2_head).sum()) * x) + \
        2 * float(np.max(weight * (1 + phi) / (1 - phi))) * x
    lag_bound = math.sqrt(2.0 * v_bound * math.log(8.0 / alpha))
    return {
        "groups": g, "buckets": h, "sum_sq": sum_sq, "sum_sq_low": low, "sum_sq_high": high,
        "sigma_ratio": math.sqrt(sum_sq / (g * h)), "variance_ok": low <= sum_sq <= high,
        "lag1_stat": lag_stat, "lag1_bound": lag_bound, "lag1_ok": abs(lag_stat) <= lag_bound,
        "lag1_estimate": float((head * w[:, 1:]).sum() / (head * head).sum()), "phi_mean": float(phi.mean()),
        "false_alarm": alpha,
    }


def _ledger_result(ctx: _Context, family_id: str, events: audit.FamilyTotals, expected: audit.FamilyTotals,
                   trace: pl.DataFrame) -> _Result:
    result = _Result(facts={"events": events.events, "draws": events.draws, "blocks": events.blocks,
                            "trace_appends": trace.height})
    problems = audit.trace_problems(trace, append_events=ctx.rng.trace_append_events)
    for name, other in (("trace", audit.trace_totals(trace)), ("outputs", expected)):
        if other != events:
            problems.append(f"event log {events} but {name} {other}")
    audit_path = ctx.path("rng_audit_log_5B")
    if audit_path.is_file():
        record = pipeline.read_document(audit_path)
        fam = (record.get("families") or {}).get(family_id) if isinstance(record, dict) else None
        if fam is None or (fam.get("events"), fam.get("draws"), fam.get("blocks")) != (events.events, events.draws,
                                                                                       events.blocks):
            problems.append(f"audit record {fam} differs from the event log {events}")
        result.facts["audit"] = "compared"
    for p in problems:
        result.fail(p)
    return result


def _latent_events(ctx: _Context) -> dict[str, _Result]:
    results = _scan_table(ctx, "rng_event_arrival_lgcp_gaussian", pipeline.DEFAULT_CHUNK_ROWS)
    family = pipeline.read_ledger(ctx.gate, latent.FAMILY_ID)
    table = pipeline.read_table(ctx.path("rng_event_arrival_lgcp_gaussian"))
    accounting = _ledger_result(ctx, latent.FAMILY_ID, family.events, family.expected, family.trace)
    replay = _Result(facts={"mode": ctx.replay})
    d, h = ctx.domain, ctx.domain.buckets
    if ctx.lgcp.latent_model_id != "none":
        if table.height != len(d.group_ids) or table["group_id"].to_list() != list(d.group_ids):
            accounting.fail(f"{table.height} events; expected one per group ({len(d.group_ids)}) in group_id order")
        else:
            chosen = ctx.sample(len(d.group_ids))
            key, hi, lo = streams.stream_bases(latent.FAMILY_ID, ctx.identity.manifest_fingerprint,
                                               ctx.identity.parameter_hash, ctx.identity.seed, ctx.identity.scenario_id,
                                               [f"group_id={d.group_ids[i]}" for i in chosen],
                                               domain_sep=ctx.rng.domain_sep)
            after_lo = lo + np.uint64(h)
            after_hi = hi + (after_lo < lo).astype(np.uint64)
            sub = table[chosen]
            for column, expected in (("rng_key", key), ("rng_counter_before_hi", hi), ("rng_counter_before_lo", lo),
                                     ("rng_counter_after_hi", after_hi), ("rng_counter_after_lo", after_lo)):
                bad = sub[column].to_numpy() != expected
                if (i := _first(bad)) is not None:
                    replay.fail(f"{int(bad.sum())} event(s): {column} does not replay", {"group_id": sub["group_id"][i]})
            replay.facts["events_replayed"] = len(chosen)
        for column, value in (("draws", 2 * h), ("blocks", h)):
            if table.height and (table[column] != value).any():
                accounting.fail(f"{column} is not {value} for every event")
    return results | {RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}


def _trace(ctx: _Context, dataset_id: str, family_index: int) -> dict[str, _Result]:
    scan = _TableScan(ctx, dataset_id)
    path = ctx.path(dataset_id)
    _require(path)
    scan.feed(0, pipeline.read_table(path))
    family = pipeline.read_ledger(ctx.gate, (latent.FAMILY_ID, counts.FAMILY_ID)[family_index])
    consistent = _Result(facts={"appends": family.trace.height})
    for p in audit.trace_problems(family.trace, append_events=ctx.rng.trace_append_events):
        consistent.fail(p)
    if audit.trace_totals(family.trace) != family.events:
        consistent.fail(f"trace totals {audit.trace_totals(family.trace)} differ from the event log {family.events}")
    results = scan.results()
    return {TRACE_SCHEMA_VALID: _merge(results[SCHEMA_VALID], results[PRIMARY_KEY_UNIQUE]), TRACE_CONSISTENT: consistent}


def _merge(*parts: _Result) -> _Result:
    out = _Result()
    for part in parts:
        out.facts |= part.facts
        for p in part.problems:
            out.fail(p)
        out.offending += part.offending[: 5 - len(out.offending)]
    return out


# ---- S3 ------------------------------------------------------------------------------------------------------------

@dataclass
class _CountMoments:
    """Running sums over drawing, uncapped rows for the count corridors."""

    rows: int = 0
    mu: float = 0.0
    n: float = 0.0
    sq: float = 0.0  # Σ (N − μ)²
    mu_sq: float = 0.0  # Σ μ²
    w: float = 0.0  # Σ ((N − μ)² − N): mean 0 under Poisson
    var: float = 0.0  # Σ (μ + μ²/κ): the NB2 variance
    d: float = 0.0  # Σ ((N − μ)² − μ − μ²/κ)
    d_sq: float = 0.0  # Σ of its squares

    def add(self, mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None) -> None:
        r = n - mu
        self.rows += len(mu)
        self.mu += float(mu.sum())
        self.n += float(n.sum())
        self.sq += float((r * r).sum())
        self.mu_sq += float((mu * mu).sum())
        self.w += float((r * r - n).sum())
        if kappa is not None:
            v = mu + mu * mu / kappa
            dev = r * r - v
            self.var += float(v.sum())
            self.d += float(dev.sum())
            self.d_sq += float((dev * dev).sum())


def count_corridor(m: _CountMoments, law: str, alpha: float) -> dict:
    """Corridors for counts given μ. Poisson: the total is Poisson(Σμ), bounded by Bernstein at alpha/4 per side;
    the dispersion statistic Σ((N−μ)² − N) has mean 0 and variance 2Σμ², held within NORMAL_CORRIDOR_Z standard
    errors. NB2: Σ(N−μ) / √Σ(μ+μ²/κ) and the self-normalised Σ((N−μ)² − μ − μ²/κ) within NORMAL_CORRIDOR_Z."""
    out: dict = {"rows": m.rows, "sum_mu": m.mu, "sum_n": m.n, "law": law, "false_alarm": alpha}
    if m.rows == 0 or m.mu == 0:
        return out | {"passed": True}
    if law == "poisson":
        c = math.log(4.0 / alpha)
        up = c / 3 + math.sqrt((c / 3) ** 2 + 2 * m.mu * c)
        down = math.sqrt(2 * m.mu * c)
        z_disp = m.w / math.sqrt(2 * m.mu_sq) if m.mu_sq else 0.0
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.mu), "total_low": m.mu - down,
                "total_high": m.mu + up, "dispersion_index": m.sq / m.mu, "dispersion_z": z_disp}
        out["total_ok"] = m.mu - down <= m.n <= m.mu + up
        out["dispersion_ok"] = abs(z_disp) <= NORMAL_CORRIDOR_Z
    else:
        z_mean = (m.n - m.mu) / math.sqrt(m.var)
        z_var = m.d / math.sqrt(m.d_sq) if m.d_sq else 0.0
        out |= {"mean_z": z_mean, "variance_z": z_var, "variance_ratio": (m.sq / m.var) if m.var else None}
        out["total_ok"] = abs(z_mean) <= NORMAL_CORRIDOR_Z
        out["dispersion_ok"] = abs(z_var) <= NORMAL_CORRIDOR_Z
    return out | {"passed": out["total_ok"] and out["dispersion_ok"]}


def _replay_counts(ctx: _Context, frame: pl.DataFrame, e0: int, rows: np.ndarray, kappa: np.ndarray | None) -> np.ndarray:
    """count_N re-derived for chosen rows of a slice of whole entities starting at entity e0."""
    h = ctx.domain.buckets
    local_entity = rows // h
    entities, index = np.unique(local_entity, return_inverse=True)
    keys = counts.domain_keys(ctx.domain.entities[e0 + entities])
    ident = ctx.identity
    bases = streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                 ident.scenario_id, keys, domain_sep=ctx.rng.domain_sep)
    draws = counts.draw_counts(frame["mu"].to_numpy()[rows], index, frame["bucket_index"].to_numpy()[rows], bases,
                               None if kappa is None else kappa[e0 + entities], ctx.count_policy)
    return draws.count


def _counts(ctx: _Context) -> dict[str, _Result]:
    d, policy = ctx.domain, ctx.count_policy
    h = d.buckets
    path = ctx.path("s3_bucket_counts_5B")
    _require(path)
    total = pipeline.table_rows(path)
    domain, numeric, replay, corridor = _Result(), _Result(), _Result(), _Result()
    aligned = [total == d.rows]
    if not aligned[0]:
        domain.fail(f"{total} rows, expected {d.size} entities × {h} buckets = {d.rows}")
    kappa = counts.entity_kappa(ctx.grouping, policy) if policy.law == "nb2" else None
    slice_rows = pipeline.default_chunk_entities(h) * h
    source = pipeline.read_slices(ctx.path("s2_realised_intensity_5B"), slice_rows,
                                  [*ENTITY_KEYS, "bucket_index", "lambda_realised"])
    sample = ctx.sample(total)
    moments = _CountMoments()
    replayed = [0]

    def on_slice(start: int, frame: pl.DataFrame) -> None:
        if not aligned[0]:
            return
        e0 = start // h
        e1 = e0 + frame.height // h
        _, s2 = next(source)
        bad_key, bad_group = latent.chunk_misaligned(frame.to_arrow(), d, e0, e1, "bucket_index", group_column="group_id")
        same = all(frame[c].equals(s2[c]) for c in (*ENTITY_KEYS, "bucket_index"))
        if bad_key is not None or bad_group is not None or not same:
            domain.fail(f"rows from {start} are not the rows of s2_realised_intensity_5B / grid × grouping")
            aligned[0] = False
            return
        mu = frame["mu"].to_numpy()
        n = frame["count_N"].to_numpy()
        capped = frame["count_capped"].to_numpy()
        for label, bad in (
            ("λ_realised differs from s2_realised_intensity_5B", frame["lambda_realised"].to_numpy()
             != s2["lambda_realised"].to_numpy()),
            ("μ ≠ λ_realised", mu != frame["lambda_realised"].to_numpy()),
            ("count_N > max_count_per_bucket", n > policy.max_count),
            ("count_N > 0 where μ ≤ lambda_zero_eps", (mu <= policy.lambda_zero_eps) & (n != 0)),
            ("count_capped without count_N = max_count_per_bucket", capped & (n != policy.max_count)),
            (f"count_law_id is not {policy.law}", (frame["count_law_id"] != policy.law).to_numpy()),
        ):
            if (i := _first(bad)) is not None:
                numeric.fail(f"{int(bad.sum())} row(s): {label}", _key_of(frame, i, (*ENTITY_KEYS, "bucket_index")))
        rows = sample[(sample >= start) & (sample < start + frame.height)] - start
        if len(rows):
            again = _replay_counts(ctx, frame, e0, rows, kappa)
            replayed[0] += len(rows)
            bad = again != n[rows]
            if (i := _first(bad)) is not None:
                replay.fail(f"{int(bad.sum())} of {len(rows)} replayed row(s) differ",
                            _key_of(frame, int(rows[i]), (*ENTITY_KEYS, "bucket_index")) | {"count_N": int(n[rows[i]]),
                                                                                           "replayed": int(again[i])})
        use = (mu > policy.lambda_zero_eps) & ~capped
        k = None if kappa is None else np.repeat(kappa[e0:e1], h)[use]
        moments.add(mu[use], n[use].astype(np.float64), k)

    results = _scan_table(ctx, "s3_bucket_counts_5B", slice_rows, on_slice)
    replay.facts |= {"rows_replayed": replayed[0], "mode": ctx.replay}
    stats = count_corridor(moments, policy.law, FALSE_ALARM)
    corridor.facts |= {k: v for k, v in stats.items() if k not in ("passed",)}
    if not stats["passed"]:
        corridor.fail(f"counts outside their corridor: {({k: stats[k] for k in stats if k.endswith('_ok')})}")
    return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay, COUNT_CORRIDOR: corridor}


def _count_events(ctx: _Context) -> dict[str, _Result]:
    d, policy = ctx.domain, ctx.count_policy
    h = d.buckets
    path = ctx.path("rng_event_arrival_bucket_count")
    _require(path)
    family = pipeline.read_ledger(ctx.gate, counts.FAMILY_ID)
    accounting = _ledger_result(ctx, counts.FAMILY_ID, family.events, family.expected, family.trace)
    replay = _Result(facts={"mode": ctx.replay})
    scan = _TableScan(ctx, "rng_event_arrival_bucket_count")
    kappa = counts.entity_kappa(ctx.grouping, policy) if policy.law == "nb2" else None
    sample = ctx.sample(family.events.events, full=False)  # under `full` the counts' own check replays them all
    chosen: list[pl.DataFrame] = []
    offset, ident = 0, ctx.identity
    keys = (*ENTITY_KEYS, "bucket_index")
    step = pipeline.default_chunk_entities(h)
    for start, frame in pipeline.read_slices(ctx.path("s3_bucket_counts_5B"), step * h, [*keys, "mu", "count_N"]):
        e0, e1 = start // h, (start + frame.height) // h
        drew = frame["mu"].to_numpy() > policy.lambda_zero_eps
        expected = frame.filter(pl.Series(drew))
        events = pipeline.read_rows(path, offset, expected.height)
        scan.feed(offset, events)
        if not events.select(keys).equals(expected.select(keys)):
            accounting.fail(f"events from row {offset} are not the count rows with μ > lambda_zero_eps (same order)")
            break
        entity = np.repeat(np.arange(e0, e1), h)[drew]
        key, hi, lo = streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash,
                                           ident.seed, ident.scenario_id, counts.domain_keys(d.entities[np.unique(entity)]),
                                           domain_sep=ctx.rng.domain_sep)
        local = np.searchsorted(np.unique(entity), entity)
        bucket = expected["bucket_index"].to_numpy().astype(np.uint64)
        before_hi, before_lo, _ = add_counter(hi[local], lo[local], bucket)
        after_hi, after_lo, _ = add_counter(before_hi, before_lo, np.ones_like(bucket))
        for column, want in (("rng_key", key[local]), ("rng_counter_before_hi", before_hi),
                             ("rng_counter_before_lo", before_lo), ("rng_counter_after_hi", after_hi),
                             ("rng_counter_after_lo", after_lo),
                             ("draws", np.full(len(bucket), policy.draws_per_event)), ("blocks", np.ones(len(bucket)))):
            bad = events[column].to_numpy() != want
            if (i := _first(bad)) is not None:
                accounting.fail(f"{int(bad.sum())} event(s): {column} is not the stream base + bucket_index",
                                _key_of(events, i, keys))
        rows = sample[(sample >= offset) & (sample < offset + events.height)] - offset
        if len(rows):
            chosen.append(events[rows].with_columns(
                mu=expected["mu"].gather(rows), count_N=expected["count_N"].gather(rows),
                kappa=pl.Series(np.ones(len(rows)) if kappa is None else kappa[entity[rows]])))
        offset += events.height
    if offset != pipeline.table_rows(path):
        accounting.fail(f"the event log has {pipeline.table_rows(path)} rows, the counts imply {offset}")
    if chosen:
        _replay_count_events(ctx, pl.concat(chosen), policy, replay)
    return scan.results() | {RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}


def _replay_count_events(ctx: _Context, events: pl.DataFrame, policy: counts.CountPolicy, result: _Result) -> None:
    """Re-derive sampled events with the ledger (policy template → stream → blocks) and recompute their counts."""
    replayed = ledger.replay(ctx.gate.policy("arrival_rng_policy_5B"), counts.FAMILY_ID, events,
                             ctx.identity.tokens())
    for mismatch in replayed.mismatches:
        result.fail(mismatch)
    first = replayed.event_start[:-1]
    mu, kappa = events["mu"].to_numpy(), events["kappa"].to_numpy()
    u0 = variates.u01(replayed.x0[first])
    if policy.law == "poisson":
        n = variates.poisson_inv(mu, u0)
    else:
        n = variates.poisson_inv(variates.gamma_inv(kappa, u0) * mu / kappa, variates.u01(replayed.x1[first]))
    n = np.minimum(n, policy.max_count)
    bad = n != events["count_N"].to_numpy()
    if (i := _first(bad)) is not None:
        result.fail(f"{int(bad.sum())} of {len(bad)} replayed event(s) give another count",
                    _key_of(events, i, (*ENTITY_KEYS, "bucket_index")) | {"count_N": int(events["count_N"][i]),
                                                                           "replayed": int(n[i])})
    result.facts["events_replayed"] = events.height


def _audit_log(ctx: _Context) -> dict[str, _Result]:
    path = ctx.path("rng_audit_log_5B")
    _require(path)
    record = pipeline.read_document(path)
    accounting = _Result()
    ledgers = pipeline.read_ledgers(ctx.gate)
    expected = ledger.audit_record(ctx.gate.policy("arrival_rng_policy_5B"),
                                   ctx.gate.sealed("arrival_rng_policy_5B")["sha256_hex"], ctx.identity.tokens(),
                                   {lg.family_id: lg.trace for lg in ledgers})
    if record != expected:
        differing = sorted(k for k in set(expected) | set(record if isinstance(record, dict) else {})
                           if not isinstance(record, dict) or record.get(k) != expected.get(k))
        accounting.fail(f"the audit record differs from the recomputed one in {differing}")
    for lg in ledgers:
        if audit.trace_totals(lg.trace) != lg.events or lg.events != lg.expected:
            accounting.fail(f"{lg.family_id}: events {lg.events}, trace {audit.trace_totals(lg.trace)}, "
                            f"outputs {lg.expected}")
        accounting.facts[f"{lg.family_id} events"] = lg.events.events
    return {SCHEMA_VALID: _document_schema(ctx, "rng_audit_log_5B", record), RNG_ACCOUNTING: accounting}


_EVALUATORS: dict[str, Callable[[_Context], dict[str, _Result]]] = {
    "sealed_inputs_5B": _sealed_inputs,
    "s0_gate_receipt_5B": _receipt,
    "s1_time_grid_5B": _time_grid,
    "s1_grouping_5B": _grouping,
    "s2_realised_intensity_5B": _realised,
    "s2_latent_field_5B": _latent_field,
    "rng_event_arrival_lgcp_gaussian": _latent_events,
    "rng_trace_arrival_lgcp_gaussian": lambda ctx: _trace(ctx, "rng_trace_arrival_lgcp_gaussian", 0),
    "s3_bucket_counts_5B": _counts,
    "rng_event_arrival_bucket_count": _count_events,
    "rng_trace_arrival_bucket_count": lambda ctx: _trace(ctx, "rng_trace_arrival_bucket_count", 1),
    "rng_audit_log_5B": _audit_log,
}

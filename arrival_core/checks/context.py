"""What every check evaluation shares: results, the partition context and full-table scanning."""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import polars as pl

from .. import contracts, counts, entity_grid, latent, pipeline, tables
from ..encoding import jsonable
from ..errors import CONTRACT_INVALID, ArrivalError
from ..gate import Gate
from ..identity import Identity
from ..reports import markdown_table
from ..rng import ledger, streams
from ..store import Store
from . import compiled, reference
from .specs import PRIMARY_KEY_UNIQUE, SCHEMA_VALID, CheckOutcome, CheckSpec

# ---- results -------------------------------------------------------------------------------------------------------

@dataclass
class CheckResult:
    """A check's verdict under construction: problems found (with offending keys) and facts for the table."""

    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    offending: list = field(default_factory=list)

    def fail(self, message: str, key: Mapping | None = None) -> None:
        if len(self.problems) < 5:
            self.problems.append(message)
        if key is not None and len(self.offending) < 5:
            self.offending.append({k: jsonable(v) for k, v in key.items()})


def to_outcome(spec: CheckSpec, result: CheckResult) -> CheckOutcome:
    passed = not result.problems
    summary = "passed" if passed else "; ".join(result.problems)
    facts = {k: jsonable(v) for k, v in result.facts.items()}
    rows = [("status", "PASS" if passed else ("FAIL" if spec.severity == "ERROR" else "WARN"))]
    rows += list(facts.items()) + [(f"problem {i + 1}", p) for i, p in enumerate(result.problems)]
    table = markdown_table(rows)
    metadata = {**facts, "table_md": table}
    if result.offending:
        metadata["offending_keys"] = result.offending
    return CheckOutcome(spec.name, spec.dataset_id, passed, spec.severity, summary, metadata)


T = TypeVar("T")
_STRATA = ("scenario_band", "demand_class", "channel_group", "virtual_band")  # a group's strata (laws §8)

# ---- context -------------------------------------------------------------------------------------------------------

class Derived:
    """What a partition's checks derive once (policies, grouping, domain, the reference's replay), shared by the
    views evaluating its datasets, at the same time too: each value is made by the first view that asks, while
    the others wait for it."""

    def __init__(self) -> None:
        self._values: dict = {}
        self._locks: dict = {}
        self._lock = threading.Lock()

    def get(self, key: object, make: Callable[[], T]) -> T:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]


def derived_once(method: Callable[[CheckContext], T]) -> property:
    """A context property made once per partition (in the shared `Derived`), not once per view."""
    name = method.__name__

    @functools.wraps(method)
    def get(self: CheckContext) -> T:
        return self.derived.get(name, lambda: method(self))

    return property(get)


@dataclass
class CheckContext:
    """The view of one dataset's evaluation (`dataset_id`) on what every evaluator of a partition shares:
    identity, replay mode, and in `derived` the policies, S1 domain and the reference's replayed groups, each read
    or derived once however many datasets are evaluated with it, one after another or at once."""

    store: Store
    identity: Identity
    replay: str
    dataset_id: str = ""
    derived: Derived = field(default_factory=Derived, repr=False, compare=False)

    def view(self, dataset_id: str) -> CheckContext:
        """The view of another dataset's evaluation, sharing what this one derived."""
        return CheckContext(self.store, self.identity, self.replay, dataset_id, self.derived)

    def path(self, dataset_id: str):
        return pipeline.output_path(self.store, dataset_id, self.identity)

    def entity_span(self, start: int, frame: pl.DataFrame) -> tuple[int, int, int | None]:
        """(e0, e1, first misaligned row or None) of a slice of whole entities starting at row `start`, checked
        against grid × grouping (entity keys, bucket order and the group S1 assigned)."""
        h = self.domain.buckets
        e0 = start // h
        e1 = e0 + frame.height // h
        bad_key, bad_group = entity_grid.chunk_misaligned(frame.to_arrow(), self.domain, e0, e1, "bucket_index",
                                                          group_column="group_id")
        return e0, e1, bad_key if bad_key is not None else bad_group

    @derived_once
    def surface(self):
        """The scenario's λ surface (S0 proved its digest; the checks compare its values, so need not re-hash it)."""
        return self.gate.path("merchant_zone_scenario_local_5A", scenario_id=self.identity.scenario_id)

    @derived_once
    def surface_entities(self) -> pl.DataFrame:
        """The distinct entities of the scenario's λ surface (key columns), as S1 reads them."""
        return pipeline.read_entity_keys(self.gate.path("merchant_zone_scenario_local_5A"))

    @derived_once
    def corridors(self) -> dict:
        """The statistical corridors' settings (config/check_policy.yaml)."""
        return pipeline.read_check_policy(self.store)

    @property
    def gate(self) -> Gate:
        """The re-validated gate, read as the dataset's state reads it (S0's own outputs as S1, its first reader)."""
        state = self.store.entry(self.dataset_id).state
        state = state if state not in (None, "S0") else "S1"
        return self.derived.get(("gate", state), lambda: pipeline.load_gate(self.store, self.identity, state=state))

    def family_log(self, family_id: str) -> pipeline.FamilyLog:
        """A family's published event-log totals and trace (`pipeline.read_family_log`), read once per partition."""
        return self.derived.get(("log", family_id), lambda: pipeline.read_family_log(self.gate, family_id))

    def family_ledger(self, family_id: str) -> pipeline.FamilyLedger:
        """A family's ledger (`pipeline.read_ledger`): its shared log and what the outputs imply, read once per
        partition however many checks reconcile it."""
        return self.derived.get(("ledger", family_id), lambda: pipeline.read_ledger(
            self.gate, family_id, log=self.family_log(family_id)))

    def family_ledgers(self) -> tuple[pipeline.FamilyLedger, pipeline.FamilyLedger]:
        """Both families' ledgers, S2's latent family then S3's count family (as `pipeline.read_ledgers`; those
        the audit read when its step knows them)."""
        return self.derived.get("family_ledgers", lambda: (self.family_ledger(latent.FAMILY_ID),
                                                           self.family_ledger(counts.FAMILY_ID)))

    @derived_once
    def rng(self) -> ledger.RngPolicy:
        return ledger.parse_rng_policy(self.gate.policy("arrival_rng_policy_5B"))

    @derived_once
    def lgcp(self) -> latent.LgcpPolicy:
        return latent.parse_lgcp_policy(self.gate.policy("arrival_lgcp_config_5B"))

    @derived_once
    def count_policy(self) -> counts.CountPolicy:
        return counts.parse_count_policy(self.gate.policy("arrival_count_config_5B"))

    @derived_once
    def grouping(self) -> pl.DataFrame:
        return pipeline.read_table(self.path("s1_grouping_5B"))

    @derived_once
    def params(self) -> pl.DataFrame:
        return latent.group_parameters(self.grouping, self.lgcp)

    @derived_once
    def domain(self) -> entity_grid.Domain:
        buckets = pipeline.table_rows(self.path("s1_time_grid_5B"))
        return entity_grid.build_domain(self.grouping, buckets, tuple(self.params["group_id"].to_list()))

    @derived_once
    def count_stream_bases(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key, counter_hi, counter_lo) of every entity's S3 count stream, in writer order, by the engine's
        derivation (the envelopes the count events must log; the reference derives its sample's on its own)."""
        ident = self.identity
        return streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                    ident.scenario_id, counts.domain_keys(self.domain.entities),
                                    domain_sep=self.rng.domain_sep, coupled=self.rng.coupled)

    def sample(self, total: int, *, full: bool | None = None) -> np.ndarray:
        """Deterministic replay positions: all under `full`, else replay_sample_events evenly spaced ones."""
        everything = self.replay == "full" if full is None else full
        m = total if everything else min(total, self.rng.replay_sample_events)
        return np.unique((np.arange(m) * total) // max(m, 1)).astype(np.int64)

    def replay_groups(self) -> tuple[np.ndarray, ReplayedGroups]:
        """The sampled groups (indices in group_id order, the sample in both modes) and their latent fields derived
        afresh by the independent reference (`checks/reference.py`) from the policy documents and the law alone."""
        return self._replay_sample

    @derived_once
    def _replay_sample(self) -> tuple[np.ndarray, ReplayedGroups]:
        chosen = self.sample(len(self.domain.group_ids), full=False)
        return chosen, self._replayed(tuple(chosen.tolist()))

    def group_replays(self) -> list[tuple[str, np.ndarray, ReplayedGroups | latent.LatentField]]:
        """(by, groups, fields) to compare with the published latent values: the reference on the sample, and under
        `full` also the engine's own sampler on every group (the fast path of a full replay)."""
        out: list = [("reference", *self.replay_groups())]
        if self.replay == "full":
            out.append(self._engine_replay)
        return out

    @derived_once
    def _engine_replay(self) -> tuple[str, np.ndarray, latent.LatentField]:
        ident = self.identity
        every = np.arange(len(self.domain.group_ids), dtype=np.int64)
        return ("engine", every, latent.sample_latent(
            self.params, self.lgcp, self.domain.buckets, manifest_fingerprint=ident.manifest_fingerprint,
            parameter_hash=ident.parameter_hash, seed=ident.seed, scenario_id=ident.scenario_id,
            domain_sep=self.rng.domain_sep, coupled=self.rng.coupled))

    def _replayed(self, chosen: tuple[int, ...]) -> ReplayedGroups:
        ident, lgcp_doc = self.identity, self.gate.policy("arrival_lgcp_config_5B")
        rng_doc = self.gate.policy("arrival_rng_policy_5B")
        coupled = rng_doc.get("scenario_coupling", "independent_v1") == "common_v1"
        h, none = self.domain.buckets, lgcp_doc["latent_model_id"] == "none"
        strata = self.params.select("group_id", *_STRATA)[list(chosen)].to_dicts()  # the replayed groups only
        if none:
            return ReplayedGroups(np.zeros((len(chosen), h)), np.ones((len(chosen), h)),
                                  np.zeros(len(chosen), np.int64), np.zeros((len(chosen), 3), dtype=np.uint64))
        bases = np.array([reference.stream_base(rng_doc["derivation"]["domain_sep"], latent.FAMILY_ID,
                                                ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                                "*" if coupled else ident.scenario_id,
                                                reference.group_domain_key(rng_doc, row["group_id"]))
                          for row in strata], dtype=np.uint64).reshape(-1, 3)  # over the replayed groups
        compiled.ready()  # the reference's loops load from numba's cache
        z, blocks = reference.latent_groups(lgcp_doc, strata, h, bases, coupled)
        sigma = np.array([reference.group_sigma_length(lgcp_doc, row)[0] for row in strata])
        return ReplayedGroups(z, reference.factors(z, sigma, lgcp_doc), blocks, bases)


@dataclass(frozen=True)
class ReplayedGroups:
    """Replayed groups' latent values Z and factors ξ (groups × H), event blocks and stream bases (key, hi, lo)."""

    latent: np.ndarray
    factor: np.ndarray
    blocks: np.ndarray
    base: np.ndarray




# ---- shared table scanning -----------------------------------------------------------------------------------------

_KEY_KINDS = ("pk_duplicate", "unsorted")


def require_file(path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")


class TableScan:
    """Schema and key checks of a table fed slice by slice, including the seams between slices."""

    def __init__(self, ctx: CheckContext, dataset_id: str) -> None:
        self.entry = ctx.store.entry(dataset_id)
        self.contracts_dir = ctx.store.contracts_dir
        self.schema, self.key = CheckResult(), CheckResult()
        self.rows = 0
        self._tail: pl.DataFrame | None = None

    def feed(self, start: int, frame: pl.DataFrame) -> None:
        entry = self.entry
        for v in tables.table_violations(frame, entry.schema_ref, primary_key=entry.primary_key,
                                            writer_sort=entry.writer_sort, contracts_dir=self.contracts_dir):
            (self.key if v.kind in _KEY_KINDS else self.schema).fail(f"rows from {start}: {v.message}",
                                                                     v.example_key or None)
        if self._tail is not None and frame.height:
            seam = pl.concat([self._tail, frame.head(1)], how="vertical_relaxed")
            for v in tables.table_violations(seam, entry.schema_ref, primary_key=entry.primary_key,
                                                writer_sort=entry.writer_sort, contracts_dir=self.contracts_dir):
                if v.kind in _KEY_KINDS:
                    self.key.fail(f"at row {start}: {v.message}", v.example_key or None)
        if frame.height:
            self._tail = frame.tail(1)
        self.rows += frame.height

    def results(self) -> dict[str, CheckResult]:
        self.schema.facts["rows"] = self.rows
        return {SCHEMA_VALID: self.schema, PRIMARY_KEY_UNIQUE: self.key}


def scan_table(ctx: CheckContext, dataset_id: str, slice_rows: int,
                on_slice: Callable[[int, pl.DataFrame], None] | None = None) -> dict[str, CheckResult]:
    path = ctx.path(dataset_id)
    require_file(path)
    scan = TableScan(ctx, dataset_id)
    for start, frame in pipeline.read_slices(path, slice_rows):
        scan.feed(start, frame)
        if on_slice is not None:
            on_slice(start, frame)
    return scan.results()


def document_schema(ctx: CheckContext, dataset_id: str, doc: object) -> CheckResult:
    result = CheckResult()
    try:
        contracts.validate_document(doc, ctx.store.entry(dataset_id).schema_ref, code=CONTRACT_INVALID,
                                    where=str(ctx.path(dataset_id)), contracts_dir=ctx.store.contracts_dir)
    except ArrivalError as err:
        result.fail(err.message)
    return result


def key_of(frame: pl.DataFrame, row: int, columns: tuple[str, ...]) -> dict:
    return {c: frame[c][row] for c in columns if c in frame.columns}


def first_true(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None

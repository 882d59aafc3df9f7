"""The RNG audit of a partition: both families' logs and traces reconciled with what the outputs imply."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .. import contracts, counts, latent
from ..errors import ArrivalError, error_code
from ..gate import Gate
from ..identity import Identity, PartitionKey
from ..rng import ledger
from ..store import Published, Store
from .shell import DEFAULT_OPTIONS, RunOptions, StateResult, StateRun, execute_state

# ---- audit: RNG accounting per partition ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FamilyLedger:
    """One RNG family of a partition as published: event-log totals, its trace, and what the outputs imply."""

    family_id: str
    events: ledger.FamilyTotals
    trace: pl.DataFrame
    expected: ledger.FamilyTotals
    event_path: Path
    trace_path: Path


def _scan_existing(store: Store, dataset_id: str, identity: Identity, *, code: str) -> tuple[pl.LazyFrame, Path]:
    path = store.path(dataset_id, **identity.tokens())
    if not path.is_file():
        raise ArrivalError(code, f"{dataset_id} is missing at {path}; run its state for seed {identity.seed} first",
                           file=str(path), dataset=dataset_id)
    return pl.scan_parquet(path), path


def _event_totals(scan: pl.LazyFrame) -> ledger.FamilyTotals:
    row = scan.select(pl.len().alias("events"), pl.col("draws").sum().alias("draws"),
                      pl.col("blocks").sum().alias("blocks")).collect(engine="streaming").row(0)
    return ledger.FamilyTotals(*(int(v or 0) for v in row))


def read_ledger(g: Gate, family_id: str) -> FamilyLedger:
    """One family's published log and trace, and the totals its own state's outputs imply under the policies
    (the S2 family reads only S2's outputs, so its checks can run before S3)."""
    store, identity = g.store, g.identity
    if family_id == latent.FAMILY_ID:
        code = error_code("S3", "S2_OUTPUT_MISSING")
        lgcp = latent.parse_lgcp_policy(g.policy("arrival_lgcp_config_5B"))
        _scan_existing(store, "s2_realised_intensity_5B", identity, code=code)
        # S2's rows are grid × grouping (its own checks prove it), so S1 gives the groups and buckets it drew for
        missing = error_code("S3", "S1_OUTPUT_MISSING")
        grouping, _ = _scan_existing(store, "s1_grouping_5B", identity, code=missing)
        grid, _ = _scan_existing(store, "s1_time_grid_5B", identity, code=missing)
        groups = grouping.select(pl.col("group_id").n_unique()).collect().item()
        buckets = grid.select(pl.len()).collect().item()
        if lgcp.latent_model_id == "none":
            groups = 0
        events_id, trace_id = "rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian"
        if lgcp.latent_model_id == latent.STATIONARY:
            expected = _stationary_expectation(grouping, lgcp, buckets,
                                               ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B")).coupled)
        else:
            expected = ledger.FamilyTotals(groups, 2 * buckets * groups, buckets * groups)
    elif family_id == counts.FAMILY_ID:
        code = error_code("S3", "RNG_ACCOUNTING_MISMATCH")
        policy = counts.parse_count_policy(g.policy("arrival_count_config_5B"))
        events_id, trace_id = "rng_event_arrival_bucket_count", "rng_trace_arrival_bucket_count"
        expected = _count_expectation(store, identity, policy)
    else:
        raise ArrivalError(error_code("S3", "RNG_ACCOUNTING_MISMATCH"), f"unknown RNG family {family_id!r}", family=family_id)
    events, event_path = _scan_existing(store, events_id, identity, code=code)
    trace, trace_path = _scan_existing(store, trace_id, identity, code=code)
    return FamilyLedger(family_id, _event_totals(events), trace.collect(), expected, event_path, trace_path)


def _stationary_expectation(grouping: pl.LazyFrame, lgcp: latent.LgcpPolicy, buckets: int,
                            coupled: bool) -> ledger.FamilyTotals:
    """S2 totals under log_gaussian_stationary_v1: one event per group, with 2M blocks and 4M draws, M the group's
    embedding size (from its L in S1's grouping; the coupled size M_c under `common_v1`)."""
    params = latent.group_parameters(grouping.collect(), lgcp)
    blocks = latent.event_blocks(params, lgcp, buckets, coupled=coupled)
    return ledger.FamilyTotals(int(blocks.shape[0]), int(2 * blocks.sum()), int(blocks.sum()))


def read_ledgers(g: Gate) -> tuple[FamilyLedger, FamilyLedger]:
    """Both families' ledgers (S2's latent family, then S3's count family)."""
    return read_ledger(g, latent.FAMILY_ID), read_ledger(g, counts.FAMILY_ID)


def _count_expectation(store: Store, identity: Identity, policy: counts.CountPolicy) -> ledger.FamilyTotals:
    scan, _ = _scan_existing(store, "s3_bucket_counts_5B", identity, code=error_code("S3", "RNG_ACCOUNTING_MISMATCH"))
    drawing = int(scan.select((pl.col("mu") > policy.lambda_zero_eps).sum()).collect(engine="streaming").item())
    return ledger.FamilyTotals(drawing, drawing * policy.draws_per_event, drawing)


def _audit_body(run: StateRun) -> Sequence[Published]:
    store = run.store
    with run.timed("load"):
        identity, g = run.open_gate()
        rng = ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        ledgers = read_ledgers(g)
    with run.timed("reconcile"):
        for lg in ledgers:
            problems = ledger.reconcile(lg.events, lg.trace, lg.expected, append_events=rng.trace_append_events)
            if problems:
                raise ArrivalError(error_code("S3", "RNG_ACCOUNTING_MISMATCH"),
                                   f"{lg.event_path}: RNG family {lg.family_id} does not reconcile: "
                                   + "; ".join(problems), family_id=lg.family_id, file=str(lg.event_path))
            run.metrics[lg.family_id] = {"events": lg.events.events, "draws": lg.events.draws,
                                         "blocks": lg.events.blocks, "trace_appends": lg.trace.height}
        record = ledger.audit_record(g.policy("arrival_rng_policy_5B"), g.sealed("arrival_rng_policy_5B")["sha256_hex"],
                                     identity.columns(), {lg.family_id: lg.trace for lg in ledgers})
        path = store.path("rng_audit_log_5B", **identity.tokens())
        contracts.validate_document(record, store.entry("rng_audit_log_5B").schema_ref,
                                    code=error_code("S3", "RNG_ACCOUNTING_MISMATCH"), where=str(path),
                                    contracts_dir=store.contracts_dir)
    with run.timed("publish"), store.transaction("S3") as tx:
        tx.write_json("rng_audit_log_5B", path, record)
    return tx.published


def run_audit(store: Store, key: PartitionKey, options: RunOptions = DEFAULT_OPTIONS) -> StateResult:
    """Audit: reconcile both RNG families (events ↔ trace ↔ outputs) and publish the partition's audit record."""
    return execute_state(store, "AUDIT", key, options, _audit_body)



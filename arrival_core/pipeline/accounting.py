"""The RNG audit of a partition: both families' logs and traces reconciled with what the outputs imply."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def _existing(store: Store, dataset_id: str, identity: Identity, *, code: str) -> Path:
    path = store.path(dataset_id, **identity.tokens())
    if not path.is_file():
        raise ArrivalError(code, f"{dataset_id} is missing at {path}; run its state for seed {identity.seed} first",
                           file=str(path), dataset=dataset_id)
    return path


def _scan_existing(store: Store, dataset_id: str, identity: Identity, *, code: str) -> tuple[pl.LazyFrame, Path]:
    path = _existing(store, dataset_id, identity, code=code)
    return pl.scan_parquet(path), path


def _footer_column(file: pq.ParquetFile, path: Path, name: str, code: str) -> tuple[int, pa.DataType]:
    """The index and type of a top-level column of a parquet file (its leaf column in the footer)."""
    index = file.schema_arrow.get_field_index(name)
    if index < 0:
        raise ArrivalError(code, f"{path}: the column {name} is missing", file=str(path), column=name)
    return index, file.schema_arrow.field(index).type


def logged_totals(path: Path, *, code: str) -> ledger.FamilyTotals:
    """An event log's (events, draws, blocks) totals, exact, decoding only what its footer does not prove: a row
    group whose integer `draws` (or `blocks`) statistics say no nulls and min == max holds that value on every row,
    so adds rows × value (integers have no NaN for the statistics to skip); any other row group decodes that
    column. The sink writes statistics on every non-string column, so the engine's constant draws and blocks per
    row group cost no decoding at all."""
    file = pq.ParquetFile(path)
    footer = file.metadata
    totals = {}
    for name in ("draws", "blocks"):
        index, dtype = _footer_column(file, path, name, code)
        total = 0
        for g in range(footer.num_row_groups):
            group = footer.row_group(g)
            stats = group.column(index).statistics
            if (pa.types.is_integer(dtype) and stats is not None and stats.has_min_max and stats.has_null_count
                    and stats.null_count == 0 and stats.min == stats.max):
                total += group.num_rows * int(stats.min)
            else:
                total += int(pc.sum(file.read_row_group(g, columns=[name], use_threads=False)[name]).as_py() or 0)
        totals[name] = total
    return ledger.FamilyTotals(footer.num_rows, totals["draws"], totals["blocks"])


def drawing_rows(path: Path, eps: float, *, code: str) -> int:
    """Rows of the counts whose μ exceeds `eps` (those that draw a count; a NaN or null does not, as in the
    engine's `mu > eps`), exact, decoding only the `mu` of row groups whose footer does not prove the answer.
    Parquet's float statistics skip NaN (and nulls), so they bound only the other values: a row group whose
    max ≤ eps has no drawing row (neither a NaN nor a null exceeds eps); one whose min > eps may still hold a NaN
    that does not draw, which the footer cannot rule out, so it is decoded like the row groups that straddle
    eps."""
    file = pq.ParquetFile(path)
    footer = file.metadata
    index, dtype = _footer_column(file, path, "mu", code)
    numeric = pa.types.is_floating(dtype) or pa.types.is_integer(dtype)
    drawing = 0
    for g in range(footer.num_row_groups):
        stats = footer.row_group(g).column(index).statistics
        if numeric and stats is not None and stats.has_min_max and stats.max <= eps:
            continue
        mu = file.read_row_group(g, columns=["mu"], use_threads=False)["mu"]
        if numeric:  # a null reads as NaN: not drawing
            drawing += int(np.count_nonzero(mu.to_numpy() > eps))
        else:
            drawing += int(pc.sum(pc.greater(mu, eps)).as_py() or 0)  # Arrow's error names a type it cannot compare
    return drawing


# Each family's event log and trace, and the reason code when they are missing.
_LOGS = {latent.FAMILY_ID: ("rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian", "S2_OUTPUT_MISSING"),
         counts.FAMILY_ID: ("rng_event_arrival_bucket_count", "rng_trace_arrival_bucket_count",
                            "RNG_ACCOUNTING_MISMATCH")}


@dataclass(frozen=True)
class FamilyLog:
    """One RNG family's log as published: its event-log totals and its trace."""

    family_id: str
    events: ledger.FamilyTotals
    trace: pl.DataFrame
    event_path: Path
    trace_path: Path


def read_family_log(g: Gate, family_id: str) -> FamilyLog:
    """One family's published event-log totals (from the footer where it proves them) and trace: cheap, for the
    checks that compare the two without what the outputs imply."""
    if family_id not in _LOGS:
        raise ArrivalError(error_code("S3", "RNG_ACCOUNTING_MISMATCH"), f"unknown RNG family {family_id!r}",
                           family=family_id)
    events_id, trace_id, reason = _LOGS[family_id]
    code = error_code("S3", reason)
    event_path = _existing(g.store, events_id, g.identity, code=code)
    trace, trace_path = _scan_existing(g.store, trace_id, g.identity, code=code)
    return FamilyLog(family_id, logged_totals(event_path, code=code), trace.collect(), event_path, trace_path)


def implied_totals(g: Gate, family_id: str) -> ledger.FamilyTotals:
    """The totals a family's own state's outputs imply under the policies (the S2 family reads only S2's outputs,
    so its checks can run before S3)."""
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
        if lgcp.latent_model_id == latent.STATIONARY:
            return _stationary_expectation(grouping, lgcp, buckets,
                                           ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B")).coupled)
        return ledger.FamilyTotals(groups, 2 * buckets * groups, buckets * groups)
    if family_id == counts.FAMILY_ID:
        return _count_expectation(store, identity, counts.parse_count_policy(g.policy("arrival_count_config_5B")))
    raise ArrivalError(error_code("S3", "RNG_ACCOUNTING_MISMATCH"), f"unknown RNG family {family_id!r}", family=family_id)


def read_ledger(g: Gate, family_id: str, *, log: FamilyLog | None = None) -> FamilyLedger:
    """One family's published log (`log` when already read) and the totals its state's outputs imply."""
    expected = implied_totals(g, family_id)
    log = log or read_family_log(g, family_id)
    return FamilyLedger(family_id, log.events, log.trace, expected, log.event_path, log.trace_path)


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
    code = error_code("S3", "RNG_ACCOUNTING_MISMATCH")
    path = _existing(store, "s3_bucket_counts_5B", identity, code=code)
    drawing = drawing_rows(path, policy.lambda_zero_eps, code=code)
    return ledger.FamilyTotals(drawing, drawing * policy.draws_per_event, drawing)


def _audit_body(run: StateRun) -> Sequence[Published]:
    store = run.store
    with run.timed("load"):
        identity, g = run.open_gate()
        rng = ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        ledgers = read_ledgers(g)
        run.diagnostics["family_ledgers"] = ledgers  # its check reconciles them again, unread
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



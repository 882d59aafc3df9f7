"""The row-group checks of S3's count RNG log (`CountEventsCheck`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from .. import counts, pipeline
from ..rng import ledger
from .context import CheckContext, CheckResult
from .counting import (
    _event_problems,
    _replay_count_events,
)
from .intensity import (
    ledger_result,
    merge_results,
)
from .rows import COUNT_EVENTS, Found, RowGroupCheck, Rows
from .scanning import numbers, pieces
from .specs import (
    PRIMARY_KEY_UNIQUE,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
)


@dataclass
class EventFound(Found):
    """What one row group of the count event log showed."""

    key: CheckResult = field(default_factory=CheckResult)
    accounting: CheckResult = field(default_factory=CheckResult)
    totals: tuple[int, int] = (0, 0)  # draws, blocks
    first_row: int = -1  # the count rows its first and last events log
    last_row: int = -1
    chosen: pa.Table | None = None  # the events the reference replays, with their count rows' μ, N and entity


class CountEventsCheck(RowGroupCheck):
    """rng_event_arrival_bucket_count: one event per count row with μ > lambda_zero_eps, in the counts' order, with
    that row's keys and its stream's envelope; sampled events replayed by the reference."""

    dataset_id = COUNT_EVENTS

    def __init__(self, ctx: CheckContext) -> None:
        super().__init__(ctx)
        # The events the reference replays: every `stride`-th of the log (from its first), the stride the grid's
        # rows over replay_sample_events, so at most that many whatever the log's length, which is known only at
        # its end when the log is checked as it streams.
        wanted = self.ctx.rng.replay_sample_events
        self.stride = max(1, self.ctx.domain.rows // wanted) if wanted else 0  # 0: none

    def examine(self, rows: Rows) -> EventFound:
        ctx, table, start = self.ctx, rows.rows, rows.start
        d, policy = ctx.domain, ctx.count_policy
        h = d.buckets
        found = EventFound(table.num_rows)
        self.add_values(rows, found.schema)
        found.totals = (int(numbers(table, "draws").sum()), int(numbers(table, "blocks").sum()))
        inputs = rows.inputs
        if inputs is None or inputs.num_rows != table.num_rows:
            got = 0 if inputs is None else inputs.num_rows
            found.key.fail(f"event rows from {start}: the counts imply {got} event(s) here, the log holds "
                           f"{table.num_rows}")
            return found
        logged = np.asarray(numbers(inputs, "count_row"), dtype=np.int64)
        found.first_row, found.last_row = int(logged[0]), int(logged[-1])
        quiet = any((mu <= policy.lambda_zero_eps).any() for _, mu in pieces(inputs["mu"]))  # μ: its chunks, unjoined
        if (np.diff(logged) <= 0).any() or quiet or not 0 <= logged[0] <= logged[-1] < d.rows:
            found.key.fail(f"event rows from {start} do not log count rows with μ > lambda_zero_eps in order")
            return found
        keys_problem, envelope_problem = _event_problems(ctx, table, logged, start, policy, rows.extremes)
        if keys_problem is not None:
            found.key.fail(*keys_problem)
            found.accounting.fail(*keys_problem)
            return found
        if envelope_problem is not None:
            found.accounting.fail(*envelope_problem)
        picked = np.arange((-start) % self.stride, table.num_rows, self.stride) if self.stride else np.zeros(0, int)
        if len(picked):  # kept as Arrow: made one frame for the replay once every row group is in
            at = pa.array(picked)
            found.chosen = table.take(at).append_column("mu", inputs["mu"].take(at)).append_column(
                "count_N", inputs["count_N"].take(at)).append_column("entity", pa.array(logged[picked] // h, pa.int64()))
        return found

    def results(self, drawing: int) -> dict[str, CheckResult]:
        """The outcomes, given the events the counts imply (`drawing`: their rows with μ > lambda_zero_eps)."""
        ctx, policy = self.ctx, self.ctx.count_policy
        found = self.found()
        logged = sum(f.rows for f in found)
        key, accounting = CheckResult(facts={"by": "the count rows"}), CheckResult()
        replay = CheckResult(facts={"mode": ctx.replay})
        chosen: list[pa.Table] = []
        previous = -1
        for index, f in enumerate(found):
            if key.problems:
                break
            if f.rows and 0 <= f.first_row <= previous:
                key.fail(f"the events of row group {index} log count rows out of order")
                break
            previous = max(previous, f.last_row)
            key = merge_results(key, f.key)
            accounting = merge_results(accounting, f.accounting)
            if f.chosen is not None:
                chosen.append(f.chosen)
        if logged != drawing:
            accounting.fail(f"the event log has {logged} rows, the counts imply {drawing}")
        totals = ledger.FamilyTotals(logged, sum(f.totals[0] for f in found), sum(f.totals[1] for f in found))
        trace = pipeline.read_table(ctx.path("rng_trace_arrival_bucket_count"))
        expected = ledger.FamilyTotals(drawing, drawing * policy.draws_per_event, drawing)
        accounting = merge_results(accounting, ledger_result(ctx, counts.FAMILY_ID, totals, expected, trace))
        if chosen:
            events = pl.from_arrow(pa.concat_tables(chosen))
            _replay_count_events(ctx, events.with_columns(pl.col(pl.Categorical).cast(pl.String)), policy, replay)
        else:
            replay.facts["events_replayed"] = 0
        return {SCHEMA_VALID: self.schema_result(logged, [f.schema for f in found]), PRIMARY_KEY_UNIQUE: key,
                RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}

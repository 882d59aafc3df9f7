"""The checks of the big tables (S2's realised intensity and latent field, S3's counts and count events), fed one
row group at a time: while their state streams, on the worker that encoded the row group, from its own bytes and
with the inputs of its rows still in memory (`StreamChecks`); or from the stored files (`check_stored`).

Either way every row group is decoded once, and its rows are judged with the inputs they were made from beside
them (the sealed λ_target, S2's λ_realised, the count rows an event logs). The per-row-group findings are kept by
ordinal and merged in file order, so an outcome (its messages, keys and sums) is the same whatever the threads,
and the same from the stream as from the files.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import parallel, pipeline, sink
from ..prefetch import prefetched
from ..store import Store
from .context import CheckContext, CheckResult, require_file
from .event_rows import CountEventsCheck
from .grid_rows import CountsCheck, RealisedCheck
from .latent_rows import LatentCheck
from .rows import COUNT_EVENTS, COUNTS, LATENT, REALISED, RowGroupCheck, Rows
from .scanning import numbers
from .specs import (
    checks_for,
)


class _Taken:
    """Consecutive rows of a stream of tables taken in any lengths (fewer at its end)."""

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self._tables, self._held, self.count = tables, [], 0

    def take(self, n: int) -> pa.Table | None:
        held = sum(t.num_rows for t in self._held)
        for table in self._tables if held < n else ():
            self._held.append(table)
            held += table.num_rows
            if held >= n:
                break
        if not self._held:
            return None
        joined = pa.concat_tables(self._held).combine_chunks()
        self._held = [joined.slice(n)] if joined.num_rows > n else []
        out = joined.slice(0, n)
        self.count += out.num_rows
        return out


def _stored(path, strings: list[str], inputs: _Taken | None) -> Iterator[Rows]:
    """The row groups of a stored file, decoded, with the inputs of their rows."""
    file = pq.ParquetFile(path, read_dictionary=strings)
    footer, start = file.metadata, 0
    for i in range(file.num_row_groups):
        rows = file.read_row_group(i)
        yield Rows(i, start, rows, pipeline.integer_extremes(footer, [i]),
                   None if inputs is None else inputs.take(rows.num_rows))
        start += rows.num_rows


def _column_of(path, column: str, name: str) -> Iterator[pa.Table]:
    """A column of a stored file, renamed, row group by row group (`_Taken` takes them in any lengths)."""
    file = pq.ParquetFile(path)
    for i in range(file.num_row_groups):
        yield pa.table({name: file.read_row_group(i, columns=[column])[column]})


def _drawing_rows(ctx: CheckContext) -> tuple[Iterator[pa.Table], list[int]]:
    """The count rows with μ > lambda_zero_eps of the stored counts (row, μ, count_N), and a list that holds
    their number once they are all read."""
    eps, total = ctx.count_policy.lambda_zero_eps, []

    def rows() -> Iterator[pa.Table]:
        file = pq.ParquetFile(ctx.path(COUNTS))
        start, drawing = 0, 0
        for i in range(file.num_row_groups):
            part = file.read_row_group(i, columns=["mu", "count_N"])
            mu = numbers(part, "mu")
            local = np.flatnonzero(mu > eps)
            drawing += len(local)
            yield pa.table({"count_row": start + local, "mu": mu[local], "count_N": numbers(part, "count_N")[local]})
            start += part.num_rows
        total.append(drawing)

    return rows(), total


def check_stored(ctx: CheckContext, dataset_id: str) -> dict[str, CheckResult]:
    """The row-group checks of a stored big table, its row groups read one after another (with their inputs read
    from the files they were made from)."""
    path = ctx.path(dataset_id)
    if dataset_id == LATENT and not path.is_file() and not ctx.lgcp.emit_latent_field:
        result = CheckResult(facts={"emitted": False})
        return {spec.name: result for spec in checks_for(LATENT)}
    require_file(path)
    h = ctx.domain.buckets
    if dataset_id == REALISED:
        check: RowGroupCheck = RealisedCheck(ctx, _published_factors(ctx, h))
        inputs = _Taken(_column_of(ctx.surface, "lambda_local_scenario", "lambda_target"))
    elif dataset_id == COUNTS:
        check = CountsCheck(ctx)
        inputs = _Taken(_column_of(ctx.path(REALISED), "lambda_realised", "lambda_input"))
    elif dataset_id == COUNT_EVENTS:
        check = CountEventsCheck(ctx)
        require_file(ctx.path(COUNTS))
        drawing, total = _drawing_rows(ctx)
        inputs = _Taken(drawing)
    else:
        check, inputs = LatentCheck(ctx), None
    for rows in prefetched(_stored(path, check.strings, inputs)):
        check.feed(rows)
    if isinstance(check, CountEventsCheck):
        while inputs.take(1 << 20) is not None:  # the counts beyond the log's last event
            pass
        return check.results(total[0])
    return check.results()


def _published_factors(ctx: CheckContext, buckets: int) -> np.ndarray | None:
    """ξ of the published latent field as a (groups × buckets) matrix, or None when the policy does not emit it."""
    path = ctx.path(LATENT)
    if not path.is_file():
        return None
    factors = pq.read_table(path, columns=["lambda_random_component"])["lambda_random_component"].to_numpy()
    return factors.reshape(-1, buckets) if factors.size % buckets == 0 else factors.reshape(1, -1)


# ---- in the stream -------------------------------------------------------------------------------------------------

class StreamChecks:
    """The checks of a streamed state's big outputs, made while it streams (a `pipeline.StreamObserver`): each row
    group is decoded and checked on the worker that encoded it, beside the inputs of its rows; `results` gives the
    outcomes once the state has committed. Its context holds what the state loaded (gate, grouping, domain), so
    the state's other checks derive nothing twice."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx: CheckContext | None = None  # the partition's, once the state has loaded it
        self.state: str | None = None
        self._checks: dict[str, RowGroupCheck | None] = {}
        self._cpu_seconds = 0.0  # what the checks derived in the stream beside their row groups
        self._lock = threading.Lock()
        self._replayed = None

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the stream's checks have taken so far, on every thread (their row groups and what they
        derived before them); the step reports them with its checks."""
        return self._cpu_seconds + sum(c.cpu_seconds for c in self._checks.values() if c is not None)

    def inspections(self, part) -> dict[str, sink.Inspector]:
        started = time.thread_time()
        self.ctx = ctx = CheckContext(self.store, part.identity, "sample")
        self.state = part.run.state
        derived = ctx.derived
        derived.get(("gate", self.state), lambda: part.gate)
        derived.get("grouping", lambda: part.groups)
        derived.get("domain", lambda: part.domain)
        if self.state == "S2":
            s2 = ctx.view(REALISED)
            self._checks[REALISED] = None  # made once ξ is drawn (`drawn`)
            if s2.lgcp.emit_latent_field:
                self._checks[LATENT] = None
            # The reference's replay, on a thread of its own while the state draws ξ and starts its stream (its
            # CPU seconds are counted with the stream's checks, on whichever thread they are spent).
            self._replayed = parallel.soon(lambda: self._timed(s2.group_replays), own_thread=True)
        elif self.state == "S3":
            self._checks[COUNTS] = CountsCheck(ctx)
            self._checks[COUNT_EVENTS] = CountEventsCheck(ctx)
        with self._lock:
            self._cpu_seconds += time.thread_time() - started
        return {dataset_id: self._inspect(dataset_id) for dataset_id in self._checks}

    def _timed(self, work):
        """work(), its thread's CPU seconds counted with the stream's checks."""
        started = time.thread_time()
        try:
            return work()
        finally:
            with self._lock:
                self._cpu_seconds += time.thread_time() - started

    def _inspect(self, dataset_id: str) -> sink.Inspector:
        return lambda group: self._checks[dataset_id].inspect(group)

    def drawn(self, values: Mapping[str, np.ndarray]) -> None:
        if self.state != "S2":
            return
        started = time.thread_time()
        factor = values["factor"]
        emitted = LATENT in self._checks
        self._checks[REALISED] = RealisedCheck(self.ctx, factor if emitted else None)
        if emitted:
            self._checks[LATENT] = LatentCheck(self.ctx, factor)
        with self._lock:
            self._cpu_seconds += time.thread_time() - started

    def streamed(self) -> tuple[str, ...]:
        """The datasets checked in the stream (none when the state was verified, not streamed)."""
        return tuple(d for d, check in self._checks.items() if check is not None)

    def results(self, dataset_id: str) -> dict[str, CheckResult]:
        """The outcomes of a dataset checked in the stream (the state has committed its files)."""
        if self._replayed is not None:
            self._replayed()  # its failure, if any, is the outcome's
        check = self._checks[dataset_id]
        if isinstance(check, CountEventsCheck):
            return check.results(self._checks[COUNTS].drawing())
        return check.results()

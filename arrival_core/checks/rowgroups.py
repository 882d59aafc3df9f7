"""The checks of the big tables (S2's realised intensity and latent field, S3's counts and count events), fed one
row group at a time: while their state streams, on the worker that encoded the row group, from its own bytes and
with the inputs of its rows still in memory (`StreamChecks`); or from the stored files (`check_stored`).

Either way every row group is decoded once, and its rows are judged with the inputs they were made from beside
them (the sealed λ_target, S2's λ_realised, the count rows an event logs). The per-row-group findings are kept by
ordinal and merged in file order, so an outcome (its messages, keys and sums) is the same whatever the threads,
and the same from the stream as from the files.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .. import counts, entity_grid, latent, parallel, pipeline, sink, table_schema
from ..errors import CONTRACT_INVALID, ArrivalError
from ..prefetch import prefetched
from ..rng import ledger, variates
from ..store import Store
from . import intensity_kernels
from .context import CheckContext, CheckResult, require_file
from .counting import (
    CountMoments,
    _event_problems,
    _reference_counts,
    _replay_count_events,
    _replay_counts,
    count_corridor,
)
from .intensity import (
    latent_corridor,
    ledger_result,
    merge_results,
    spectral_corridor,
    stationary_projections,
)
from .scanning import GRID_KEYS, RowStream, grouping_order_problem
from .specs import (
    COUNT_CORRIDOR,
    DOMAIN_COMPLETE,
    LATENT_CORRIDOR,
    NUMERIC_VALID,
    PRIMARY_KEY_UNIQUE,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
    checks_for,
)

REALISED, LATENT, COUNTS, COUNT_EVENTS = ("s2_realised_intensity_5B", "s2_latent_field_5B", "s3_bucket_counts_5B",
                                          "rng_event_arrival_bucket_count")


@dataclass(frozen=True)
class Rows:
    """One row group to check: its ordinal and first row in the file, its rows decoded from the file's bytes, the
    integer extremes its footer states, and the inputs of its rows (one per row; None where there are none)."""

    index: int
    start: int
    rows: pa.Table
    extremes: Mapping[str, tuple[int, int]]
    inputs: pa.Table | None


def _numbers(rows: pa.Table, name: str) -> np.ndarray:
    """A numeric column of a row group (one chunk: a view, no copy)."""
    column = rows[name]
    return column.chunk(0).to_numpy(zero_copy_only=False) if column.num_chunks == 1 else column.to_numpy()


def _string_columns(ctx: CheckContext, dataset_id: str) -> list[str]:
    """The string columns of a dataset's contract (decoded dictionary-coded, so no per-row string is built)."""
    dtypes = table_schema.polars_schema(ctx.store.entry(dataset_id).schema_ref, ctx.store.contracts_dir)
    return [name for name, dtype in dtypes.items() if dtype == pl.String]


class RowGroupCheck:
    """The checks of one dataset fed row group by row group (from any thread), each row group's findings kept by
    its ordinal; `results` merges them in file order."""

    dataset_id: str

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx.view(self.dataset_id)
        self.strings = _string_columns(self.ctx, self.dataset_id)
        path = self.ctx.path(self.dataset_id)
        self.values = pipeline.ValueSets(ctx.store, self.dataset_id, path, CONTRACT_INVALID)
        self._found: dict[int, object] = {}
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0  # spent by the threads that decoded and examined its row groups
        self._failure: Exception | None = None

    def inspect(self, group: sink.RowGroupBytes) -> None:
        """A row group as its state's worker encoded it: decoded from its bytes and checked (a `sink.Inspector`).
        A failure to check it is the checks' (raised by `found`), never the state's: its files still publish."""
        started = time.thread_time()
        try:
            self.feed(Rows(group.index, group.start, group.decoded(self.strings),
                           pipeline.integer_extremes(group.footer), group.companion), started)
        except Exception as exc:  # noqa: BLE001 - reported as the dataset's outcome once the state has committed
            with self._lock:
                self._failure = self._failure or exc

    def feed(self, rows: Rows, started: float | None = None) -> None:
        started = time.thread_time() if started is None else started
        found = self.examine(rows)
        with self._lock:
            self._found[rows.index] = found
            self.cpu_seconds += time.thread_time() - started

    def found(self) -> list:
        """Each row group's findings, in file order (re-raising the failure to check one in the stream)."""
        if self._failure is not None:
            raise self._failure
        return [self._found[i] for i in sorted(self._found)]

    def examine(self, rows: Rows) -> object:
        raise NotImplementedError

    def results(self) -> dict[str, CheckResult]:
        raise NotImplementedError

    def add_values(self, rows: Rows, schema: CheckResult) -> None:
        """The row group's value sets (its column rules are checked on them at the end)."""
        try:
            self.values.add(rows.rows, rows.extremes)
        except ArrivalError as err:
            schema.fail(f"rows from {rows.start}: {err.message}")

    def schema_result(self, rows: int, parts: list[CheckResult]) -> CheckResult:
        result = merge_results(*parts)
        try:
            self.values.validate()
        except ArrivalError as err:
            result.fail(err.message)
        result.facts["rows"] = rows
        return result


# ---- grid tables (entity × bucket) ---------------------------------------------------------------------------------

@dataclass
class Found:
    """What one row group showed: its rows and its schema problems (each table adds its own)."""

    rows: int
    schema: CheckResult = field(default_factory=CheckResult)


@dataclass
class GridFound(Found):
    """What one row group of a grid table showed: placement problems and (while it was where grid × grouping puts
    it) the table's own rules."""

    domain: CheckResult = field(default_factory=CheckResult)
    aligned: bool = True
    rules: dict[str, CheckResult] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


class GridCheck(RowGroupCheck):
    """A table of the entity × bucket grid: every row where grid × grouping puts it with the partition's identity
    (the key check follows from that and the grouping's order), its column rules on value sets, and the table's
    own rules on each aligned row group (`rules`)."""

    rule_names: tuple[str, ...] = ()

    def examine(self, rows: Rows) -> GridFound:
        d, table, start = self.ctx.domain, rows.rows, rows.start
        found = GridFound(table.num_rows, rules={name: CheckResult() for name in self.rule_names})
        self.add_values(rows, found.schema)
        bad_key, bad_group = entity_grid.rows_misaligned(table, d, start, "bucket_index", group_column="group_id")
        if bad_key is not None or bad_group is not None:
            row = bad_key if bad_key is not None else bad_group
            key = entity_grid.row_key(table, row, GRID_KEYS) if row < table.num_rows else None
            found.domain.fail(f"row {start + row} is not where grid × grouping puts it (entity keys, bucket order or "
                              f"group)", key)
            found.aligned = False
            return found
        for column, value in pipeline.identity_values(self.ctx.identity, table.column_names).items():
            if rows.extremes.get(column) == (value, value):
                continue  # the footer's statistics state every value: no row differs
            if (row := entity_grid.first_mismatch(table[column], value)) is not None:
                found.domain.fail(f"{column} is {table[column][row]} at row {start + row}, the partition's is "
                                  f"{value!r}", entity_grid.grid_key(d, 0, start + row, "bucket_index"))
                found.aligned = False
                return found
        if rows.inputs is None or rows.inputs.num_rows != table.num_rows:
            found.domain.fail(f"rows from {start}: the inputs hold no row for {table.num_rows} row(s) of the table")
            found.aligned = False
            return found
        self.rules(rows, found)
        return found

    def rules(self, rows: Rows, found: GridFound) -> None:
        raise NotImplementedError

    def grid_results(self) -> tuple[dict[str, CheckResult], list[GridFound]]:
        """Schema, key and domain results, with the row groups whose own rules count (those before the first one
        out of place; none when the table does not tile the grid)."""
        d = self.ctx.domain
        found = self.found()
        rows = sum(f.rows for f in found)
        domain = CheckResult(facts={"rows": rows, "entities": d.size, "buckets": d.buckets})
        aligned = rows == d.rows
        if not aligned:
            domain.fail(f"{rows} rows, expected {d.size} entities × {d.buckets} buckets = {d.rows}")
        counted: list[GridFound] = []
        for f in found:
            if not aligned:
                break
            domain = merge_results(domain, f.domain)
            aligned = f.aligned
            if aligned:
                counted.append(f)
        key = CheckResult(facts={"by": "alignment to grid × grouping"})
        if not aligned:
            key.fail("the rows are not grid × grouping in writer order (see domain_complete)")
        elif (problem := grouping_order_problem(self.ctx)) is not None:
            key.fail(problem)
        schema = self.schema_result(rows, [f.schema for f in found])
        return {SCHEMA_VALID: schema, PRIMARY_KEY_UNIQUE: key, DOMAIN_COMPLETE: domain}, counted

    def rule_results(self, counted: list[GridFound]) -> dict[str, CheckResult]:
        return {name: merge_results(*(f.rules[name] for f in counted)) for name in self.rule_names}


def _touched(start: int, n: int, h: int) -> tuple[int, int]:
    """The entities e0..e1 that rows start..start+n of the grid touch."""
    return start // h, (start + n - 1) // h + 1


def _entity_spans(start: int, n: int, h: int) -> list[tuple[np.ndarray, int, int]]:
    """Rows start..start+n of the grid as (entities, first bucket, end bucket) spans: the entity the rows begin
    inside, the whole entities, the entity they end inside (each present only when it holds rows)."""
    end = start + n
    first_whole, last_whole = -(-start // h), end // h
    if first_whole > last_whole:  # inside one entity
        e = start // h
        return [(np.array([e]), start - e * h, end - e * h)]
    spans = []
    if start < first_whole * h:
        spans.append((np.array([start // h]), start % h, h))
    if first_whole < last_whole:
        spans.append((np.arange(first_whole, last_whole), 0, h))
    if end > last_whole * h:
        spans.append((np.array([last_whole]), 0, end - last_whole * h))
    return spans


def _per_row(values: np.ndarray, start: int, n: int, h: int) -> np.ndarray:
    """A per-entity array (of the entities the rows touch) repeated for each of rows start..start+n."""
    e0, e1 = _touched(start, n, h)
    lengths = np.full(e1 - e0, h, dtype=np.int64)
    lengths[0] -= start - e0 * h
    lengths[-1] -= e1 * h - (start + n)
    return np.repeat(values, lengths)


class RealisedCheck(GridCheck):
    """s2_realised_intensity_5B: λ_baseline the sealed λ_target, ξ in bounds and the latent field's,
    λ_realised = min(λ_baseline·ξ, lambda_max); ξ of the sampled groups replayed by the reference."""

    dataset_id = REALISED
    rule_names = (NUMERIC_VALID, RNG_REPLAY)

    def __init__(self, ctx: CheckContext, factors: np.ndarray | None) -> None:
        super().__init__(ctx)
        d = self.ctx.domain
        self.unmatched = None  # why the rows' ξ cannot be compared with the latent field's, if they cannot
        if factors is not None and factors.shape != (len(d.group_ids), d.buckets):
            self.unmatched = (f"s2_latent_field_5B holds {factors.size} values of ξ, not one per group and bucket "
                              f"({len(d.group_ids)} × {d.buckets}): the rows' ξ cannot be compared with it")
            factors = None
        self.factors = factors  # ξ per (group, bucket) of the published latent field (None: not published)

    @functools.cached_property
    def replays(self) -> list:
        """The reference's sample, and the engine's every group under `full` (asked for by the first row group,
        so a replay begun earlier on a thread of its own goes on while the state starts)."""
        return self.ctx.group_replays()

    @functools.cached_property
    def positions(self) -> list[np.ndarray]:
        """Each replay's index of every group (−1: not replayed)."""
        out = []
        for _, chosen, _ in self.replays:
            position = np.full(len(self.ctx.domain.group_ids), -1)
            position[chosen] = np.arange(len(chosen))
            out.append(position)
        return out

    def rules(self, rows: Rows, found: GridFound) -> None:
        d, lgcp, start, table = self.ctx.domain, self.ctx.lgcp, rows.start, rows.rows
        h, n = d.buckets, table.num_rows
        target, factor, realised = (_numbers(table, c) for c in ("lambda_baseline", "lambda_random_component",
                                                                  "lambda_realised"))
        e0, e1 = _touched(start, n, h)
        group = d.entity_group[e0:e1]
        counts_, first = intensity_kernels.realised_mismatches(
            target, _numbers(rows.inputs, "lambda_target"), factor, realised, lgcp.min_factor, lgcp.max_factor,
            lgcp.lambda_max, self.factors, group, h, start - e0 * h)
        numeric, replay = found.rules[NUMERIC_VALID], found.rules[RNG_REPLAY]
        for label, count, i in zip(intensity_kernels.RULES, counts_, first):
            if count:
                numeric.fail(f"{int(count)} row(s): {label}", entity_grid.grid_key(d, 0, start + int(i), "bucket_index"))
        compared = 0
        for (by, _, fresh), position in zip(self.replays, self.positions, strict=True):
            bad_rows = 0
            first_bad: int | None = None
            for e, lo, hi in _entity_spans(start, n, h):  # at most two partial entities and one block of whole ones
                at = position[d.entity_group[e]]
                chosen = np.flatnonzero(at >= 0)
                compared += len(chosen) * (hi - lo)
                published = factor[e[0] * h + lo - start:e[-1] * h + hi - start].reshape(len(e), hi - lo)
                bad = published[chosen] != fresh.factor[at[chosen], lo:hi]
                if bad.any():
                    bad_rows += int(bad.sum())
                    entity, bucket = np.argwhere(bad)[0]
                    row = int(e[chosen[entity]]) * h + lo + int(bucket)
                    first_bad = row if first_bad is None else min(first_bad, row)
            if first_bad is not None:
                replay.fail(f"{bad_rows} row(s) have ξ that does not replay by the {by}",
                            entity_grid.grid_key(d, 0, first_bad, "bucket_index"))
        found.facts["rows_compared"] = compared

    def results(self) -> dict[str, CheckResult]:
        results, counted = self.grid_results()
        rules = self.rule_results(counted)
        if self.unmatched is not None:
            rules[NUMERIC_VALID].fail(self.unmatched)
        replays = self.replays
        rules[RNG_REPLAY].facts |= {"groups_replayed": max(len(chosen) for _, chosen, _ in replays),
                                    "groups_replayed_by_reference": len(replays[0][1]),
                                    "rows_compared": sum(f.facts.get("rows_compared", 0) for f in counted),
                                    "mode": self.ctx.replay}
        return results | rules


class CountsCheck(GridCheck):
    """s3_bucket_counts_5B: λ_realised S2's, μ = λ_realised, the count rules of the policy; the sampled rows'
    counts replayed by the reference (every row by the engine's sampler under `full`); the count corridor."""

    dataset_id = COUNTS
    rule_names = (NUMERIC_VALID, RNG_REPLAY)

    def __init__(self, ctx: CheckContext) -> None:
        super().__init__(ctx)
        policy = self.ctx.count_policy
        self.kappa = counts.entity_kappa(self.ctx.grouping, policy) if policy.law == "nb2" else None
        self.sample = self.ctx.sample(self.ctx.domain.rows, full=False)  # the reference's rows, in both modes

    def rules(self, rows: Rows, found: GridFound) -> None:
        ctx, start, table = self.ctx, rows.start, rows.rows
        d, policy = ctx.domain, ctx.count_policy
        h, n = d.buckets, table.num_rows
        mu, count, capped = _numbers(table, "mu"), _numbers(table, "count_N"), _numbers(table, "count_capped")
        realised = _numbers(table, "lambda_realised")
        checks = [
            ("λ_realised differs from s2_realised_intensity_5B", realised != _numbers(rows.inputs, "lambda_input")),
            ("μ ≠ λ_realised", mu != realised),
            ("count_N > max_count_per_bucket", count > policy.max_count),
            ("count_N > 0 where μ ≤ lambda_zero_eps", (mu <= policy.lambda_zero_eps) & (count != 0)),
            ("count_capped without count_N = max_count_per_bucket", capped & (count != policy.max_count)),
            (f"count_law_id is not {policy.law}", entity_grid.dictionary_codes(
                table["count_law_id"], pa.array([policy.law])) < 0),
        ]
        if "count_drawn" in rows.inputs.column_names:  # from the stream: the count its RNG event gave
            checks.append(("count_N decodes to another count than was drawn",
                           count != _numbers(rows.inputs, "count_drawn")))
        numeric, replay = found.rules[NUMERIC_VALID], found.rules[RNG_REPLAY]
        for label, bad in checks:
            if bad.any():
                i = int(np.argmax(bad))
                numeric.fail(f"{int(bad.sum())} row(s): {label}", entity_grid.grid_key(d, 0, start + i, "bucket_index"))
        sample = self.sample
        picks = [(sample[np.searchsorted(sample, start):np.searchsorted(sample, start + n)] - start, "reference")]
        if ctx.replay == "full":  # the engine's own sampler replays every row
            picks.append((np.arange(n, dtype=np.int64), "engine"))
        for local, how in picks:
            if not len(local):
                continue
            at = start + local
            again = (_reference_counts(ctx, mu[local], at // h, at % h) if how == "reference"
                     else _replay_counts(ctx, mu[local], at, self.kappa))
            found.facts[how] = found.facts.get(how, 0) + len(local)
            bad = again != count[local]
            if bad.any():
                i = int(np.argmax(bad))
                replay.fail(f"{int(bad.sum())} of {len(local)} row(s) replayed by the {how} differ",
                            entity_grid.grid_key(d, 0, int(at[i]), "bucket_index")
                            | {"count_N": int(count[local[i]]), "replayed": int(again[i])})
        use = mu > policy.lambda_zero_eps
        found.facts["drawing"] = int(use.sum())
        moments = CountMoments()
        e0, e1 = _touched(start, n, h)
        k = None if self.kappa is None else _per_row(self.kappa[e0:e1], start, n, h)[use]
        moments.add(mu[use], count[use].astype(np.float64), k, capped[use], float(policy.max_count))
        found.facts["moments"] = moments

    def drawing(self) -> int:
        """The rows with μ > lambda_zero_eps over the row groups seen (the events the counts imply)."""
        return sum(f.facts.get("drawing", 0) for f in self.found())

    def results(self) -> dict[str, CheckResult]:
        results, counted = self.grid_results()
        rules = self.rule_results(counted)
        replayed = {how: sum(f.facts.get(how, 0) for f in counted) for how in ("reference", "engine")}
        rules[RNG_REPLAY].facts |= {"rows_replayed": replayed["reference"] + replayed["engine"],
                                    "rows_replayed_by_reference": replayed["reference"], "mode": self.ctx.replay}
        moments = CountMoments()
        for f in counted:  # in file order: the same sums whatever the threads
            moments.merge(f.facts["moments"])
        corridor = CheckResult()
        policy = self.ctx.count_policy
        stats = count_corridor(moments, policy.law, self.ctx.corridors["false_alarm"])
        corridor.facts |= {k: v for k, v in stats.items() if k != "passed"}
        if not stats["passed"]:
            corridor.fail(f"counts outside their corridor: {({k: stats[k] for k in stats if k.endswith('_ok')})}")
        return results | rules | {COUNT_CORRIDOR: corridor}


# ---- the count RNG log ---------------------------------------------------------------------------------------------

@dataclass
class EventFound(Found):
    """What one row group of the count event log showed."""

    key: CheckResult = field(default_factory=CheckResult)
    accounting: CheckResult = field(default_factory=CheckResult)
    totals: tuple[int, int] = (0, 0)  # draws, blocks
    first_row: int = -1  # the count rows its first and last events log
    last_row: int = -1
    chosen: pl.DataFrame | None = None


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
        found.totals = (int(_numbers(table, "draws").sum()), int(_numbers(table, "blocks").sum()))
        inputs = rows.inputs
        if inputs is None or inputs.num_rows != table.num_rows:
            got = 0 if inputs is None else inputs.num_rows
            found.key.fail(f"event rows from {start}: the counts imply {got} event(s) here, the log holds "
                           f"{table.num_rows}")
            return found
        logged = _numbers(inputs, "count_row").astype(np.int64)
        mu = _numbers(inputs, "mu")
        found.first_row, found.last_row = int(logged[0]), int(logged[-1])
        if (np.diff(logged) <= 0).any() or (mu <= policy.lambda_zero_eps).any() or not 0 <= logged[0] <= logged[-1] < d.rows:
            found.key.fail(f"event rows from {start} do not log count rows with μ > lambda_zero_eps in order")
            return found
        e0 = int(logged[0]) // h
        keys_problem, envelope_problem = _event_problems(ctx, table, e0, logged - e0 * h, start, policy,
                                                         rows.extremes)
        if keys_problem is not None:
            found.key.fail(*keys_problem)
            found.accounting.fail(*keys_problem)
            return found
        if envelope_problem is not None:
            found.accounting.fail(*envelope_problem)
        picked = np.arange((-start) % self.stride, table.num_rows, self.stride) if self.stride else np.zeros(0, int)
        if len(picked):
            events = pl.from_arrow(table.take(pa.array(picked))).with_columns(pl.col(pl.Categorical).cast(pl.String))
            found.chosen = events.with_columns(mu=pl.Series(mu[picked]),
                                               count_N=pl.Series(_numbers(inputs, "count_N")[picked]),
                                               entity=pl.Series(logged[picked] // h, dtype=pl.Int64))
        return found

    def results(self, drawing: int) -> dict[str, CheckResult]:
        """The outcomes, given the events the counts imply (`drawing`: their rows with μ > lambda_zero_eps)."""
        ctx, policy = self.ctx, self.ctx.count_policy
        found = self.found()
        logged = sum(f.rows for f in found)
        key, accounting = CheckResult(facts={"by": "the count rows"}), CheckResult()
        replay = CheckResult(facts={"mode": ctx.replay})
        chosen: list[pl.DataFrame] = []
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
            _replay_count_events(ctx, pl.concat(chosen), policy, replay)
        else:
            replay.facts["events_replayed"] = 0
        return {SCHEMA_VALID: self.schema_result(logged, [f.schema for f in found]), PRIMARY_KEY_UNIQUE: key,
                RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}


# ---- the latent field ----------------------------------------------------------------------------------------------

@dataclass
class LatentFound(Found):
    """What one row group of the latent field showed."""

    domain: CheckResult = field(default_factory=CheckResult)
    numeric: CheckResult = field(default_factory=CheckResult)
    factor_not_one: bool = False  # some ξ ≠ 1 (what latent_model_id none forbids)


class LatentCheck(RowGroupCheck):
    """s2_latent_field_5B: one row per (group, bucket) in order with the policy's σ and L and ξ = clip(exp(Z − σ²/2));
    from the stream also ξ the one applied to λ_realised; then Z and ξ of the sampled groups replayed by the
    reference and the latent corridor, over the whole field (Z kept as groups × buckets, ξ for the replayed groups
    only)."""

    dataset_id = LATENT

    def __init__(self, ctx: CheckContext, applied: np.ndarray | None = None) -> None:
        super().__init__(ctx)
        d, lgcp = self.ctx.domain, self.ctx.lgcp
        g, h = len(d.group_ids), d.buckets
        self.applied = applied  # ξ per (group, bucket) applied to λ_realised (from the stream; None from files)
        self.sigma = np.zeros(g) if lgcp.latent_model_id == "none" else self.ctx.params["sigma"].to_numpy()
        self.length = self.ctx.params["length_scale_buckets"].to_numpy()
        # ξ is kept only for the groups a replay compares (the reference's sample; every group under `full`).
        kept = np.arange(g) if self.ctx.replay == "full" else self.ctx.sample(g, full=False)
        self.slot = np.full(g, -1)
        self.slot[kept] = np.arange(len(kept))
        self.latent, self.factor = np.zeros((g, h)), np.zeros((len(kept), h))

    def examine(self, rows: Rows) -> LatentFound:
        d, lgcp, table, start = self.ctx.domain, self.ctx.lgcp, rows.rows, rows.start
        g, h, n = len(d.group_ids), d.buckets, rows.rows.num_rows
        found = LatentFound(n)
        self.add_values(rows, found.schema)
        at = start + np.arange(n)
        group, bucket = at // h, at % h
        if start + n > g * h or not np.array_equal(
                entity_grid.dictionary_codes(table["group_id"], d.dictionaries["group_id"]), group) or \
                not np.array_equal(_numbers(table, "bucket_index"), bucket):
            found.domain.fail(f"rows from {start} are not one per (group_id, bucket) in writer order")
            return found
        for name, value in pipeline.identity_values(self.ctx.identity, table.column_names).items():
            if rows.extremes.get(name) == (value, value):
                continue  # the footer's statistics state every value: no row differs
            if (row := entity_grid.first_mismatch(table[name], value)) is not None:
                found.domain.fail(f"{name} is {table[name][row]} at row {start + row}, the partition's is {value!r}")
                return found
        z, factor = _numbers(table, "latent_value"), _numbers(table, "lambda_random_component")
        sigma = self.sigma[group]
        raw = variates.exp(z - 0.5 * (sigma * sigma))
        rules = [
            ("latent_std differs from the policy's σ", _numbers(table, "latent_std") != sigma),
            ("length_scale_buckets differs from the policy", _numbers(table, "length_scale_buckets") != self.length[group]),
            ("ξ ≠ clip(exp(Z − σ²/2))", factor != np.clip(raw, lgcp.min_factor, lgcp.max_factor)),
            ("`clipped` does not mark the clipped factors", _numbers(table, "clipped") != (factor != raw)),
        ]
        if self.applied is not None:
            rules.append(("ξ differs from the ξ applied to s2_realised_intensity_5B",
                          factor != self.applied.ravel()[start:start + n]))
        for label, bad in rules:
            if bad.any():
                i = int(np.argmax(bad))
                found.numeric.fail(f"{int(bad.sum())} row(s): {label}",
                                   {"group_id": d.group_ids[group[i]], "bucket_index": int(bucket[i])})
        self.latent.ravel()[start:start + n] = z
        found.factor_not_one = bool((factor != 1).any())
        slot = self.slot[group]
        kept = np.flatnonzero(slot >= 0)
        self.factor[slot[kept], bucket[kept]] = factor[kept]
        return found

    def results(self) -> dict[str, CheckResult]:
        ctx, lgcp, d = self.ctx, self.ctx.lgcp, self.ctx.domain
        g, h = len(d.group_ids), d.buckets
        found = self.found()
        rows = sum(f.rows for f in found)
        domain, key = CheckResult(), CheckResult(facts={"by": "(group_id, bucket) order against the grouping's "
                                                              "sorted group ids"})
        for f in found:
            domain = merge_results(domain, f.domain)
        if rows != g * h or list(d.group_ids) != sorted(set(d.group_ids)):
            domain.fail(f"{rows} rows; expected {g} groups × {h} buckets in (group_id, bucket) order")
        if domain.problems:
            key.fail("the rows are not one per (group_id, bucket) in writer order (see domain_complete)")
        results = {SCHEMA_VALID: self.schema_result(rows, [f.schema for f in found]), PRIMARY_KEY_UNIQUE: key}
        if domain.problems:
            return results | {name: domain for name in (DOMAIN_COMPLETE, NUMERIC_VALID, RNG_REPLAY, LATENT_CORRIDOR)}
        domain.facts |= {"groups": g, "buckets": h}
        numeric = merge_results(*(f.numeric for f in found))
        latent_z, factor = self.latent, self.factor
        replay, corridor = CheckResult(), CheckResult()
        replays = ctx.group_replays()
        for by, chosen, fresh in replays:  # the reference's sample, and the engine's every group under `full`
            bad = (latent_z[chosen] != fresh.latent) | (factor[self.slot[chosen]] != fresh.factor)
            if bad.any():
                gi, t = np.argwhere(bad)[0]
                replay.fail(f"{int(bad.sum())} latent value(s) do not replay by the {by}",
                            {"group_id": d.group_ids[chosen[gi]], "bucket_index": int(t)})
        replay.facts |= {"groups_replayed": max(len(chosen) for _, chosen, _ in replays),
                         "groups_replayed_by_reference": len(replays[0][1]), "mode": ctx.replay}
        if lgcp.latent_model_id == "none":
            corridor.facts["model"] = "none (ξ ≡ 1)"
            if (latent_z != 0).any() or any(f.factor_not_one for f in found):
                corridor.fail("latent_model_id none but Z ≠ 0 or ξ ≠ 1")
        else:
            _latent_corridor_result(ctx, latent_z, self.sigma, corridor)
        return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay,
                          LATENT_CORRIDOR: corridor}


def _latent_corridor_result(ctx: CheckContext, latent_z: np.ndarray, sigma: np.ndarray, corridor: CheckResult) -> None:
    """The latent corridor of the whole field Z (groups × buckets) into `corridor`."""
    lgcp, g, h = ctx.lgcp, latent_z.shape[0], latent_z.shape[1]
    if lgcp.latent_model_id == latent.STATIONARY:
        stats = spectral_corridor(stationary_projections(latent_z, sigma, ctx.params, lgcp, h, coupled=ctx.rng.coupled),
                                  ctx.corridors["false_alarm"]) | {"model": f"projected {lgcp.kernel_id}"}
    else:
        phi = np.zeros(g) if lgcp.latent_model_id == "log_gaussian_iid_v1" else ctx.params["phi"].to_numpy()
        stats = latent_corridor(latent_z, sigma, phi, ctx.corridors["false_alarm"])
    corridor.facts |= {k: v for k, v in stats.items() if k != "passed"}
    if not stats["variance_ok"]:
        corridor.fail(f"pooled Σ Z²/σ² = {stats['sum_sq']:.6g} outside [{stats['sum_sq_low']:.6g}, "
                      f"{stats['sum_sq_high']:.6g}] (σ̂/σ = {stats['sigma_ratio']:.4f})")
    if not stats.get("tilt_ok", True):
        corridor.fail(f"spectral tilt {stats['tilt_stat']:.6g} outside ±{stats['tilt_bound']:.6g}: the variance is "
                      f"not spread over the directions as the kernel's eigenvalues say (wrong L or kernel)")
    if not stats.get("lag1_ok", True):
        corridor.fail(f"lag-1 martingale statistic {stats['lag1_stat']:.6g} outside ±{stats['lag1_bound']:.6g} "
                      f"(ρ̂ = {stats['lag1_estimate']:.4f}, mean φ = {stats['phi_mean']:.4f})")


# ---- from the stored files -----------------------------------------------------------------------------------------

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
    """A column of a stored file, renamed, row group by row group."""
    stream = RowStream(path, [column])
    while (part := stream.take(1 << 20)).num_rows:
        yield pa.table({name: part[column]})


def _drawing_rows(ctx: CheckContext) -> tuple[Iterator[pa.Table], list[int]]:
    """The count rows with μ > lambda_zero_eps of the stored counts (row, μ, count_N), and a list that holds
    their number once they are all read."""
    eps, total = ctx.count_policy.lambda_zero_eps, []

    def rows() -> Iterator[pa.Table]:
        file = pq.ParquetFile(ctx.path(COUNTS))
        start, drawing = 0, 0
        for i in range(file.num_row_groups):
            part = file.read_row_group(i, columns=["mu", "count_N"])
            mu = _numbers(part, "mu")
            local = np.flatnonzero(mu > eps)
            drawing += len(local)
            yield pa.table({"count_row": start + local, "mu": mu[local], "count_N": _numbers(part, "count_N")[local]})
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

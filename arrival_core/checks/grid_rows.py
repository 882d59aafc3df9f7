"""The row-group checks of the entity × bucket grid tables: placement against grid × grouping (`GridCheck`),
S2's realised intensity (`RealisedCheck`) and S3's counts (`CountsCheck`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import counts, entity_grid, pipeline, sink
from ..errors import ArrivalError
from . import count_row_kernels, intensity_kernels, placed
from .context import CheckContext, CheckResult
from .counting import (
    CountMoments,
    _reference_counts,
    _replay_counts,
    count_corridor,
)
from .intensity import (
    merge_results,
)
from .rows import COUNTS, REALISED, Found, RowGroupCheck, Rows
from .scanning import GRID_KEYS, earliest, grouping_order_problem, numbers, pieces
from .specs import (
    COUNT_CORRIDOR,
    DOMAIN_COMPLETE,
    NUMERIC_VALID,
    PRIMARY_KEY_UNIQUE,
    RNG_REPLAY,
    SCHEMA_VALID,
)


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
        in_place = rows.placed is not None and set(placed.KEYS) <= rows.placed.keys()
        bad_key, bad_group = (None, None) if in_place else entity_grid.rows_misaligned(
            table, d, start, "bucket_index", group_column="group_id")
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

    def examined(self, group: sink.RowGroupBytes, rows: Rows, found: GridFound) -> None:
        """A row group found where grid × grouping puts it: its key columns' bytes are kept (`placed.remember`)."""
        if found.aligned and not found.domain.problems:
            placed.remember(self.ctx.identity, group, rows.rows)

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
        target, factor, realised = (numbers(table, c) for c in ("lambda_baseline", "lambda_random_component",
                                                                  "lambda_realised"))
        counts_, first = np.zeros(len(intensity_kernels.RULES), dtype=np.int64), np.full(len(intensity_kernels.RULES), -1)
        for a, sealed in pieces(rows.inputs["lambda_target"]):  # the sealed λ as its chunks came: none joined
            b, at = a + len(sealed), start + a
            e0, e1 = _touched(at, len(sealed), h)
            found_, first_ = intensity_kernels.realised_mismatches(
                target[a:b], sealed, factor[a:b], realised[a:b], lgcp.min_factor, lgcp.max_factor, lgcp.lambda_max,
                self.factors, d.entity_group[e0:e1], h, at - e0 * h)
            counts_ += found_
            first = earliest(first, first_, a)
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

    @functools.cached_property
    def _realised_file(self) -> tuple[Path, pq.FileMetaData, np.ndarray]:
        """S2's published λ_realised file, its footer and each row group's first row."""
        path = self.ctx.path(REALISED)
        footer = pq.read_metadata(path)
        sizes = [footer.row_group(g).num_rows for g in range(footer.num_row_groups)]
        return path, footer, np.concatenate([[0], np.cumsum(sizes)])

    def placed_by_bytes(self, group: sink.RowGroupBytes) -> dict[str, pa.Array | None] | None:
        """The key columns of a row group, undecoded, when their bytes are those of S2's realised row group of the
        same rows that this process decoded and found in place (`placed.proven`)."""
        return placed.proven(self.ctx.identity, group)

    def known_by_bytes(self, group: sink.RowGroupBytes) -> dict[str, np.ndarray]:
        """λ_realised and μ of a row group, undecoded, when their pages are byte for byte the pages of S2's
        λ_realised for the same rows, which this state read (its companion `lambda_input`): the same bytes decode
        to the same values, so both are those values (else both are decoded)."""
        inputs = group.companion
        if inputs is None or "lambda_input" not in inputs.column_names or inputs.num_rows != group.num_rows:
            return {}
        try:  # anything that stops the proof leaves the columns to be decoded
            path, footer, starts = self._realised_file
            i = group.index
            if i + 1 >= len(starts) or starts[i] != group.start or starts[i + 1] - starts[i] != group.num_rows:
                return {}
            realised = group.column_chunk("lambda_realised")
            offset, length = sink.chunk_span(footer, i, "lambda_realised")
            if length != realised.size or not realised.equals(group.column_chunk("mu")):
                return {}
            with open(path, "rb") as published:  # compared where they lie, neither copied again
                if not pa.py_buffer(os.pread(published.fileno(), length, offset)).equals(realised):
                    return {}
        except (OSError, KeyError, ValueError, pa.ArrowException, ArrivalError):
            return {}
        values = numbers(inputs, "lambda_input")
        return {"lambda_realised": values, "mu": values}

    def rules(self, rows: Rows, found: GridFound) -> None:
        ctx, start, table = self.ctx, rows.start, rows.rows
        d, policy = ctx.domain, ctx.count_policy
        h, n = d.buckets, table.num_rows
        mu, count, capped = rows.numbers("mu"), numbers(table, "count_N"), numbers(table, "count_capped")
        realised = rows.numbers("lambda_realised")
        # proven by bytes, λ_realised is the input's array itself (`known_by_bytes`): not gathered a second time
        read = realised if "lambda_realised" in rows.known else numbers(rows.inputs, "lambda_input")
        found_, first, drawing = np.zeros(len(count_row_kernels.RULES), dtype=np.int64), np.full(
            len(count_row_kernels.RULES), -1), 0
        # the counts drawn travel beside the rows from the stream only: judged chunk by chunk of them, none joined
        drawn_pieces = pieces(rows.inputs["count_drawn"]) if "count_drawn" in rows.inputs.column_names else [(0, None)]
        for a, drawn in drawn_pieces:
            b = n if drawn is None else a + len(drawn)
            piece_found, piece_first, piece_drawing = count_row_kernels.count_mismatches(
                realised[a:b], read[a:b], mu[a:b], count[a:b], capped[a:b], drawn, policy.max_count,
                policy.lambda_zero_eps)
            found_ += piece_found
            first = earliest(first, piece_first, a)
            drawing += piece_drawing
        failed = [(label, int(n), int(i)) for label, n, i in zip(count_row_kernels.RULES, found_, first)]
        law = table["count_law_id"]
        if entity_grid.first_mismatch(law, policy.law) is not None:  # its dictionary holds another value
            bad = entity_grid.dictionary_codes(law, pa.array([policy.law])) < 0
            failed.insert(5, (f"count_law_id is not {policy.law}", int(bad.sum()), int(np.argmax(bad))))
        numeric, replay = found.rules[NUMERIC_VALID], found.rules[RNG_REPLAY]
        for label, bad_rows, i in failed:
            if bad_rows:
                numeric.fail(f"{bad_rows} row(s): {label}", entity_grid.grid_key(d, 0, start + i, "bucket_index"))
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
        found.facts["drawing"] = drawing
        moments = CountMoments()
        e0, _ = _touched(start, n, h)
        moments.add(mu, count, None if self.kappa is None else self.kappa[e0:], capped, float(policy.max_count),
                    eps=policy.lambda_zero_eps, first_bucket=start - e0 * h, buckets=h)
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

"""One decode per file for the checks of the big tables: whole-entity Arrow chunks with dictionary-coded strings,
aligned to grid × grouping, with every column rule checked on the file's value sets.

A table of the entity × bucket grid (S2's realised intensity, S3's counts) whose every row sits where grid ×
grouping puts it is in writer order with a unique key exactly when the grouping itself is strictly ordered, so
its key check follows from the alignment and the grouping's order, with no per-row key comparison.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import entity_grid, pipeline
from ..errors import CONTRACT_INVALID, ArrivalError
from ..grouping import ENTITY_KEYS
from ..prefetch import prefetched
from .context import CheckContext, CheckResult, require_file
from .specs import DOMAIN_COMPLETE, PRIMARY_KEY_UNIQUE, SCHEMA_VALID

GRID_KEYS = (*ENTITY_KEYS, "bucket_index")


def string_columns(path) -> list[str]:
    """The string columns of a parquet file (read dictionary-coded, so no per-row string is built)."""
    return [f.name for f in pq.ParquetFile(path).schema_arrow if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)]


class ValueCheck:
    """A table's column rules checked on its value sets, fed chunk by chunk; failures become a check result."""

    def __init__(self, ctx: CheckContext, dataset_id: str, path) -> None:
        self.result = CheckResult()
        self._values = pipeline.ValueSets(ctx.store, dataset_id, path, CONTRACT_INVALID)
        self._extremes = pipeline.integer_extremes(pq.read_metadata(path))  # the published footer's statistics

    def add(self, start: int, table: pa.Table) -> None:
        try:
            self._values.add(table, self._extremes)
        except ArrivalError as err:
            self.result.fail(f"rows from {start}: {err.message}")

    def finish(self, rows: int) -> CheckResult:
        try:
            self._values.validate()
        except ArrivalError as err:
            self.result.fail(err.message)
        self.result.facts["rows"] = rows
        return self.result


def grouping_order_problem(ctx: CheckContext) -> str | None:
    """Why the grouping's entities are not strictly increasing in writer order, or None."""
    entities = ctx.domain.entities.select(ENTITY_KEYS)
    if not entities.equals(entities.sort(list(ENTITY_KEYS))):
        return "s1_grouping_5B is not sorted by the entity keys"
    if not entities.is_unique().all():
        return "s1_grouping_5B repeats an entity"
    return None


class GridScan:
    """One pass over a grid table: alignment to grid × grouping and the partition's identity on every row, the
    column rules on value sets; chunks are yielded while the table is aligned."""

    def __init__(self, ctx: CheckContext, dataset_id: str) -> None:
        self.ctx, self.dataset_id = ctx, dataset_id
        self.path = ctx.path(dataset_id)
        require_file(self.path)
        self.rows = pipeline.table_rows(self.path)
        self.values = ValueCheck(ctx, dataset_id, self.path)
        self.domain = CheckResult(facts={"rows": self.rows, "entities": ctx.domain.size, "buckets": ctx.domain.buckets})
        self.aligned = self.rows == ctx.domain.rows
        if not self.aligned:
            self.domain.fail(f"{self.rows} rows, expected {ctx.domain.size} entities × {ctx.domain.buckets} buckets "
                             f"= {ctx.domain.rows}")

    def chunks(self) -> Iterator[tuple[int, int, pa.Table]]:
        """(e0, e1, rows) of whole entities, in order, while every row so far is aligned."""
        d = self.ctx.domain
        h = d.buckets
        columns = pq.ParquetFile(self.path).schema_arrow.names
        identity = pipeline.identity_values(self.ctx.identity, columns)
        group = "group_id" if "group_id" in columns else None
        strings = string_columns(self.path)
        for e0, chunk in prefetched(pipeline.read_whole_entities(self.path, columns, strings, h,
                                                                 pipeline.default_chunk_entities(h))):
            chunk = combined_numbers(chunk)
            self.values.add(e0 * h, chunk)
            if not self.aligned:
                continue
            e1 = e0 + chunk.num_rows // h
            bad_key, bad_group = entity_grid.chunk_misaligned(chunk, d, e0, e1, "bucket_index", group_column=group)
            if bad_key is not None or bad_group is not None:
                row = bad_key if bad_key is not None else bad_group
                self.domain.fail(f"row {e0 * h + row} is not where grid × grouping puts it (entity keys, bucket order "
                                 f"or group)", entity_grid.row_key(chunk, row, GRID_KEYS))
                self.aligned = False
                continue
            for column, value in identity.items():
                if (row := entity_grid.first_mismatch(chunk[column], value)) is not None:
                    self.domain.fail(f"{column} is {chunk[column][row]} at row {e0 * h + row}, the partition's is "
                                     f"{value!r}", entity_grid.grid_key(d, e0, row, "bucket_index"))
                    self.aligned = False
                    break
            if self.aligned:
                yield e0, e1, chunk

    def results(self) -> dict[str, CheckResult]:
        """Schema (value sets), key (from alignment and the grouping's order) and domain results."""
        key = CheckResult(facts={"by": "alignment to grid × grouping"})
        if not self.aligned:
            key.fail("the rows are not grid × grouping in writer order (see domain_complete)")
        elif (problem := grouping_order_problem(self.ctx)) is not None:
            key.fail(problem)
        return {SCHEMA_VALID: self.values.finish(self.rows), PRIMARY_KEY_UNIQUE: key, DOMAIN_COMPLETE: self.domain}


class RowStream:
    """Consecutive rows of a parquet file taken in any lengths, each row group decoded once (strings
    dictionary-coded)."""

    def __init__(self, path, columns: list[str] | None = None) -> None:
        self._file = pq.ParquetFile(path, read_dictionary=string_columns(path))
        self._columns = columns
        self._next = 0
        self._held: pa.Table | None = None
        self.taken = 0

    def take(self, n: int) -> pa.Table:
        """The next n rows (fewer at the end of the file)."""
        parts = [] if self._held is None else [self._held]
        held = sum(p.num_rows for p in parts)
        while held < n and self._next < self._file.num_row_groups:
            part = self._file.read_row_group(self._next, columns=self._columns)
            self._next += 1
            parts.append(part)
            held += part.num_rows
        table = pa.concat_tables(parts) if parts else self._file.schema_arrow.empty_table()
        self._held = table.slice(n)
        self.taken += min(n, table.num_rows)
        return table.slice(0, n)


def combined_numbers(table: pa.Table) -> pa.Table:
    """The table with each non-dictionary column in one piece (read several times: one copy, then NumPy views);
    dictionary columns stay as read (their codes are mapped chunk by chunk)."""
    return pa.table({name: col if pa.types.is_dictionary(col.type) else col.combine_chunks()
                     for name, col in zip(table.column_names, table.columns)})


def column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as a NumPy array."""
    return table[name].to_numpy()

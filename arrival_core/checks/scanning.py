"""What the checks of the big tables share for reading: their grid keys, consecutive rows of a stored file taken in
any lengths, and the grouping's order.

A table of the entity × bucket grid (S2's realised intensity, S3's counts) whose every row sits where grid ×
grouping puts it is in writer order with a unique key exactly when the grouping itself is strictly ordered, so
its key check follows from the alignment and the grouping's order, with no per-row key comparison.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..grouping import ENTITY_KEYS
from .context import CheckContext

GRID_KEYS = (*ENTITY_KEYS, "bucket_index")


def string_columns(path) -> list[str]:
    """The string columns of a parquet file (read dictionary-coded, so no per-row string is built)."""
    return [f.name for f in pq.ParquetFile(path).schema_arrow if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)]


def grouping_order_problem(ctx: CheckContext) -> str | None:
    """Why the grouping's entities are not strictly increasing in writer order, or None."""
    entities = ctx.domain.entities.select(ENTITY_KEYS)
    if not entities.equals(entities.sort(list(ENTITY_KEYS))):
        return "s1_grouping_5B is not sorted by the entity keys"
    if not entities.is_unique().all():
        return "s1_grouping_5B repeats an entity"
    return None




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




def column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as a NumPy array."""
    return table[name].to_numpy()

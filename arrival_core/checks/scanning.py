"""What the checks of the big tables share for reading: their grid keys, the grouping's order and numeric columns.

A table of the entity × bucket grid (S2's realised intensity, S3's counts) whose every row sits where grid ×
grouping puts it is in writer order with a unique key exactly when the grouping itself is strictly ordered, so
its key check follows from the alignment and the grouping's order, with no per-row key comparison.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ..grouping import ENTITY_KEYS
from .context import CheckContext

GRID_KEYS = (*ENTITY_KEYS, "bucket_index")


def grouping_order_problem(ctx: CheckContext) -> str | None:
    """Why the grouping's entities are not strictly increasing in writer order, or None."""
    entities = ctx.domain.entities.select(ENTITY_KEYS)
    if not entities.equals(entities.sort(list(ENTITY_KEYS))):
        return "s1_grouping_5B is not sorted by the entity keys"
    if not entities.is_unique().all():
        return "s1_grouping_5B repeats an entity"
    return None


def pieces(column: pa.ChunkedArray) -> Iterator[tuple[int, np.ndarray]]:
    """A numeric column's chunks as (first row, NumPy view): its values without joining them into one array."""
    at = 0
    for chunk in column.chunks:
        if len(chunk):
            yield at, chunk.to_numpy(zero_copy_only=False)
            at += len(chunk)


def earliest(first: np.ndarray, found: np.ndarray, offset: int) -> np.ndarray:
    """Each rule's first failing row so far, else the one a later piece of the rows found (its row + `offset`, the
    piece's first row; −1: none yet): rules judged piece by piece, in row order, name the rows the whole would."""
    return np.where(first >= 0, first, np.where(found >= 0, found + offset, -1))


def numbers(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as a NumPy array (one chunk: a view, no copy; several: their views joined once)."""
    column = table[name]
    if column.num_chunks == 0:
        return column.to_numpy()
    parts = [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

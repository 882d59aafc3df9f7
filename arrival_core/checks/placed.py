"""Key columns already placed: the key-column chunks of S2's realised row groups that this process decoded and found
where grid × grouping puts them (`remember`), so that S3's counts, whose key columns are written alike, need neither
decoding nor placing when their bytes are those very bytes at the same rows (`proven`): the same bytes decode to the
same values, which were placed. Kept for one partition at a time and in this process only: a state in another
process decodes and places its own key columns.
"""
from __future__ import annotations

import threading

import pyarrow as pa

from .. import sink
from ..identity import Identity
from .scanning import GRID_KEYS

KEYS = (*GRID_KEYS, "group_id")  # the columns a grid row group's placement reads

_lock = threading.Lock()
_kept: dict = {"partition": None, "chunks": {}}  # (first row, rows) → {column: (pages, dictionary or None)}


def _partition(identity: Identity) -> tuple:
    return identity.manifest_fingerprint, identity.parameter_hash, identity.seed, identity.scenario_id


def remember(identity: Identity, group: sink.RowGroupBytes, rows: pa.Table) -> None:
    """Keep the key columns' pages of a row group whose decoded `rows` were found in place, with each string
    column's dictionary (its values, for the value sets of a table that does not decode them)."""
    kept = {}
    for name in KEYS:
        column = rows[name]
        if column.num_chunks != 1:
            return
        dictionary = column.chunk(0).dictionary if pa.types.is_dictionary(column.type) else None
        # copies, both: the pages are the encoder's buffer, and a decoded dictionary may hold on to the whole row
        # group's bytes
        kept[name] = (pa.py_buffer(group.column_chunk(name).to_pybytes()),
                      None if dictionary is None else pa.array(dictionary.to_pylist(), dictionary.type))
    with _lock:
        if _kept["partition"] != _partition(identity):
            _kept["partition"], _kept["chunks"] = _partition(identity), {}
        _kept["chunks"][(group.start, group.num_rows)] = kept


def proven(identity: Identity, group: sink.RowGroupBytes) -> dict[str, pa.Array | None] | None:
    """Each key column's dictionary (None for an integer column) when every key column of the row group is, byte for
    byte, the chunk of a row group of the same partition and rows found in place here; else None."""
    with _lock:
        same = _kept["partition"] == _partition(identity)
        kept = _kept["chunks"].get((group.start, group.num_rows)) if same else None
    if kept is None:
        return None
    try:
        if not all(group.column_chunk(name).equals(pages) for name, (pages, _) in kept.items()):
            return None
    except KeyError:  # the table has no such column: its own checks say so
        return None
    return {name: dictionary for name, (_, dictionary) in kept.items()}

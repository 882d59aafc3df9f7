"""One parquet file from one-row-group parquet files, appended in order: the column chunks copied as they are
under one footer (`RowGroupStitcher`), so a file encoded row group by row group on many threads is byte for byte
the one Arrow's serial writer makes."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from . import thrift

_MAGIC = b"PAR1"
# Field ids of parquet.thrift: FileMetaData, RowGroup, ColumnChunk, ColumnMetaData.
_FILE_NUM_ROWS, _FILE_ROW_GROUPS = 3, 4
_GROUP_COLUMNS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 5, 7
_CHUNK_META, _CHUNK_INDEXES = 3, (4, 6)
_META_OFFSETS, _META_BLOOM = (9, 10, 11), 14


class RowGroupStitcher:
    """Appends one-row-group parquet files (`encode_row_group`), in order, as the row groups of one file: their
    column chunks are copied as they are, and the footer is Arrow's, with the row groups' offsets moved to where
    the chunks landed and their ordinals renumbered. Arrow encodes each row group independently, so the file is
    byte for byte the one its serial writer makes from the same row groups."""

    def __init__(self, out, schema: pa.Schema, options: dict) -> None:
        self._out, self._schema, self._options = out, schema, options
        self._groups: list[thrift.Struct] = []
        self._footer: thrift.Struct | None = None
        self._rows = 0
        self._position = 0
        self._emit(_MAGIC)

    def _emit(self, data) -> None:
        self._out.write(data)
        self._position += len(data)

    def append(self, encoded: pa.Buffer) -> None:
        """Append the row group of a one-row-group file."""
        data = memoryview(encoded).cast("B")
        footer_length = int.from_bytes(data[-8:-4], "little")
        body_end = len(data) - 8 - footer_length
        if bytes(data[:4]) != _MAGIC or bytes(data[-4:]) != _MAGIC or body_end < 4:
            raise pa.ArrowInvalid("an encoded row group is not a parquet file")
        footer, _ = thrift.decode_struct(data[body_end:len(data) - 8])
        groups = thrift.field(footer, _FILE_ROW_GROUPS).value.values
        if len(groups) != 1:
            raise pa.ArrowInvalid(f"an encoded row group holds {len(groups)} row groups")
        group = groups[0]
        _shift_offsets(group, self._position - 4, len(self._groups))
        self._footer = self._footer or footer
        self._groups.append(group)
        self._rows += thrift.field(group, 3).value
        self._emit(data[4:body_end])

    def finish(self) -> None:
        """Write the footer (an empty file: Arrow's own bytes for no row groups)."""
        if self._footer is None:
            empty = pa.BufferOutputStream()
            pq.ParquetWriter(empty, self._schema, **self._options).close()
            self._emit(memoryview(empty.getvalue())[4:])
            return
        for f in self._footer:
            if f.id == _FILE_NUM_ROWS:
                f.value = self._rows
            elif f.id == _FILE_ROW_GROUPS:
                f.value = thrift.Items(thrift.STRUCT, self._groups)
        encoded = thrift.encode_struct(self._footer)
        self._emit(encoded + len(encoded).to_bytes(4, "little") + _MAGIC)


def _shift_offsets(group: thrift.Struct, delta: int, ordinal: int) -> None:
    """Move a row group's file offsets by `delta` bytes and give it its ordinal in the file."""
    for f in group:
        if f.id == _GROUP_FILE_OFFSET:
            f.value += delta
        elif f.id == _GROUP_ORDINAL:
            f.value = ordinal
        elif f.id == _GROUP_COLUMNS:
            for chunk in f.value.values:
                for c in chunk:  # its file_offset stays as Arrow writes it (0, the field is deprecated)
                    if c.id in _CHUNK_INDEXES:
                        raise pa.ArrowInvalid("page indexes are not part of the 5B format")
                    elif c.id == _CHUNK_META:
                        for m in c.value:
                            if m.id in _META_OFFSETS:
                                m.value += delta
                            elif m.id == _META_BLOOM:
                                raise pa.ArrowInvalid("bloom filters are not part of the 5B format")

"""The 5B parquet file format and its writer: fixed row groups, column encodings by type, bytes hashed as they are
written."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1 << 20  # fixed so file bytes never depend on how a writer was fed


def parquet_options(schema: pa.Schema) -> dict:
    """The 5B file format, by column type: strings in dictionary pages (dictionary-coded arrays are written as their
    codes), integers delta-packed (bucket indexes and RNG counters shrink to almost nothing), floats plain (a
    dictionary of continuous values rarely pays for its hashing); statistics on the non-string columns, which
    readers prune by; zstd level 1; pages cut by size only (a page per 20,000 rows, Arrow's default, costs a
    compression context each and makes constant columns dear). No Arrow schema is embedded, so readers see plain
    strings."""
    strings = [f.name for f in schema if _is_string(f.type)]
    encodings = {f.name: "DELTA_BINARY_PACKED" if pa.types.is_integer(f.type) else "PLAIN"
                 for f in schema if not _is_string(f.type) and not pa.types.is_boolean(f.type)}
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": strings,
            "write_statistics": [f.name for f in schema if f.name not in strings], "column_encoding": encodings,
            "max_rows_per_page": ROW_GROUP_ROWS, "store_schema": False}


def _is_string(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


class DigestingFile:
    """A write-only file over an open descriptor that hashes every byte it writes, so a staged file's sha256 is
    known when it is closed, without reading it back."""

    def __init__(self, fd: int) -> None:
        self._fd, self._sha = fd, hashlib.sha256()
        self.position, self.closed = 0, False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.position += done
        return done

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered here; durability is the transaction's fsync."""

    def close(self) -> None:
        self.closed = True

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class ParquetSink:
    """Streams frames into a staged parquet file in fixed-size row groups (bytes independent of chunking)."""

    def __init__(self, tmp: Path | pa.NativeFile | DigestingFile, schema: pa.Schema,
                 fail: Callable[[BaseException], Exception] | None = None, options: dict | None = None) -> None:
        self._fail = fail
        self._file = tmp
        try:
            self._writer = pq.ParquetWriter(tmp, schema, **(options or parquet_options(schema)))
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)
        self._schema = schema
        self._required = [f.name for f in schema if not f.nullable]
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    @property
    def sha256(self) -> str | None:
        """The written file's sha256 once closed, when it was written through a DigestingFile."""
        return self._file.hexdigest() if isinstance(self._file, DigestingFile) and self._file.closed else None

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        """Append rows (already in writer order) to the staged file."""
        try:
            self._write(frame)
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _write(self, frame: pl.DataFrame | pa.Table) -> None:
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if table.num_rows == 0:
            return
        table = table.select(self._schema.names)
        for name in self._required:
            if table[name].null_count:
                raise pa.ArrowInvalid(f"column {name} holds {table[name].null_count} null(s) but is not nullable")
        table = table.cast(self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        full = (table.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        cut = table.num_rows if final else full
        for start in range(0, cut, ROW_GROUP_ROWS):
            self._writer.write_table(table.slice(start, min(ROW_GROUP_ROWS, cut - start)), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(cut)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close_quietly(self) -> None:
        """Close the file without writing what is buffered (the transaction is aborting)."""
        self._writer.close()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        try:
            self._flush(final=True)
            self._writer.close()
            if isinstance(self._file, DigestingFile):
                self._file.close()
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _reraise(self, exc: BaseException) -> None:
        """Raise the owner's coded failure for a write error (or the error itself for an in-memory sink)."""
        if self._fail is None:
            raise exc
        raise self._fail(exc) from exc

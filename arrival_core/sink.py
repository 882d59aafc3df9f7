"""The 5B parquet file format and its writer: fixed row groups, column encodings by type, bytes hashed as they are
written."""
from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import contracts, parallel
from .stitch import RowGroupStitcher

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


def _writeback(fd: int) -> None:
    with contextlib.suppress(OSError):  # only a head start: the commit's fsync reports a failure
        os.fdatasync(fd)


class DigestingFile:
    """A write-only file over an open descriptor that hashes every byte it writes, so a staged file's sha256 is
    known when it is closed, without reading it back."""

    def __init__(self, fd: int) -> None:
        self._fd, self._sha = fd, hashlib.sha256()
        self.position, self.closed = 0, False
        self._synced_to = 0
        self._syncing: threading.Thread | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.position += done
        self._start_writeback()
        return done

    def _start_writeback(self) -> None:
        """Every `writeback_bytes` (config/runtime.yaml) written, have the disk take what is written so far on a
        thread of its own (one at a time), so the transaction's fsync at commit waits for the last part only."""
        if self.position - self._synced_to < contracts.runtime_settings()["writeback_bytes"] or (self._syncing and self._syncing.is_alive()):
            return
        self._synced_to = self.position
        self._syncing = threading.Thread(target=_writeback, args=(self._fd,), daemon=True, name="arrival-writeback")
        self._syncing.start()

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered here; durability is the transaction's fsync."""

    def close(self) -> None:
        if self._syncing is not None:
            self._syncing.join()
        self.closed = True

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


@dataclass(frozen=True)
class RowGroupBytes:
    """One row group as its worker encoded it: its first row in the file, its number of rows, its bytes (a
    one-row-group parquet file whose column chunks the file holds unchanged) and the rows' companion columns (what
    the writer gave beside them, cut at the same rows; None when it gave none)."""

    index: int
    start: int
    num_rows: int
    data: pa.Buffer
    companion: pa.Table | None = None

    @functools.cached_property
    def footer(self) -> pq.FileMetaData:
        """The footer of the row group's own bytes (its statistics describe exactly these rows)."""
        return pq.read_metadata(pa.BufferReader(self.data))

    def column_chunk(self, name: str) -> pa.Buffer:
        """The encoded bytes (pages) of one column chunk, as the published file holds them."""
        return self.data.slice(*chunk_span(self.footer, 0, name))

    def decoded(self, read_dictionary: list[str] | None = None, skip: Collection[str] = ()) -> pa.Table:
        """The rows decoded from the bytes, as a reader of the published file decodes this row group (the columns
        in `skip` left out: what the footer's statistics already state)."""
        reader = pq.ParquetFile(pa.BufferReader(self.data), metadata=self.footer, read_dictionary=read_dictionary)
        columns = [name for name in reader.schema_arrow.names if name not in skip] if skip else None
        return reader.read_row_group(0, columns=columns, use_threads=False)


def chunk_span(footer: pq.FileMetaData, row_group: int, name: str) -> tuple[int, int]:
    """(offset, length) in its file of a column chunk's pages (its dictionary page first, when it has one)."""
    names = footer.schema.names
    if name not in names:
        raise KeyError(name)
    column = footer.row_group(row_group).column(names.index(name))
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    return start, column.total_compressed_size


Inspector = Callable[[RowGroupBytes], None]
RowInspector = Callable[[pa.Table, RowGroupBytes], None]  # also given the rows the row group was encoded from


class ParquetSink:
    """Streams frames into a staged parquet file in fixed-size row groups (bytes independent of chunking).

    Each row group is encoded on the shared worker pool as its own one-row-group file (`encode_row_group`); the
    finished row groups are appended in order under one footer (`RowGroupStitcher`), giving the bytes Arrow's
    serial writer gives for the same row groups, whatever the thread count."""

    def __init__(self, tmp: Path | pa.NativeFile | DigestingFile, schema: pa.Schema,
                 fail: Callable[[BaseException], Exception] | None = None, options: dict | None = None) -> None:
        self._fail = fail
        self._file = tmp
        self._schema = schema
        self._options = options or parquet_options(schema)
        self._required = [f.name for f in schema if not f.nullable]
        self._inspectors: list[Inspector] = []
        self._row_inspectors: list[RowInspector] = []
        self._pending: list[tuple[pa.Table, pa.Table | None]] = []
        self._pending_rows = 0
        self._encoding: collections.deque[Future] = collections.deque()
        self.rows = 0
        self._submitted = 0  # row groups handed to the encoders
        self._submitted_rows = 0
        try:
            self._out = open(tmp, "wb") if isinstance(tmp, (str, Path)) else tmp  # noqa: SIM115 - closed by close()
            self._stitcher = RowGroupStitcher(self._out, schema, self._options)
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    @property
    def sha256(self) -> str | None:
        """The written file's sha256 once closed, when it was written through a DigestingFile."""
        return self._file.hexdigest() if isinstance(self._file, DigestingFile) and self._file.closed else None

    def inspect_row_groups(self, inspect: Inspector) -> None:
        """Also run `inspect(row_group)` on every row group, on the worker that encoded it, after the inspections
        given before it and those of its rows (`inspect_rows`); one that raises fails the file."""
        self._inspectors.append(inspect)

    def inspect_rows(self, inspect: RowInspector) -> None:
        """Also run `inspect(rows, row_group)` on every row group with the rows it was encoded from, on the worker
        that encoded it, before the inspections of its bytes alone: the rows are let go before those, so that their
        memory serves the decoding there instead of the heap growing by a row group per worker. One that raises
        fails the file."""
        self._row_inspectors.append(inspect)

    def write(self, frame: pl.DataFrame | pa.Table, companion: pa.Table | None = None) -> None:
        """Append rows (already in writer order) to the staged file, with `companion` columns of the same rows
        that travel to the inspections of their row groups (and are not written)."""
        try:
            self._write(frame, companion)
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _write(self, frame: pl.DataFrame | pa.Table, companion: pa.Table | None) -> None:
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if companion is not None and companion.num_rows != table.num_rows:
            raise ValueError(f"{companion.num_rows} companion rows for {table.num_rows} rows")
        if table.num_rows == 0:
            return
        table = table.select(self._schema.names)
        for name in self._required:
            if table[name].null_count:
                raise pa.ArrowInvalid(f"column {name} holds {table[name].null_count} null(s) but is not nullable")
        table = table.cast(self._schema)
        self._pending.append((table, companion))
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables([t for t, _ in self._pending])  # no copy: each row group's pieces are joined by its worker
        companions = [c for _, c in self._pending]
        companion = None if any(c is None for c in companions) else pa.concat_tables(companions)
        full = (table.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        cut = table.num_rows if final else full
        for start in range(0, cut, ROW_GROUP_ROWS):
            length = min(ROW_GROUP_ROWS, cut - start)
            self._submit(table.slice(start, length), None if companion is None else companion.slice(start, length))
        rest = table.slice(cut)
        self._pending = [(rest, None if companion is None else companion.slice(cut))] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _submit(self, table: pa.Table, companion: pa.Table | None) -> None:
        index, start = self._submitted, self._submitted_rows
        self._submitted += 1
        self._submitted_rows += table.num_rows
        executor = parallel.pool()
        if executor is None:
            self._append(self._encode([table], companion, index, start))
            return
        self._encoding.append(executor.submit(self._encode, [table], companion, index, start))
        while len(self._encoding) > parallel.in_flight() or self._encoding[0].done():
            self._append(self._encoding.popleft().result())
            if not self._encoding:
                break

    def _encode(self, held: list[pa.Table], companion: pa.Table | None, index: int, start: int) -> _Encoded:
        """Encode the row group `held` holds (taken out of it, so that its pieces go once joined), then inspect it."""
        table = held.pop().combine_chunks()
        encoded = _encode_pooled(table, self._schema, self._options)
        group = RowGroupBytes(index, start, table.num_rows, encoded.data, companion)
        try:
            for inspect_rows in self._row_inspectors:
                inspect_rows(table, group)
            del table  # before the bytes' inspections, which decode them
            for inspect in self._inspectors:
                inspect(group)
        except BaseException:
            _BUFFERS.give(encoded.buffer)
            raise
        return encoded

    def _append(self, encoded: _Encoded) -> None:
        try:
            self._stitcher.append(encoded.data)
        finally:
            _BUFFERS.give(encoded.buffer)

    def close_quietly(self) -> None:
        """Stop encoding without writing what is buffered (the transaction is aborting)."""
        parallel.settle(self._encoding)
        self._encoding.clear()
        self._pending = []
        if self._out is not self._file:
            self._out.close()

    def drain(self) -> None:
        """Encode and write every row given so far, the last short row group too (nothing may be written after)."""
        try:
            self._flush(final=True)
            while self._encoding:
                self._append(self._encoding.popleft().result())
        except (OSError, pa.ArrowException) as exc:
            parallel.settle(self._encoding)
            self._reraise(exc)
        except BaseException:
            parallel.settle(self._encoding)
            raise

    def close(self) -> None:
        """Write what is buffered, the footer, and close the file."""
        self.drain()
        try:
            self._stitcher.finish()
            if self._out is not self._file:
                self._out.close()
            if isinstance(self._file, DigestingFile):
                self._file.close()
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _reraise(self, exc: BaseException) -> None:
        """Raise the owner's coded failure for a write error (or the error itself for an in-memory sink)."""
        if self._fail is None:
            raise exc
        raise self._fail(exc) from exc


def encode_row_group(table: pa.Table, schema: pa.Schema, options: dict) -> pa.Buffer:
    """One row group as a whole parquet file in memory, written by Arrow's own writer (which releases the GIL)."""
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(out, schema, **options) as writer:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
    return out.getvalue()


class _Encoded:
    """A row group's file bytes (`data`) inside a pooled buffer, which goes back to the pool once they are written."""

    def __init__(self, buffer: pa.Buffer, size: int) -> None:
        self.buffer, self.data = buffer, buffer.slice(0, size)


class _BufferPool:
    """Output buffers for encoded row groups, reused: each row group's bytes land in memory already faulted in,
    instead of fresh pages that are faulted in and handed back to the kernel for every row group."""

    def __init__(self) -> None:
        self._free: list[pa.Buffer] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> pa.Buffer:
        with self._lock:
            fitting = [b for b in self._free if b.size >= size]
            if fitting:
                buffer = min(fitting, key=lambda b: b.size)
                self._free.remove(buffer)
                return buffer
        return pa.allocate_buffer(size)

    def give(self, buffer: pa.Buffer) -> None:
        with self._lock:
            self._free.append(buffer)
            while len(self._free) > parallel.in_flight() + 2:  # the row groups in flight at once, about
                self._free.remove(min(self._free, key=lambda b: b.size))


_BUFFERS = _BufferPool()
if hasattr(os, "register_at_fork"):  # a lock held by a parent's thread at fork would never be released
    os.register_at_fork(after_in_child=lambda: setattr(_BUFFERS, "_lock", threading.Lock()))


def _encode_pooled(table: pa.Table, schema: pa.Schema, options: dict, size: int | None = None) -> _Encoded:
    """`encode_row_group` into a pooled buffer sized from the table (encoded columns are at most a little larger
    than Arrow's; a buffer that still proves too small is doubled and the row group encoded again)."""
    size = size or int(table.nbytes * 1.25) + (1 << 20) + (64 << 10) * table.num_columns
    while True:
        buffer = _BUFFERS.take(size)
        out = pa.FixedSizeBufferWriter(buffer)
        try:
            with pq.ParquetWriter(out, schema, **options) as writer:
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            return _Encoded(buffer, out.tell())
        except OSError as exc:
            _BUFFERS.give(buffer)
            if "out of bounds" not in str(exc):
                raise
            size = 2 * buffer.size

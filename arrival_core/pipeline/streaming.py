"""Streaming helpers of S2 and S3: whole-entity chunks of the λ surface and the outputs' parquet sinks."""
from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import contracts, entity_grid, extreme_kernels, gate, grouping, sink, table_schema, tables
from ..encoding import sha256_file
from ..errors import ArrivalError, error_code
from ..gate import Gate
from ..identity import Identity
from ..prefetch import prefetched
from ..store import Store
from .shell import arrow_schema, validate_output

# ---- S2 / S3: streaming helpers ------------------------------------------------------------------------------------

def default_chunk_rows() -> int:
    """Rows per streamed chunk (`chunk_rows` of config/runtime.yaml): bounds memory; any size gives the same bytes."""
    return contracts.runtime_settings()["chunk_rows"]


def default_chunk_entities(buckets: int) -> int:
    """Entities per chunk so that a chunk holds about `default_chunk_rows()` rows."""
    return max(1, default_chunk_rows() // max(1, buckets))


def _sink_schema(store: Store, dataset_id: str) -> pa.Schema:
    """The contract's Arrow schema with string columns dictionary-encoded: the store keeps no Arrow schema in the
    file, so readers see plain strings, and constant or low-cardinality columns are never expanded."""
    schema = arrow_schema(store, dataset_id)
    dictionary = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([f.with_type(dictionary) if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                      else f for f in schema])


# Expanding dictionary strings for a plain-string sink allocates a few hundred MB per row group that live only until
# they are encoded; the system allocator hands such blocks back and forth faster here than Arrow's default pool.
_CAST_POOL = pa.system_memory_pool()


class ValueSets:
    """The value set of every column of a streamed table: each string column's dictionary values and each other
    column's extremes. Checking these against the contract checks every row's column rules (enums, patterns,
    ranges) without materialising the rows; nulls are refused as they arrive."""

    def __init__(self, store: Store, dataset_id: str, path: Path, code: str) -> None:
        self._store, self._dataset_id, self._path, self._code = store, dataset_id, path, code
        self._values: dict[str, set] = {}
        self._lock = threading.Lock()

    def add(self, table: pa.Table, extremes: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Take a table's value sets (thread-safe: row groups are inspected on the workers that encode them); the
        integer columns in `extremes` (`integer_extremes` of the parquet bytes these rows are, or are part of when
        every part is added) are not scanned, and those the table leaves out (not decoded) are taken from them."""
        found: dict[str, set] = {}
        extremes = extremes or {}
        scanned: dict[tuple, tuple[np.ndarray, set]] = {}  # a numeric column's data (held, so that its address is
        # not reused while this runs) → its values and value set: columns over one buffer are scanned once
        for name in table.column_names:
            column = table[name]
            if column.null_count:
                raise ArrivalError(self._code, f"{self._path}: column {name} holds {column.null_count} null(s)",
                                   file=str(self._path), column=name)
            seen = found.setdefault(name, set())
            if name in extremes and pa.types.is_integer(column.type):
                seen.update(extremes[name])
            elif pa.types.is_dictionary(column.type):  # every dictionary entry is a domain value, used or not
                for chunk in column.chunks:
                    if len(chunk):
                        seen.update(chunk.dictionary.to_pylist())
            elif pa.types.is_boolean(column.type):  # its extremes are its distinct values
                if len(column):
                    extreme = pc.min_max(column)
                    seen.update((extreme["min"].as_py(), extreme["max"].as_py()))
            elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                seen.update(pc.unique(column).to_pylist())
            elif len(column):
                values = column.to_numpy()
                data = (values.__array_interface__["data"][0], values.size, values.dtype.str)
                if data in scanned:
                    seen.update(scanned[data][1])
                    continue
                bounds = extreme_kernels.extremes(values) if values.dtype == np.float64 else None  # one pass
                if bounds is None:  # not float64, or not all finite: NaN propagates, then the non-finite are added
                    low, high = values.min(), values.max()
                    if pa.types.is_floating(column.type) and not (math.isfinite(low) and math.isfinite(high)):
                        finite = values[np.isfinite(values)]
                        seen.update(np.unique(values[~np.isfinite(values)]).tolist())
                        low, high = (finite.min(), finite.max()) if len(finite) else (low, low)
                    bounds = low.item(), high.item()
                seen.update(bounds)
                scanned[data] = values, seen
        for name in extremes.keys() - set(table.column_names):  # columns left undecoded: their footer's extremes
            found.setdefault(name, set()).update(extremes[name])
        with self._lock:
            for name, seen in found.items():
                self._values.setdefault(name, set()).update(seen)

    def validate(self) -> None:
        """Raise the state's schema code naming the column and value that break the contract."""
        dtypes = table_schema.polars_schema(self._store.entry(self._dataset_id).schema_ref, self._store.contracts_dir)
        if not self._values:
            return
        width = max(len(v) for v in self._values.values())
        frame = pl.DataFrame({name: pl.Series(name, _padded(sorted(self._values.get(name, ()), key=repr), width),
                                              dtype=dtype, strict=False) for name, dtype in dtypes.items()})
        tables.validate_table(frame, self._store.entry(self._dataset_id).schema_ref, code=self._code,
                                 where=f"{self._path} (value sets of its rows)", contracts_dir=self._store.contracts_dir)


def integer_extremes(footer: pq.FileMetaData, groups: Sequence[int] | None = None) -> dict[str, tuple[int, int]]:
    """(min, max) of each integer column over every row group (or those of `groups`), from the statistics in a
    parquet footer (a column missing them in any of them is left out): what its values' extremes are without
    decoding them."""
    out: dict[str, tuple[int, int]] = {}
    schema = footer.schema.to_arrow_schema()
    groups = range(footer.num_row_groups) if groups is None else groups
    for i, field in enumerate(schema):
        if not pa.types.is_integer(field.type) or not len(groups):
            continue
        stats = [footer.row_group(g).column(i).statistics for g in groups]  # over row groups
        if all(s is not None and s.has_min_max and s.has_null_count and s.null_count == 0 for s in stats):
            out[field.name] = (min(int(s.min) for s in stats), max(int(s.max) for s in stats))
    return out


def _padded(values: list, width: int) -> list:
    return values + values[-1:] * (width - len(values)) if values else [None] * width


class _Output:
    """One streamed output file: its rows cut at the file's row-group boundaries and cast on a feeder thread, each
    row group's value sets taken and its bytes encoded on the worker that encodes it (`sink.ParquetSink`), the
    value sets checked before commit."""

    def __init__(self, tx, store: Store, dataset_id: str, path: Path, code: str) -> None:
        self._schema = _sink_schema(store, dataset_id)
        self._sink = tx.parquet(dataset_id, path, self._schema)
        self.values = ValueSets(store, dataset_id, path, code)
        self._sink.inspect_rows(lambda rows, group: self.values.add(rows, integer_extremes(group.footer)))
        self.dataset_id = dataset_id
        self._offset = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True, name="arrival-output")
        self._thread.start()

    def inspect(self, inspect: sink.Inspector) -> None:
        """Also inspect every row group on the worker that encodes it (`sink.ParquetSink.inspect_row_groups`)."""
        self._sink.inspect_row_groups(inspect)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    table, companion = item
                    if callable(table):  # a table made here, off the producer's thread
                        table = table()
                    for piece, beside in self._row_group_pieces(table, companion):
                        self._sink.write(piece, beside)
                except BaseException as exc:  # noqa: BLE001 - any writer failure is re-raised by the producer
                    self._error = exc

    def _row_group_pieces(self, table: pa.Table, companion: pa.Table | None
                          ) -> Iterator[tuple[pa.Table, pa.Table | None]]:
        """The table (and its companion) cut at the file's row-group boundaries, the table cast to the sink's
        schema (whole row groups then pass through the sink without being copied)."""
        step = sink.ROW_GROUP_ROWS
        start = 0
        while start < table.num_rows:
            length = min(table.num_rows - start, step - (self._offset + start) % step)
            piece = table.slice(start, length)
            yield (pa.table([pc.cast(piece[f.name], f.type, memory_pool=_CAST_POOL) for f in self._schema],
                            schema=self._schema), None if companion is None else companion.slice(start, length))
            start += length
        self._offset += table.num_rows

    def write(self, table: pa.Table | Callable[[], pa.Table], companion: pa.Table | None = None) -> None:
        """Queue a table's rows, or the call making the table on the feeder's thread (blocks while the feeder is a
        few tables behind), with companion columns of the same rows for the row groups' inspections."""
        if self._error is not None:
            raise self._error
        self._queue.put((table, companion))

    def stop(self) -> None:
        """Wait for the feeder to end (what it has not handed over is dropped once it failed)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> None:
        """Wait until every queued row is encoded and written (so every value set is taken); re-raise a failure."""
        self.stop()
        if self._error is not None:
            raise self._error
        self._sink.drain()


@contextmanager
def streamed_outputs(tx, store: Store, specs: Sequence[tuple[str, Path, str]]) -> Iterator[list[_Output]]:
    """Streamed outputs (dataset, path, schema code) that are drained and checked before the transaction commits,
    and always drained before it aborts."""
    outputs = [_Output(tx, store, *spec) for spec in specs]
    try:
        yield outputs
    except BaseException:
        for out in outputs:
            with contextlib.suppress(Exception):  # the original failure is the one to report
                out.stop()
        raise
    for out in outputs:
        out.finish()
        out.values.validate()


def identity_columns(identity: Identity, n: int, *, seeded: bool = True) -> dict[str, pa.Array]:
    cols = {"manifest_fingerprint": entity_grid.constant(identity.manifest_fingerprint, n),
            "parameter_hash": entity_grid.constant(identity.parameter_hash, n)}
    if seeded:
        cols["seed"] = entity_grid.filled(identity.seed, n, pa.uint64())
    cols["scenario_id"] = entity_grid.constant(identity.scenario_id, n)
    return cols


def read_s1(store: Store, identity: Identity, state: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scenario's time grid and grouping, present and schema-valid, else `S1_OUTPUT_MISSING`."""
    code = error_code(state, "S1_OUTPUT_MISSING")
    frames = []
    for dataset_id in ("s1_time_grid_5B", "s1_grouping_5B"):
        path = store.path(dataset_id, **identity.tokens())
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ArrivalError(code, f"{dataset_id} for scenario {identity.scenario_id} cannot be read at {path}: "
                                     f"{exc}; run S1 first", file=str(path), dataset=dataset_id)
        validate_output(store, dataset_id, frame, code=code, path=path)
        _require_identity(frame, identity, path, code=code)
        frames.append(frame)
    grid_frame, groups = frames
    if not np.array_equal(grid_frame["bucket_index"].to_numpy(), np.arange(grid_frame.height)):
        raise ArrivalError(code, f"s1_time_grid_5B for {identity.scenario_id}: bucket_index is not 0..H-1")
    return grid_frame, groups


def identity_values(identity: Identity, columns: Sequence[str]) -> dict[str, object]:
    """The partition's value of each identity column among `columns`."""
    return {c: v for c, v in identity.columns().items() if c in columns}


def _require_identity(frame: pl.DataFrame, identity: Identity, path: Path, *, code: str) -> None:
    """Every identity column a frame carries must equal the partition's value."""
    for column, value in identity_values(identity, frame.columns).items():
        if frame.height and (frame[column] != value).any():
            raise ArrivalError(code, f"{path}: column {column} holds {frame.filter(pl.col(column) != value)[column][0]!r},"
                                     f" expected {value!r}", file=str(path), column=column)


def surface_path(g: Gate, identity: Identity) -> Path:
    """The scenario's λ surface, still matching the digest S0 sealed (over every scenario's file)."""
    code = error_code("S2", "LAMBDA_SOURCE_MISSING")
    artifact = "merchant_zone_scenario_local_5A"
    row = g.sealed(artifact, code=code)
    files = [(sid, g.path(artifact, code=code, scenario_id=sid)) for sid in g.scenario_set]
    for sid, path in files:
        if not path.is_file():
            raise ArrivalError(code, f"λ surface {artifact} for scenario {sid} is missing at {path}",
                               file=str(path), artifact_id=artifact)
    digest = gate.scenario_surface_digest([(sid, sha256_file(path)) for sid, path in files])
    if digest != row["sha256_hex"]:
        raise ArrivalError(error_code("S2", "S0_GATE_INVALID"), f"{artifact} changed since S0 sealed it (digest {digest}, "
                                                    f"sealed {row['sha256_hex']})", artifact_id=artifact)
    return dict(files)[identity.scenario_id]


def read_whole_entities(path: Path, columns: list[str], strings: list[str], buckets: int, chunk_entities: int
                         ) -> Iterator[tuple[int, pa.Table]]:
    """(first entity, rows) of at most `chunk_entities` whole entities, reading each row group once with the
    string columns dictionary-encoded (the file's row count is a multiple of `buckets`, checked by the caller)."""
    source = pq.ParquetFile(path, read_dictionary=strings)
    step = max(1, chunk_entities) * buckets
    pending: list[pa.Table] = []
    held, entity = 0, 0
    for group in range(source.num_row_groups):  # row groups, not rows
        part = source.read_row_group(group, columns=columns)
        pending.append(part)
        held += part.num_rows
        last = group == source.num_row_groups - 1
        if held < step and not last:
            continue
        table = pa.concat_tables(pending)
        start = 0
        while table.num_rows - start >= step or (last and start < table.num_rows):
            length = min(step, table.num_rows - start)
            yield entity, table.slice(start, length)
            entity += length // buckets
            start += length
        pending, held = [table.slice(start)], table.num_rows - start


def stream_chunks(store: Store, dataset_id: str, path: Path, columns: list[str], domain: entity_grid.Domain,
                   chunk_entities: int, *, bucket_column: str, group_column: str | None,
                   identity: Mapping[str, object], identity_code: str, state: str) -> Iterator[tuple[int, int, pa.Table]]:
    """(e0, e1, rows) of whole entities in writer order, read ahead from the call on, refusing a file that does
    not tile the domain (at once) or whose identity columns differ from the partition's (where the rows are)."""
    surface = dataset_id
    dtypes = table_schema.polars_schema(store.entry(dataset_id).schema_ref, store.contracts_dir)
    strings = [c for c in columns if dtypes.get(c) == pl.String]
    scan = pl.scan_parquet(path)
    try:
        total = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise ArrivalError(error_code(state, "DOMAIN_ALIGN_FAILED"), f"{path} cannot be read: {exc}", file=str(path))
    if total != domain.rows:
        raise _alignment_error(scan, domain, bucket_column, state=state, where=str(path), surface=surface)
    return prefetched(_checked_chunks(  # decoded and checked on the read-ahead thread
        read_whole_entities(path, columns, strings, domain.buckets, chunk_entities), scan, path, domain, surface,
        bucket_column=bucket_column, group_column=group_column, identity=identity, identity_code=identity_code,
        state=state))


def _checked_chunks(chunks: Iterator[tuple[int, pa.Table]], scan: pl.LazyFrame, path: Path,
                    domain: entity_grid.Domain, surface: str, *, bucket_column: str, group_column: str | None,
                    identity: Mapping[str, object], identity_code: str, state: str
                    ) -> Iterator[tuple[int, int, pa.Table]]:
    """The chunks of `stream_chunks` checked against the domain and the partition (on the read-ahead thread)."""
    for e0, chunk in chunks:
        e1 = e0 + chunk.num_rows // domain.buckets
        bad_key, bad_group = entity_grid.chunk_misaligned(chunk, domain, e0, e1, bucket_column, group_column=group_column)
        if bad_key is not None:
            raise _alignment_error(scan, domain, bucket_column, state=state, where=str(path), surface=surface)
        if bad_group is not None:
            key = entity_grid.row_key(chunk, bad_group, (*grouping.ENTITY_KEYS, bucket_column))
            expected = domain.group_ids[domain.entity_group[e0 + bad_group // domain.buckets]]
            raise ArrivalError(error_code(state, "DOMAIN_ALIGN_FAILED"),
                               f"{path}: the row at {key} carries {group_column} {chunk[group_column][bad_group]} "
                               f"but s1_grouping_5B assigns {expected!r}", file=str(path), key=key)
        for column, value in identity.items():
            if (row := entity_grid.first_mismatch(chunk[column], value)) is not None:
                key = entity_grid.row_key(chunk, row, (*grouping.ENTITY_KEYS, bucket_column))
                raise ArrivalError(identity_code,
                                   f"{path}: the row at {key} has {column} {chunk[column][row]}, the partition's is "
                                   f"{value!r}", file=str(path), column=column, key=key)
        yield e0, e1, chunk


def stream_proven(path: Path, columns: list[str], domain: entity_grid.Domain, chunk_entities: int
                  ) -> Iterator[tuple[int, int, pa.Table]]:
    """Yield (e0, e1, rows) of whole entities of a file its commit records prove (`records.proves`), reading
    only the named columns: its keys and identity were built from this domain by the state that wrote it."""
    for e0, chunk in prefetched(read_whole_entities(path, columns, [], domain.buckets, chunk_entities)):
        yield e0, e0 + chunk.num_rows // domain.buckets, chunk


def _alignment_error(scan: pl.LazyFrame, domain: entity_grid.Domain, bucket_column: str, *, state: str, where: str,
                     surface: str) -> ArrivalError:
    """Summarise the file per entity (only when it failed to align) and explain the first defect."""
    b = pl.col(bucket_column)
    summary = scan.group_by(list(grouping.ENTITY_KEYS)).agg(
        pl.len().alias("rows"), b.n_unique().alias("distinct"), b.min().alias("min_bucket"),
        b.max().alias("max_bucket"), b.cast(pl.Int64).sum().alias("sum_bucket")).collect()
    return entity_grid.alignment_error(summary, domain, state=state, where=where, surface=surface)



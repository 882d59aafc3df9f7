"""What the row-group checks of the big tables share: a row group to check (`Rows`), the base of a table's
checks, fed row group by row group from any thread, its findings merged in file order (`RowGroupCheck`), and the
findings every table keeps (`Found`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from .. import contracts, pipeline, sink, table_schema
from ..errors import CONTRACT_INVALID, ArrivalError
from .context import CheckContext, CheckResult
from .intensity import (
    merge_results,
)
from .scanning import numbers

REALISED, LATENT, COUNTS, COUNT_EVENTS = ("s2_realised_intensity_5B", "s2_latent_field_5B", "s3_bucket_counts_5B",
                                          "rng_event_arrival_bucket_count")


@dataclass(frozen=True)
class Rows:
    """One row group to check: its ordinal and first row in the file, its rows decoded from the file's bytes, the
    integer extremes its footer states, the inputs of its rows (one per row; None where there are none), and the
    columns not decoded because their bytes are proven to decode to known values."""

    index: int
    start: int
    rows: pa.Table
    extremes: Mapping[str, tuple[int, int]]
    inputs: pa.Table | None
    known: Mapping[str, np.ndarray] = field(default_factory=dict)  # columns left undecoded: their proven values
    placed: Mapping[str, pa.Array | None] | None = None  # key columns left undecoded, proven in place (`placed`)

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column's values: decoded, or those its bytes were proven to decode to (`known`)."""
        return self.known[name] if name in self.known else numbers(self.rows, name)


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
        self._small_chunks: dict[str, tuple[pa.Buffer, pa.Field, pa.ChunkedArray]] = {}  # decoded (`_repeated`)

    def inspect(self, group: sink.RowGroupBytes) -> None:
        """A row group as its state's worker encoded it: decoded from its bytes and checked (a `sink.Inspector`).
        A failure to check it is the checks' (raised by `found`), never the state's: its files still publish."""
        started = time.thread_time()
        try:
            extremes = pipeline.integer_extremes(group.footer)
            proven = [name for name, value in pipeline.identity_values(self.ctx.identity, list(extremes)).items()
                      if extremes[name] == (value, value)]  # the footer states every value: nothing to decode
            known = self.known_by_bytes(group)
            placed = self.placed_by_bytes(group)
            skip = [*proven, *known, *(placed or ())]
            repeated = self._repeated(group, skip=skip)
            decoded = group.decoded(self.strings, skip=[*skip, *repeated])
            rows = Rows(group.index, group.start, self._with_repeated(group, decoded, repeated), extremes,
                        group.companion, known, placed)
            found = self.feed(rows, started)
            started = time.thread_time()
            self.examined(group, rows, found)
            with self._lock:
                self.cpu_seconds += time.thread_time() - started
        except Exception as exc:  # noqa: BLE001 - reported as the dataset's outcome once the state has committed
            with self._lock:
                self._failure = self._failure or exc

    def feed(self, rows: Rows, started: float | None = None) -> None:
        started = time.thread_time() if started is None else started
        found = self.examine(rows)
        with self._lock:
            self._found[rows.index] = found
            self.cpu_seconds += time.thread_time() - started
        return found

    def found(self) -> list:
        """Each row group's findings, in file order (re-raising the failure to check one in the stream)."""
        if self._failure is not None:
            raise self._failure
        return [self._found[i] for i in sorted(self._found)]

    def _repeated(self, group: sink.RowGroupBytes, skip: list[str]) -> dict[str, tuple[pa.Field, pa.ChunkedArray]]:
        """Columns of a row group whose pages are byte for byte those of a small column chunk already decoded
        (a column constant over whole row groups: the partition's identity, a law's name): the same bytes decode
        to the same values, which are taken instead of decoding them again."""
        with self._lock:
            seen = dict(self._small_chunks)
        out = {}
        for name, (pages, field_, values) in seen.items():
            if name not in skip and group.column_chunk(name).equals(pages):
                out[name] = field_, values
        return out

    def _with_repeated(self, group: sink.RowGroupBytes, table: pa.Table,
                       repeated: Mapping[str, tuple[pa.Field, pa.ChunkedArray]]) -> pa.Table:
        """The decoded rows with the repeated columns put back in their places, and the small column chunks
        decoded here kept for the row groups after it (the first chunk of each column, at most
        `repeated_chunk_bytes` of pages)."""
        limit = contracts.runtime_settings()["repeated_chunk_bytes"]
        small = {}
        for name in table.column_names:
            pages = group.column_chunk(name)
            if pages.size <= limit:
                small[name] = (pa.py_buffer(pages.to_pybytes()), table.schema.field(name), table[name])  # a copy:
                # the row group's bytes are the encoder's, reused once it has been checked
        if small:
            with self._lock:
                for name, kept in small.items():
                    self._small_chunks.setdefault(name, kept)
        for name in sorted(repeated, key=group.footer.schema.names.index):
            table = table.add_column(_position(table, group, name), *repeated[name])
        return table

    def known_by_bytes(self, group: sink.RowGroupBytes) -> dict[str, np.ndarray]:
        """Columns of a row group whose encoded bytes equal bytes already decoded, with those values: they decode
        to the same values, so need not be decoded again (none unless a table says so)."""
        return {}

    def placed_by_bytes(self, group: sink.RowGroupBytes) -> Mapping[str, pa.Array | None] | None:
        """The key columns of a row group whose bytes are bytes this process found in place, with their dictionaries:
        neither decoded nor placed again (None unless a table says so)."""
        return None

    def examined(self, group: sink.RowGroupBytes, rows: Rows, found: object) -> None:
        """After a row group from the stream is examined (nothing unless a table keeps something of it)."""

    def examine(self, rows: Rows) -> object:
        raise NotImplementedError

    def results(self) -> dict[str, CheckResult]:
        raise NotImplementedError

    def add_values(self, rows: Rows, schema: CheckResult) -> None:
        """The row group's value sets (its column rules are checked on them at the end)."""
        try:
            self.values.add(rows.rows, rows.extremes)
            if rows.known:
                self.values.add(pa.table(dict(rows.known)))
            for name, dictionary in (rows.placed or {}).items():  # an integer key's extremes are the footer's
                if dictionary is not None and len(dictionary):  # every entry is a domain value, used or not
                    self.values.add(pa.table({name: pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()),
                                                                                   dictionary)}))
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


def _position(table: pa.Table, group: sink.RowGroupBytes, name: str) -> int:
    """Where column `name` goes among the table's columns: after those the file has before it."""
    names = group.footer.schema.names
    before = set(names[:names.index(name)])
    return sum(1 for c in table.column_names if c in before)


@dataclass
class Found:
    """What one row group showed: its rows and its schema problems (each table adds its own)."""

    rows: int
    schema: CheckResult = field(default_factory=CheckResult)

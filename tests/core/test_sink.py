"""The parallel parquet writer: row groups encoded on worker threads and stitched under one footer give the bytes of
Arrow's serial writer, whatever the thread count and however the writer is fed; both read back row for row."""
from __future__ import annotations

import threading
import weakref

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from arrival_core import parallel, sink, thrift


@pytest.fixture
def threads():
    """Set the worker threads for one test and restore the default afterwards."""
    yield parallel.set_threads
    parallel.set_threads(None)


def _serial(table: pa.Table, schema: pa.Schema, options: dict) -> bytes:
    """The file as Arrow's serial ParquetWriter writes it, one row group per ROW_GROUP_ROWS rows."""
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(out, schema, **options) as writer:
        for start in range(0, table.num_rows, sink.ROW_GROUP_ROWS):
            writer.write_table(table.slice(start, sink.ROW_GROUP_ROWS), row_group_size=sink.ROW_GROUP_ROWS)
    return out.getvalue().to_pybytes()


def _stitched(table: pa.Table, schema: pa.Schema, options: dict | None, feed: int) -> bytes:
    out = pa.BufferOutputStream()
    writer = sink.ParquetSink(out, schema, options=options)
    for start in range(0, table.num_rows, feed):
        writer.write(table.slice(start, feed))
    writer.close()
    assert writer.rows == table.num_rows
    return out.getvalue().to_pybytes()


def _table(n: int, seed: int) -> pa.Table:
    """Every column kind of the 5B outputs: dictionary strings, signed and unsigned integers, floats with NaN and
    infinities, booleans, a nullable column."""
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "b", "gamma-δ", "", "zz"])
    codes = rng.integers(0, len(words), n).astype(np.int32)
    floats = rng.standard_normal(n)
    floats[rng.random(n) < 0.01] = np.nan
    floats[rng.random(n) < 0.01] = np.inf
    nullable = pa.array(rng.random(n), mask=rng.random(n) < 0.2)
    return pa.table({
        "key": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(words)),
        "constant": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["only"])),
        "bucket": pa.array(np.arange(n, dtype=np.int32) % 97),
        "counter": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64)),
        "count": pa.array(rng.poisson(2.0, n).astype(np.int64)),
        "value": pa.array(floats),
        "flag": pa.array(rng.random(n) < 0.1),
        "maybe": nullable,
    })


def _schema(table: pa.Table) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type, nullable=f.name == "maybe") for f in table.schema])


@pytest.mark.parametrize("rows", [0, 1, 999, 1000, 1001, 25_013])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_stitched_files_are_the_serial_writers_bytes(rows, count, threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 1000)  # many row groups: offsets and ordinals of every size
    threads(count)
    table = _table(rows, seed=rows)
    schema = _schema(table)
    options = sink.parquet_options(schema)
    expected = _serial(table.cast(schema), schema, options)
    for feed in (1000, 333, 7_777, max(rows, 1)):
        assert _stitched(table, schema, None, feed) == expected, (rows, count, feed)


def test_full_size_row_groups_and_the_world_format_are_the_serial_writers_bytes(threads):
    threads(3)
    table = _table(2 * sink.ROW_GROUP_ROWS + 12_345, seed=7)
    schema = _schema(table)
    for options in (sink.parquet_options(schema),
                    {"compression": "zstd", "compression_level": 1, "use_dictionary": True,
                     "write_statistics": True, "store_schema": False}):
        assert _stitched(table, schema, options, 700_001) == _serial(table.cast(schema), schema, options)


def test_stitched_files_read_back_row_for_row_like_the_serial_writers(threads, tmp_path, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 4096)
    threads(2)
    table = _table(50_000, seed=3)
    schema = _schema(table)
    stitched, serial = tmp_path / "stitched.parquet", tmp_path / "serial.parquet"
    stitched.write_bytes(_stitched(table, schema, None, 9_999))
    serial.write_bytes(_serial(table.cast(schema), schema, sink.parquet_options(schema)))
    meta = pq.ParquetFile(stitched).metadata
    assert meta.num_row_groups == 13 and meta.num_rows == 50_000
    assert [meta.row_group(i).num_rows for i in range(13)] == [4096] * 12 + [50_000 - 12 * 4096]
    assert stitched.read_bytes() == serial.read_bytes()
    expected = pl.from_arrow(table).with_columns(pl.col("key", "constant").cast(pl.String))
    for path in (stitched, serial):  # NaN equals NaN here, so every row is compared value for value
        assert_frame_equal(pl.from_arrow(pq.read_table(path)), expected, check_exact=True)  # Arrow's reader
        assert_frame_equal(pl.read_parquet(path), expected, check_exact=True)  # Polars' own reader
    for group in (0, 5, 12):  # row groups and their statistics point at the right bytes
        part = pq.ParquetFile(stitched).read_row_group(group)
        assert part["count"].equals(table["count"].slice(group * 4096, part.num_rows))
        stats = meta.row_group(group).column(4).statistics
        assert (stats.min, stats.max) == (min(part["count"].to_pylist()), max(part["count"].to_pylist()))


def test_the_first_failing_row_group_in_file_order_fails_the_file(threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 100)
    threads(3)
    table = _table(2_000, seed=1)
    refused = {table["counter"][700].as_py(): "row group 7", table["counter"][1200].as_py(): "row group 12"}

    def inspect(part: pa.Table, group: sink.RowGroupBytes) -> None:
        footer = group.footer
        assert footer.num_rows == part.num_rows == group.num_rows and footer.num_row_groups == 1  # its own bytes
        assert group.start == 100 * group.index
        if (name := refused.get(part["counter"][0].as_py())) is not None:
            raise ValueError(f"{name} refused")

    for _ in range(3):
        writer = sink.ParquetSink(pa.BufferOutputStream(), _schema(table))
        writer.inspect_rows(inspect)
        with pytest.raises(ValueError, match="row group 7 refused"):
            for start in range(0, table.num_rows, 150):
                writer.write(table.slice(start, 150))
            writer.close()
        writer.close_quietly()


@pytest.mark.parametrize("count", [1, 3])
def test_each_row_group_is_inspected_with_its_decoded_bytes_and_its_rows_companions(count, threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 100)
    threads(count)
    table = _table(1_234, seed=2)
    seen: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()

    def inspect(group: sink.RowGroupBytes) -> None:
        rows = np.arange(group.start, group.start + group.num_rows)
        assert np.array_equal(group.companion["row"].to_numpy(), rows)  # cut at the same rows as the table
        decoded = group.decoded(read_dictionary=["key", "constant"])
        assert decoded["counter"].equals(table["counter"].slice(group.start, len(rows)))
        assert decoded["key"].to_pylist() == table["key"].slice(group.start, len(rows)).to_pylist()
        with lock:
            seen[group.index] = (group.start, len(rows))

    writer = sink.ParquetSink(pa.BufferOutputStream(), _schema(table))
    writer.inspect_row_groups(inspect)
    companion = pa.table({"row": np.arange(table.num_rows)})
    for start in range(0, table.num_rows, 150):  # pieces that straddle row groups
        writer.write(table.slice(start, 150), companion.slice(start, 150))
    writer.close()
    assert sorted(seen.items()) == [(i, (100 * i, min(100, 1_234 - 100 * i))) for i in range(13)]


@pytest.mark.parametrize("count", [1, 2])
def test_a_row_groups_rows_are_inspected_first_and_let_go_before_its_bytes_are(count, threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 100)
    threads(count)
    table = _table(1_000, seed=3)
    joined: dict[int, weakref.ref] = {}

    def inspect_rows(rows: pa.Table, group: sink.RowGroupBytes) -> None:
        assert rows["counter"].equals(table["counter"].slice(group.start, group.num_rows))
        joined[group.index] = weakref.ref(rows)

    def inspect(group: sink.RowGroupBytes) -> None:
        assert joined[group.index]() is None  # the rows the row group was joined into are gone before its decoding

    writer = sink.ParquetSink(pa.BufferOutputStream(), _schema(table))
    writer.inspect_row_groups(inspect)  # given first, inspected after the rows
    writer.inspect_rows(inspect_rows)
    for start in range(0, table.num_rows, 150):  # pieces that straddle row groups: each row group's are joined
        writer.write(table.slice(start, 150))
    writer.close()
    assert sorted(joined) == list(range(10))


def test_a_pooled_buffer_too_small_for_a_row_group_is_doubled_until_it_fits():
    table = _table(20_000, seed=5)
    options = sink.parquet_options(_schema(table))
    encoded = sink._encode_pooled(table.cast(_schema(table)), _schema(table), options, size=1000)
    assert encoded.buffer.size >= 1000 * 2**5
    assert encoded.data.to_pybytes() == sink.encode_row_group(table.cast(_schema(table)), _schema(table), options).to_pybytes()


def test_thrift_structs_decode_and_encode_to_the_same_bytes():
    table = pa.table({f"c{i}": pa.array([i, -i, 2**40]) for i in range(40)})  # lists longer than 14 elements
    data = sink.encode_row_group(table, table.schema, {"write_statistics": True}).to_pybytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    fields, end = thrift.decode_struct(footer)
    assert end == len(footer) and thrift.encode_struct(fields) == footer
    assert thrift.field(fields, 3).value == 3  # num_rows
    manual = [thrift.Field(1, thrift.I32, -7), thrift.Field(20, thrift.FALSE, False),
              thrift.Field(21, thrift.BINARY, b"x" * 300), thrift.Field(40, thrift.LIST, thrift.Items(thrift.I64, [2**62, -1]))]
    encoded = thrift.encode_struct(manual)
    assert thrift.decode_struct(encoded) == (manual, len(encoded))

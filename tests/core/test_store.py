"""Publishing is atomic and no-clobber: identical bytes are a no-op, different bytes a conflict, failures leave nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arrival_core.errors import ArrivalError
from arrival_core.sink import ROW_GROUP_ROWS
from arrival_core.store import Store

MF = "b" * 64
PH = "a" * 64


def _store(tmp_path: Path) -> Store:
    return Store(run_root=tmp_path)


def _receipt_path(store: Store) -> Path:
    return store.path("s0_gate_receipt_5B", parameter_hash=PH, manifest_fingerprint=MF)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_identical_bytes_republish_is_a_noop(tmp_path):
    store = _store(tmp_path)
    target = _receipt_path(store)
    with store.transaction("S0") as tx:
        tx.write_json("s0_gate_receipt_5B", target, {"a": 1})
    assert tx.published[0].created
    mtime = target.stat().st_mtime_ns
    with store.transaction("S0") as tx2:
        tx2.write_json("s0_gate_receipt_5B", target, {"a": 1})
    assert not tx2.published[0].created
    assert target.stat().st_mtime_ns == mtime
    assert _files_under(tmp_path) == [target]


def test_different_bytes_raise_conflict_and_leave_existing_file_untouched(tmp_path):
    store = _store(tmp_path)
    target = _receipt_path(store)
    with store.transaction("S0") as tx:
        tx.write_json("s0_gate_receipt_5B", target, {"a": 1})
    before = target.read_bytes()
    with pytest.raises(ArrivalError) as err, store.transaction("S0") as tx2:
        tx2.write_json("s0_gate_receipt_5B", target, {"a": 2})
    assert err.value.code == "5B.S0.IO_WRITE_CONFLICT"
    assert str(target) in err.value.message
    assert target.read_bytes() == before
    assert _files_under(tmp_path) == [target]


def test_conflict_on_second_file_publishes_neither(tmp_path):
    store = _store(tmp_path)
    sealed = store.path("sealed_inputs_5B", parameter_hash=PH, manifest_fingerprint=MF)
    receipt = _receipt_path(store)
    with store.transaction("S0") as tx:
        tx.write_json("s0_gate_receipt_5B", receipt, {"a": 1})
    with pytest.raises(ArrivalError), store.transaction("S0") as tx2:
        tx2.write_json("sealed_inputs_5B", sealed, [{"x": 1}])
        tx2.write_json("s0_gate_receipt_5B", receipt, {"a": 2})
    assert not sealed.exists()
    assert _files_under(tmp_path) == [receipt]


def test_exception_mid_write_leaves_no_temp_file_and_no_new_folder(tmp_path):
    store = _store(tmp_path)
    target = store.path(
        "s2_latent_field_5B", seed=1, parameter_hash=PH, manifest_fingerprint=MF, scenario_id="baseline_v1"
    )
    frame = pl.DataFrame({"x": list(range(10))})
    with pytest.raises(RuntimeError), store.transaction("S2") as tx:
        sink = tx.parquet("s2_latent_field_5B", target, frame.to_arrow().schema)
        sink.write(frame)
        raise RuntimeError("simulated crash in the middle of a write")
    assert _files_under(tmp_path) == []
    assert not (tmp_path / "data").exists()


def test_parquet_bytes_do_not_depend_on_how_the_writer_was_fed(tmp_path):
    frame = pl.DataFrame({"k": pl.arange(0, ROW_GROUP_ROWS + 1234, eager=True), "v": 1.5})
    digests = []
    for i, chunk_rows in enumerate([7_777, 400_000, ROW_GROUP_ROWS + 1234]):
        store = _store(tmp_path / f"r{i}")
        target = _receipt_path(store).with_suffix(".parquet")
        with store.transaction("S2") as tx:
            sink = tx.parquet("x", target, frame.to_arrow().schema)
            for start in range(0, frame.height, chunk_rows):
                sink.write(frame.slice(start, chunk_rows))
        digests.append(tx.published[0].sha256)
        assert tx.published[0].rows == frame.height
    assert len(set(digests)) == 1
    assert digests[0] == hashlib.sha256(target.read_bytes()).hexdigest()  # hashed while written, not read back
    assert pl.read_parquet(target).equals(frame)


def test_parquet_columns_are_encoded_by_type_and_required_unless_nullable(tmp_path):
    schema = pa.schema([pa.field("s", pa.dictionary(pa.int32(), pa.string()), nullable=False),
                        pa.field("i", pa.int64(), nullable=False), pa.field("f", pa.float64()),
                        pa.field("b", pa.bool_(), nullable=False)])
    table = pa.table({"s": pa.array(["x", "y"] * 500).dictionary_encode(), "i": pa.array(range(1000)),
                      "f": pa.array([0.5] * 1000), "b": pa.array([True, False] * 500)}).cast(schema)
    store = _store(tmp_path)
    target = _receipt_path(store).with_suffix(".parquet")
    with store.transaction("S2") as tx:
        tx.parquet("x", target, schema).write(table)
    meta = pq.ParquetFile(target).metadata
    columns = {meta.schema.column(i).name: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in columns["s"].encodings and columns["s"].statistics is None
    assert "DELTA_BINARY_PACKED" in columns["i"].encodings and columns["i"].statistics.max == 999
    assert set(columns["f"].encodings) <= {"PLAIN", "RLE"} and columns["f"].statistics is not None
    repetition = {meta.schema.column(i).name: meta.schema.column(i).max_definition_level for i in range(4)}
    assert repetition == {"s": 0, "i": 0, "f": 1, "b": 0}
    assert pl.read_parquet(target).equals(pl.from_arrow(table.cast(pa.schema([("s", pa.string()), ("i", pa.int64()),
                                                                             ("f", pa.float64()), ("b", pa.bool_())]))))


def test_a_null_in_a_required_column_is_refused(tmp_path):
    schema = pa.schema([pa.field("i", pa.int64(), nullable=False)])
    store = _store(tmp_path)
    with pytest.raises(ArrivalError) as info, store.transaction("S2") as tx:
        tx.parquet("x", _receipt_path(store).with_suffix(".parquet"), schema).write(pa.table({"i": [1, None]}))
    assert info.value.code == "5B.S2.IO_WRITE_FAILED" and "not nullable" in info.value.message
    assert _files_under(tmp_path) == []

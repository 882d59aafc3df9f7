"""The RNG ledger's totals from parquet footers: exact whatever the row groups hold (known answers, and a full
decode by Polars), decoding only the row groups whose statistics do not prove their share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arrival_core import sink
from arrival_core.errors import ArrivalError
from arrival_core.pipeline import accounting

EPS = 1e-12
ROWS = 100  # rows per row group in these files
CODE = "5B.S3.RNG_ACCOUNTING_MISMATCH"


def _write(path: Path, columns: dict[str, pa.Array], monkeypatch) -> Path:
    """A file written by the project's sink (its format and statistics), ROWS rows per row group."""
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", ROWS)
    table = pa.table(columns)
    out = pa.BufferOutputStream()
    writer = sink.ParquetSink(out, table.schema)
    writer.write(table)
    writer.close()
    path.write_bytes(out.getvalue().to_pybytes())
    assert pq.read_metadata(path).num_row_groups == table.num_rows // ROWS
    return path


@pytest.fixture
def decoded(monkeypatch) -> list[tuple[int, tuple[str, ...]]]:
    """Every (row group, columns) a reader decodes through pyarrow's ParquetFile."""
    calls: list[tuple[int, tuple[str, ...]]] = []
    read = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        calls.append((i, tuple(columns or ())))
        return read(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    return calls


def _mu_groups() -> tuple[list[np.ndarray], int]:
    """Row groups of μ: above eps, at or below it (zeros of both signs and eps itself), straddling, above with a
    NaN, below with a NaN; and how many rows exceed eps (a NaN never does)."""
    rng = np.random.default_rng(5)
    above = rng.uniform(0.5, 9.0, ROWS)
    below = np.resize([0.0, -0.0, EPS, EPS / 2], ROWS)
    straddling = np.where(np.arange(ROWS) % 2 == 0, 0.0, rng.uniform(0.5, 9.0, ROWS))
    above_nan = above.copy()
    above_nan[37] = np.nan
    below_nan = below.copy()
    below_nan[3] = np.nan
    return [above, below, straddling, above_nan, below_nan], ROWS + 0 + ROWS // 2 + (ROWS - 1) + 0


def test_drawing_rows_is_exact_and_decodes_only_what_the_footer_cannot_prove(tmp_path, monkeypatch, decoded):
    groups, drawing = _mu_groups()
    nulls = np.concatenate([np.zeros(len(groups) * ROWS, bool), np.arange(ROWS) % 10 == 0])
    mu = pa.array(np.concatenate([*groups, np.full(ROWS, 3.0)]), mask=nulls)  # and one above with nulls
    path = _write(tmp_path / "counts.parquet", {"bucket_index": pa.array(np.arange(len(mu), dtype=np.int32)),
                                                "mu": mu}, monkeypatch)
    expected = drawing + ROWS - ROWS // 10  # 249 + 90
    assert expected == 339
    assert accounting.drawing_rows(path, EPS, code=CODE) == expected
    # a full decode agrees, compared as the engine draws (IEEE: NaN and null are not > eps; Polars orders NaN last)
    assert np.count_nonzero(pl.read_parquet(path)["mu"].to_numpy() > EPS) == expected
    # below eps (with or without NaN) is proved by the footer; above eps is not (a NaN hides from the statistics)
    assert decoded == [(0, ("mu",)), (2, ("mu",)), (3, ("mu",)), (5, ("mu",))]


def test_drawing_rows_of_a_row_group_all_nan_or_null_is_decoded_and_counts_none(tmp_path, monkeypatch, decoded):
    mu = pa.array(np.concatenate([np.full(ROWS, np.nan), np.zeros(ROWS)]),
                  mask=np.concatenate([np.arange(ROWS) % 2 == 0, np.zeros(ROWS, bool)]))
    path = _write(tmp_path / "counts.parquet", {"mu": mu}, monkeypatch)
    assert not pq.read_metadata(path).row_group(0).column(0).statistics.has_min_max
    assert accounting.drawing_rows(path, EPS, code=CODE) == 0
    assert decoded == [(0, ("mu",))]


def test_logged_totals_add_constant_row_groups_from_the_footer_and_decode_the_rest(tmp_path, monkeypatch, decoded):
    rng = np.random.default_rng(11)
    draws = np.concatenate([np.ones(ROWS), np.full(ROWS, 2), rng.integers(1, 3, ROWS), np.full(ROWS, 2)])
    blocks = np.concatenate([np.ones(ROWS), np.full(ROWS, 4320), np.ones(ROWS), np.full(ROWS, 7)])
    nulls = np.zeros(4 * ROWS, bool)
    nulls[3 * ROWS + 5] = True  # a constant row group with a null: min == max, yet not every row holds it
    path = _write(tmp_path / "events.parquet", {
        "draws": pa.array(draws.astype(np.int64), mask=nulls),
        "blocks": pa.array(blocks.astype(np.int64))}, monkeypatch)
    totals = accounting.logged_totals(path, code=CODE)
    known = (4 * ROWS, ROWS + 2 * ROWS + int(draws[2 * ROWS:3 * ROWS].sum()) + 2 * (ROWS - 1),
             ROWS + 4320 * ROWS + ROWS + 7 * ROWS)
    assert (totals.events, totals.draws, totals.blocks) == known
    full = pl.read_parquet(path).select(pl.len(), pl.col("draws").sum(), pl.col("blocks").sum()).row(0)
    assert (totals.events, totals.draws, totals.blocks) == full
    assert decoded == [(2, ("draws",)), (3, ("draws",))]


def test_a_missing_ledger_column_is_an_accounting_mismatch_naming_it(tmp_path, monkeypatch):
    path = _write(tmp_path / "events.parquet", {"draws": pa.array(np.ones(ROWS, np.int64))}, monkeypatch)
    with pytest.raises(ArrivalError) as err:
        accounting.logged_totals(path, code=CODE)
    assert err.value.code == CODE and err.value.context["column"] == "blocks"

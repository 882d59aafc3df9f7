"""Chunk alignment against grid × grouping: the first misaligned row equals a row-by-row comparison with the
expected keys, whatever the edit, the pieces a column arrives in and their dictionaries."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from arrival_core import entity_grid

H = 7
KEYS = ("merchant_id", "legal_country_iso", "tzid", "channel_group")


def _domain() -> entity_grid.Domain:
    grouping = pl.DataFrame({
        "merchant_id": pl.Series([1, 1, 2, 3, 3, 5, 8, 9], dtype=pl.UInt64),
        "legal_country_iso": ["DE", "FR", "DE", "GB", "GB", "US", "US", "DE"],
        "tzid": ["Europe/Berlin", "Europe/Paris", "Europe/Berlin", "Europe/London", "Europe/London",
                 "America/New_York", "America/Chicago", "Europe/Berlin"],
        "channel_group": ["card_present", "card_present", "online", "card_present", "online", "online",
                          "card_present", "online"],
        "group_id": ["g2", "g1", "g2", "g3", "g3", "g1", "g2", "g1"],
    })
    return entity_grid.build_domain(grouping, H, ("g1", "g2", "g3"))


def _expected_rows(domain: entity_grid.Domain, e0: int, e1: int) -> list[tuple]:
    entities = domain.entities.rows(named=True)
    return [(*(entities[e][k] for k in KEYS), b, entities[e]["group_id"]) for e in range(e0, e1) for b in range(H)]


def _chunk(rows: list[tuple], cuts: list[int], plain: bool = False) -> pa.Table:
    """Rows as a table whose columns arrive in pieces cut at `cuts`, strings dictionary-encoded per piece (each
    piece with its own dictionary order, as parquet row groups give), or plain strings."""
    pieces = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)]) if b > a]
    columns = {}
    for i, name in enumerate((*KEYS, "bucket_index", "group_id")):
        parts = []
        for part in pieces:
            values = [r[i] for r in part]
            if name == "merchant_id":
                parts.append(pa.array(values, pa.uint64()))
            elif name == "bucket_index":
                parts.append(pa.array(values, pa.int32()))
            elif plain:
                parts.append(pa.array(values, pa.string()))
            else:
                dictionary = sorted(set(values), reverse=len(parts) % 2 == 1)
                parts.append(pa.DictionaryArray.from_arrays(pa.array([dictionary.index(v) for v in values], pa.int32()),
                                                            pa.array(dictionary)))
        columns[name] = pa.chunked_array(parts)
    return pa.table(columns)


def _brute_force(rows: list[tuple], expected: list[tuple]) -> tuple[int | None, int | None]:
    bad_key = next((i for i, (r, x) in enumerate(zip(rows, expected)) if r[:5] != x[:5]), None)
    if bad_key is not None:
        return bad_key, None
    return None, next((i for i, (r, x) in enumerate(zip(rows, expected)) if r[5] != x[5]), None)


@pytest.mark.parametrize("trial", range(60))
def test_first_misaligned_row_equals_a_row_by_row_comparison(trial: int) -> None:
    rng = np.random.default_rng(trial)  # fixed keys: every run checks the same 60 edits
    domain = _domain()
    e0 = int(rng.integers(0, 4))
    e1 = int(rng.integers(e0 + 1, domain.size + 1))
    expected = _expected_rows(domain, e0, e1)
    rows = [list(r) for r in expected]
    for _ in range(int(rng.integers(0, 3))):  # 0–2 edits: a key, the bucket or the group of one row
        i, column = int(rng.integers(0, len(rows))), int(rng.integers(0, 6))
        other = _expected_rows(domain, 0, domain.size)[int(rng.integers(0, domain.size * H))]
        rows[i][column] = other[column]
    if rng.random() < 0.3 and len(rows) > 2:  # or two rows swapped
        i = int(rng.integers(0, len(rows) - 1))
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
    rows = [tuple(r) for r in rows]
    cuts = sorted({int(c) for c in rng.integers(1, len(rows), size=int(rng.integers(0, 4)))})
    table = _chunk(rows, cuts, plain=trial % 3 == 0)
    got = entity_grid.chunk_misaligned(table, domain, e0, e1, "bucket_index", group_column="group_id")
    assert got == _brute_force(rows, expected), (rows, cuts)


def test_a_null_key_is_misaligned_at_its_row() -> None:
    domain = _domain()
    rows = _expected_rows(domain, 0, 2)
    table = _chunk(rows, [5])
    tzid = table["tzid"].combine_chunks()
    mask = np.zeros(len(rows), dtype=bool)
    mask[9] = True
    table = table.set_column(2, "tzid", pa.DictionaryArray.from_arrays(
        pa.array(tzid.indices.to_numpy(zero_copy_only=False), mask=mask), tzid.dictionary))
    assert entity_grid.chunk_misaligned(table, domain, 0, 2, "bucket_index") == (9, None)


@pytest.mark.parametrize("trial", range(30))
def test_rows_beginning_and_ending_inside_entities_equal_a_row_by_row_comparison(trial: int) -> None:
    rng = np.random.default_rng(1000 + trial)  # fixed keys
    domain = _domain()
    every = _expected_rows(domain, 0, domain.size)
    start = int(rng.integers(0, len(every) - 1))
    stop = int(rng.integers(start + 1, len(every) + 1))
    expected = every[start:stop]
    rows = [list(r) for r in expected]
    if rng.random() < 0.7:  # one edit: a key, the bucket or the group of one row
        i, column = int(rng.integers(0, len(rows))), int(rng.integers(0, 6))
        rows[i][column] = every[int(rng.integers(0, len(every)))][column]
    rows = [tuple(r) for r in rows]
    table = _chunk(rows, [], plain=trial % 2 == 0)
    got = entity_grid.rows_misaligned(table, domain, start, "bucket_index", group_column="group_id")
    assert got == _brute_force(rows, expected), (start, rows)


def test_rows_past_the_grid_are_misaligned_where_the_grid_ends() -> None:
    domain = _domain()
    rows = _expected_rows(domain, domain.size - 1, domain.size)
    assert entity_grid.rows_misaligned(_chunk(rows, []), domain, domain.rows - 3, "bucket_index") == (3, None)

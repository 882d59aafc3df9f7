"""The entity × bucket domain of a scenario, streamed in chunks of whole entities, and the Arrow columns of it.

S2, S3 and the checks share it: the domain is the S1 grouping in writer order, each entity owning `buckets`
consecutive rows; chunks are checked against it and outputs are built from its dictionary-coded columns.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from . import grid_kernels
from .errors import ArrivalError, error_code
from .grouping import ENTITY_KEYS

_STRING_KEYS = ("legal_country_iso", "tzid", "channel_group")


@dataclass(frozen=True)
class Domain:
    """The grouped entities of one scenario in writer order, each owning exactly `buckets` consecutive rows.

    String columns are carried as int32 codes into one dictionary per column, shared by every chunk, so a file
    written chunk by chunk holds the same dictionary pages whatever the chunk size.
    """

    entities: pl.DataFrame  # ENTITY_KEYS + group_id, writer order
    buckets: int
    merchant_id: np.ndarray
    codes: Mapping[str, np.ndarray]  # column -> int32 code per entity
    dictionaries: Mapping[str, pa.Array]  # column -> its values (sorted)
    entity_group: np.ndarray  # int32 index of each entity's group in `group_ids`
    group_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.entities.height

    @property
    def rows(self) -> int:
        return self.entities.height * self.buckets


def build_domain(grouping: pl.DataFrame, buckets: int, group_ids: tuple[str, ...]) -> Domain:
    """Index the S1 grouping (sorted by entity) for chunked alignment and dictionary-encoded output columns."""
    entities = grouping.select(*ENTITY_KEYS, "group_id")
    codes, dictionaries = {}, {}
    for column, values in ((c, entities[c]) for c in (*_STRING_KEYS, "group_id")):
        dictionary = pl.Series(group_ids) if column == "group_id" else values.unique().sort()
        codes[column] = _codes(values, dictionary)
        dictionaries[column] = dictionary.to_arrow().cast(pa.string())
    return Domain(entities, buckets, entities["merchant_id"].to_numpy(), codes, dictionaries,
                  codes["group_id"], tuple(group_ids))


def _codes(values: pl.Series, dictionary: pl.Series) -> np.ndarray:
    """Position of each value in a dictionary that holds every value (built from them)."""
    lookup = pl.DataFrame({"value": dictionary, "code": np.arange(len(dictionary), dtype=np.int32)})
    coded = pl.DataFrame({"value": values}).join(lookup, on="value", how="left", maintain_order="left")["code"]
    return coded.to_numpy().astype(np.int32)


def dictionary_codes(column: pa.ChunkedArray, dictionary: pa.Array) -> np.ndarray:
    """Position in `dictionary` of each value of a string column (−1 where absent or null).

    Each chunk's own small dictionary is mapped once, so no per-row string is compared."""
    parts = [mapping[indices] for indices, mapping in (_coded(chunk, dictionary) for chunk in column.chunks)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def dictionary_indices(column: pa.ChunkedArray, dictionary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string column as (int32 index of each row into its own dictionary, int32 mapping of that dictionary into
    `dictionary`, −1 where absent, with a last −1 that the rows of nulls index): the column's codes, unexpanded."""
    return _coded(_one_chunk(column), dictionary)


def _coded(chunk: pa.Array, dictionary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`dictionary_indices` of one array (plain strings dictionary-encoded first)."""
    if not pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_encode()  # plain strings: coded like dictionary-coded ones
    indices = chunk.indices.fill_null(len(chunk.dictionary)) if chunk.null_count else chunk.indices
    return indices.to_numpy(zero_copy_only=False), _recoded(chunk, dictionary)


def _recoded(chunk: pa.DictionaryArray, dictionary: pa.Array) -> np.ndarray:
    """The position in `dictionary` (distinct values) of each entry of a chunk's own dictionary (−1 where absent),
    with a last −1 that null slots can index."""
    found = pc.index_in(chunk.dictionary, value_set=dictionary).fill_null(-1).to_numpy(zero_copy_only=False)
    return np.append(found.astype(np.int32), np.int32(-1))


def first_mismatch(column: pa.ChunkedArray, value: object) -> int | None:
    """Index of the first row of a column that is null or differs from `value`, else None."""
    if isinstance(value, str):
        if all(pa.types.is_dictionary(c.type) and not c.null_count and
               pc.all(pc.equal(c.dictionary, value), skip_nulls=False).as_py() is True for c in column.chunks):
            return None  # every dictionary entry is the value: no row can differ
        bad = dictionary_codes(column, pa.array([value], pa.string())) < 0
    else:
        bad = ~pc.equal(column, pa.scalar(value, column.type)).fill_null(False).to_numpy()
    return int(np.argmax(bad)) if bad.any() else None


def chunk_misaligned(chunk: pa.Table, domain: Domain, e0: int, e1: int, bucket_column: str,
                     *, group_column: str | None = None) -> tuple[int | None, int | None]:
    """First row of a chunk that is not entity e0..e1 × bucket 0..H-1 in writer order, and first row whose
    `group_column` differs from the entity's group (None when there is none)."""
    n = (e1 - e0) * domain.buckets
    if chunk.num_rows != n:
        return min(chunk.num_rows, n), None
    return rows_misaligned(chunk, domain, e0 * domain.buckets, bucket_column, group_column=group_column)


def rows_misaligned(rows: pa.Table, domain: Domain, start: int, bucket_column: str,
                    *, group_column: str | None = None) -> tuple[int | None, int | None]:
    """First of consecutive rows, the first being row `start` of the grid, that is not where grid × grouping puts
    it (entity keys and bucket; a null is never in place), and first whose `group_column` differs from the entity's
    group (None when there is none); the rows may begin and end inside an entity. One compiled pass
    (`grid_kernels.misaligned`)."""
    h = domain.buckets
    if start + rows.num_rows > domain.rows:
        return max(0, domain.rows - start), None
    if not rows.num_rows:
        return None, None
    e0, e1 = start // h, (start + rows.num_rows - 1) // h + 1
    nulls: list[int] = []

    def numbers(name: str) -> np.ndarray:
        column = _one_chunk(rows[name])
        if column.null_count:
            nulls.append(int(np.argmax(~column.is_valid().to_numpy(zero_copy_only=False))))
            column = column.fill_null(0)
        return column.to_numpy(zero_copy_only=False)

    def coded(name: str, per_entity: np.ndarray) -> grid_kernels.Coded:
        return (*dictionary_indices(rows[name], domain.dictionaries[name]), per_entity[e0:e1])

    key_row, group_row = grid_kernels.misaligned(
        start - e0 * h, h, numbers(bucket_column), numbers("merchant_id"), domain.merchant_id[e0:e1],
        tuple(coded(c, domain.codes[c]) for c in _STRING_KEYS),
        None if group_column is None else coded(group_column, domain.entity_group))
    firsts = nulls + ([] if key_row is None else [key_row])
    if firsts:
        return min(firsts), None
    return None, group_row


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array (its chunks joined, dictionaries unified, only when it has several)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
    return column.combine_chunks() if column.num_chunks else pa.array([], column.type)


def row_key(chunk: pa.Table, row: int, columns: tuple[str, ...]) -> dict:
    """The named columns of one row, as Python values."""
    return {c: chunk[c][row].as_py() for c in columns}


def alignment_error(summary: pl.DataFrame, domain: Domain, *, state: str, where: str, surface: str) -> ArrivalError:
    """Explain why a λ surface does not tile the grouped domain, from its per-entity summary.

    `summary` has one row per entity key of the surface: rows, distinct, min_bucket, max_bucket, sum_bucket.
    """
    h = domain.buckets
    keys = list(ENTITY_KEYS)
    known = domain.entities.select(keys)
    orphan = summary.join(known, on=keys, how="anti").sort(keys)
    if orphan.height:
        key = orphan.select(keys).row(0, named=True)
        return ArrivalError(error_code(state, "DOMAIN_ALIGN_FAILED"),
                            f"{where}: {orphan.height} entit(ies) of {surface} have no group in s1_grouping_5B; "
                            f"first {key}", file=where, key=key)
    absent = known.join(summary.select(keys), on=keys, how="anti").sort(keys)
    if absent.height:
        key = absent.row(0, named=True)
        return ArrivalError(error_code(state, "DOMAIN_ALIGN_FAILED"),
                            f"{where}: {absent.height} grouped entit(ies) have no rows in {surface}; first {key}",
                            file=where, key=key)
    full = h * (h - 1) // 2
    broken = summary.filter((pl.col("rows") != h) | (pl.col("distinct") != h) | (pl.col("min_bucket") != 0)
                            | (pl.col("max_bucket") != h - 1)).sort(keys)
    if broken.height:
        row = broken.row(0, named=True)
        key = {k: row[k] for k in keys}
        detail = f"{row['rows']} row(s) over {row['distinct']} distinct bucket(s) in [{row['min_bucket']}, {row['max_bucket']}]"
        missing = full - row["sum_bucket"]
        if row["rows"] == row["distinct"] == h - 1 and 0 <= missing < h:
            detail += f"; bucket_index {missing} is missing"
            key["bucket_index"] = missing
        return ArrivalError(error_code(state, "BUCKET_SET_INCONSISTENT"),
                            f"{where}: entity {key} has {detail}; the grid has buckets 0..{h - 1} once each",
                            file=where, key=key)
    return ArrivalError(error_code(state, "DOMAIN_ALIGN_FAILED"),
                        f"{where}: {surface} is not in writer order (entity keys, then bucket), so it cannot be "
                        f"aligned to s1_grouping_5B chunk by chunk", file=where)


def grid_key(domain: Domain, e0: int, row: int, bucket_column: str) -> dict:
    """The entity keys and bucket of a row of the chunk starting at entity e0 (the chunk is aligned)."""
    entity = domain.entities.row(e0 + row // domain.buckets, named=True)
    return {**{k: entity[k] for k in ENTITY_KEYS}, bucket_column: row % domain.buckets}


def numeric_error(values: np.ndarray, domain: Domain, e0: int, bucket_column: str, *, column: str, code: str,
                  where: str, upper: float | None = None) -> ArrivalError | None:
    """An error naming the first entity/bucket (of the aligned chunk starting at entity e0) whose value is NaN,
    infinite, negative (or above `upper`), with the value printed plainly, else None."""
    bad = ~np.isfinite(values) | (values < 0)
    rule = "NaN, infinite or negative"
    if upper is not None:
        bad |= values > upper
        rule = f"NaN, infinite, negative or above {upper:g}"
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    key = grid_key(domain, e0, i, bucket_column)
    return ArrivalError(code, f"{where}: {int(bad.sum())} row(s) have {column} {rule} (first {float(values[i])!r} "
                              f"at {key})", file=where, column=column, key=key, value=float(values[i]))


def constant(value: str, n: int) -> pa.DictionaryArray:
    """A string column holding one value, dictionary-encoded (no per-row strings are built)."""
    return pa.DictionaryArray.from_arrays(filled(0, n, pa.int32()), pa.array([value], pa.string()), safe=False)


def filled(value: int, n: int, dtype: pa.DataType) -> pa.Array:
    """n copies of an integer: a slice of one immutable array shared by every chunk (no per-chunk allocation)."""
    return _filled(value, max(1024, 1 << (n - 1).bit_length()), dtype).slice(0, n)


@functools.lru_cache(maxsize=16)
def _filled(value: int, capacity: int, dtype: pa.DataType) -> pa.Array:
    return pa.array(np.full(capacity, value, dtype=dtype.to_pandas_dtype()))


def entity_columns(domain: Domain, e0: int, e1: int, *, with_group: bool,
                   rows: np.ndarray | None = None) -> dict[str, pa.Array]:
    """The entity key columns (and group_id) of entities e0..e1 over their H buckets, or of the chosen `rows`
    (positions within that chunk) only."""
    h = domain.buckets
    if rows is None:
        def per_row(values: np.ndarray) -> np.ndarray:
            return np.repeat(values[e0:e1], h)
        bucket = np.tile(np.arange(h, dtype=np.int32), e1 - e0)
    else:
        entity = e0 + rows // h
        def per_row(values: np.ndarray) -> np.ndarray:
            return values[entity]
        bucket = (rows % h).astype(np.int32)
    cols: dict[str, pa.Array] = {"merchant_id": pa.array(per_row(domain.merchant_id))}
    for column in (*_STRING_KEYS, *(("group_id",) if with_group else ())):
        # codes index the domain's own dictionary by construction, so Arrow need not re-check their bounds
        cols[column] = pa.DictionaryArray.from_arrays(pa.array(per_row(domain.codes[column])),
                                                      domain.dictionaries[column], safe=False)
    cols["bucket_index"] = pa.array(bucket)
    return cols

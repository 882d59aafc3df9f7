"""Table contracts: JSON-Schema table schemas compiled into vectorised Polars rules, and full validation of frames.

Every row is checked (columns, dtypes, nullability, enums, ranges, patterns on distinct values, primary-key
uniqueness, writer order); a violation names the column, the rule and the key of an offending row.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import referencing
import referencing.exceptions

from . import contracts
from .contracts import DEFAULT_CONTRACTS_DIR
from .errors import CONTRACT_INVALID, ArrivalError

_SIMPLE_DTYPES = {
    "String": pl.String, "Boolean": pl.Boolean, "Float64": pl.Float64, "Float32": pl.Float32,
    "Int8": pl.Int8, "Int16": pl.Int16, "Int32": pl.Int32, "Int64": pl.Int64,
    "UInt8": pl.UInt8, "UInt16": pl.UInt16, "UInt32": pl.UInt32, "UInt64": pl.UInt64, "Date": pl.Date,
}
_DTYPE_RE = re.compile(r"^(Datetime)\[(ns|us|ms),([^\]]+)\]$|^List\[(.+)\]$")
# Keywords a table column may use; anything else could constrain rows in a way the compiler would not check.
_COLUMN_KEYWORDS = frozenset({
    "$ref", "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "pattern", "not", "minLength", "maxLength", "items", "description", "title", "format",
    "x-dtype", "x-allow-nonfinite",
})


def parse_dtype(name: str) -> pl.DataType:
    """Return the Polars dtype an `x-dtype` names: `UInt64`, `Datetime[us,UTC]`, `List[String]`, ..."""
    if name in _SIMPLE_DTYPES:
        return _SIMPLE_DTYPES[name]()
    match = _DTYPE_RE.match(name)
    if match and match.group(1):
        return pl.Datetime(match.group(2), match.group(3))
    if match and match.group(4):
        return pl.List(parse_dtype(match.group(4)))
    raise ArrivalError(CONTRACT_INVALID, f"x-dtype {name!r} is not a known Polars dtype", dtype=name)


def _json_type_of(dtype: pl.DataType) -> str:
    """The JSON type a value of this dtype has in a row document (timestamps are ISO strings)."""
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "number"
    if isinstance(dtype, pl.List):
        return "array"
    return "boolean" if dtype == pl.Boolean else "string"


@dataclass(frozen=True)
class _Column:
    """One compiled column: its dtype and every row-level constraint of its schema, refs merged."""

    name: str
    dtype: pl.DataType
    nullable: bool
    enum: tuple | None = None
    bounds: tuple = ()  # (op, limit) pairs, op in >=, >, <=, <
    patterns: tuple[str, ...] = ()
    not_patterns: tuple[str, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    allow_nonfinite: bool = False
    item: "_Column | None" = None

    @property
    def value_rules(self) -> bool:
        """True when the column has rules checked on its distinct values (enum, pattern, length)."""
        return bool(self.enum is not None or self.patterns or self.not_patterns
                    or self.min_length is not None or self.max_length is not None)

    @property
    def checked_bounds(self) -> tuple:
        """The bounds the dtype does not already guarantee (UInt64 >= 0 needs no pass)."""
        return tuple((op, lim) for op, lim in self.bounds if not _implied(self.dtype, op, lim))


@dataclass(frozen=True)
class _TableSpec:
    schema_ref: str
    columns: tuple[_Column, ...]
    required: frozenset[str]
    additional: bool


def _flatten(schema: dict, resolver: Any, where: str) -> list[tuple[dict, Any]]:
    """Return the (keywords, resolver) pairs a column schema and its `$ref` chain impose (all must hold)."""
    unknown = set(schema) - _COLUMN_KEYWORDS
    if unknown:
        raise ArrivalError(CONTRACT_INVALID, f"{where}: table columns cannot use {sorted(unknown)}")
    parts = [(schema, resolver)]
    if "$ref" in schema:
        try:
            resolved = resolver.lookup(schema["$ref"])
        except referencing.exceptions.Unresolvable as exc:
            message = f"{where}: $ref {schema['$ref']!r} does not resolve: {exc}"
            raise ArrivalError(CONTRACT_INVALID, message, schema_ref=where)
        parts += _flatten(resolved.contents, resolved.resolver, where)
    return parts


_BOUND_KEYWORDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def _compile_column(
    name: str, schema: dict, resolver: Any, where: str, dtype: pl.DataType | None = None
) -> _Column:
    """Merge a column's constraints across its refs (intersection semantics, as jsonschema applies them)."""
    parts = _flatten(schema, resolver, where)
    dtype_names = [p["x-dtype"] for p, _ in parts if "x-dtype" in p]
    if dtype is None:
        if not dtype_names:
            raise ArrivalError(CONTRACT_INVALID, f"{where}: column {name!r} has no x-dtype")
        dtype = parse_dtype(dtype_names[0])
    types = None
    enum = None
    bounds, patterns, not_patterns = [], [], []
    min_len = max_len = None
    item = None
    for part, part_resolver in parts:
        if "type" in part:
            t = {part["type"]} if isinstance(part["type"], str) else set(part["type"])
            types = t if types is None else types & t
        for key in ("enum", "const"):
            if key in part:
                values = part["enum"] if key == "enum" else [part["const"]]
                enum = list(values) if enum is None else [v for v in enum if v in values]
        for key, op in _BOUND_KEYWORDS:
            if key in part:
                bounds.append((op, part[key]))
        if "pattern" in part:
            patterns.append(part["pattern"])
        if "not" in part:
            if set(part["not"]) != {"pattern"}:
                raise ArrivalError(CONTRACT_INVALID, f"{where}: {name!r}: only `not: {{pattern}}` works")
            not_patterns.append(part["not"]["pattern"])
        if "minLength" in part:
            min_len = max(min_len or 0, part["minLength"])
        if "maxLength" in part:
            max_len = part["maxLength"] if max_len is None else min(max_len, part["maxLength"])
        if "items" in part and isinstance(dtype, pl.List):
            item = _compile_column(f"{name}[]", part["items"], part_resolver, where, dtype.inner)
    json_type = _json_type_of(dtype)
    if types is None or json_type not in types:
        raise ArrivalError(CONTRACT_INVALID, f"{where}: column {name!r}: {dtype} needs type {json_type}")
    for pattern in patterns + not_patterns:
        try:
            pl.Series([""]).str.contains(pattern)  # Rust regex: the dialect the checks run in
        except Exception as exc:  # noqa: BLE001 - any compile failure is a contract error
            raise ArrivalError(CONTRACT_INVALID, f"{where}: column {name!r}: pattern {pattern!r}: {exc}")
    return _Column(
        name=name, dtype=dtype, nullable="null" in types, enum=None if enum is None else tuple(enum),
        bounds=tuple(bounds), patterns=tuple(patterns), not_patterns=tuple(not_patterns), min_length=min_len,
        max_length=max_len, allow_nonfinite=any(p.get("x-allow-nonfinite") for p, _ in parts), item=item,
    )


@functools.lru_cache(maxsize=128)
def _table_spec(contracts_dir: Path, schema_ref: str) -> _TableSpec:
    resolved = contracts.resolve_schema(contracts_dir, schema_ref)
    schema = resolved.contents
    if not schema.get("x-table"):
        raise ArrivalError(CONTRACT_INVALID, f"{schema_ref} is not a table schema (x-table: true)")
    columns = tuple(_compile_column(name, col, resolved.resolver, schema_ref)
                    for name, col in schema["properties"].items())
    return _TableSpec(schema_ref, columns, frozenset(schema.get("required", ())),
                      schema.get("additionalProperties", True) is not False)


def polars_schema(schema_ref: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict[str, pl.DataType]:
    """Return {column: Polars dtype} of a table schema in schema order, so writers can cast frames exactly."""
    return {c.name: c.dtype for c in _table_spec(Path(contracts_dir).resolve(), schema_ref).columns}


@dataclass(frozen=True)
class TableViolation:
    """One kind of violation in one column: how many rows, and the primary key of the first offending row."""

    column: str
    kind: str
    count: int
    example_key: dict
    message: str


def _implied(dtype: pl.DataType, op: str, limit: Any) -> bool:
    """True when an integer dtype alone guarantees the bound."""
    if not dtype.is_integer():
        return False
    info = np.iinfo(str(dtype).lower())
    return (op == ">=" and limit <= info.min) or (op == ">" and limit < info.min) or \
        (op == "<=" and limit >= info.max) or (op == "<" and limit > info.max)


def _breaks(value: Any, op: str, limit: Any) -> bool:
    return {">=": value < limit, ">": value <= limit, "<=": value > limit, "<": value >= limit}[op]


def _out_of_range(expr: pl.Expr, column: _Column) -> pl.Expr:
    mask = pl.lit(False)
    for op, limit in column.bounds:
        mask = mask | {">=": expr < limit, ">": expr <= limit, "<=": expr > limit, "<": expr >= limit}[op]
    if column.dtype.is_float() and not column.allow_nonfinite:
        mask = mask & expr.is_finite()
    return mask.fill_null(False)


def _bad_values(values: pl.Series, column: _Column) -> tuple[list, str, str]:
    """Return the distinct values breaking the column's enum / pattern / length rules, the kind, the rule."""
    values = values.drop_nulls()
    rules: list[tuple[str, str, pl.Series]] = []
    if column.enum is not None:
        rules.append(("enum", f"not in {list(column.enum)}", ~values.is_in(list(column.enum))))
    if values.dtype == pl.String:
        length = values.str.len_chars()
        rules += [("pattern", f"not matching {p!r}", ~values.str.contains(p)) for p in column.patterns]
        rules += [("pattern", f"matching {p!r}", values.str.contains(p)) for p in column.not_patterns]
        if column.min_length is not None:
            rules.append(("pattern", f"shorter than {column.min_length}", length < column.min_length))
        if column.max_length is not None:
            rules.append(("pattern", f"longer than {column.max_length}", length > column.max_length))
    for kind, rule, mask in rules:
        if mask.any():
            return values.filter(mask).sort().to_list(), kind, rule
    return [], "", ""


def _eq_prev(name: str) -> str:
    return f"__eq_prev__{name}"


def _lt_prev(name: str) -> str:
    return f"__lt_prev__{name}"


def _with_adjacent_masks(df: pl.DataFrame, eq: Sequence[str], lt: Sequence[str]) -> pl.DataFrame:
    """Add masks "row equals / sorts before the previous row" per column, in one parallel pass."""
    return df.with_columns(
        *[pl.col(n).eq_missing(pl.col(n).shift(1)).alias(_eq_prev(n)) for n in eq],
        *[(pl.col(n) < pl.col(n).shift(1)).fill_null(False).alias(_lt_prev(n)) for n in lt],
    )


def _unsorted(sort: Sequence[str]) -> pl.Expr:
    """Row sorts before the previous row: lt0 | (eq0 & (lt1 | (eq1 & ...))), on the adjacent masks."""
    mask = pl.col(_lt_prev(sort[-1]))
    for name in reversed(sort[:-1]):
        mask = pl.col(_lt_prev(name)) | (pl.col(_eq_prev(name)) & mask)
    return mask


def table_violations(
    df: pl.DataFrame,
    schema_ref: str,
    *,
    primary_key: Sequence[str] = (),
    writer_sort: Sequence[str] = (),
    limit: int = 5,
    contracts_dir: Path = DEFAULT_CONTRACTS_DIR,
) -> list[TableViolation]:
    """Check every row against the table schema, keys and writer order; return up to `limit` violations.

    Pass 1 is one select of aggregates (null counts, min/max, non-finite counts, distinct values of run heads,
    writer order and adjacent key repeats); only when something fails does pass 2 count rows and find keys.
    """
    spec = _table_spec(Path(contracts_dir).resolve(), schema_ref)
    unknown = [c for c in (*primary_key, *writer_sort) if c not in {col.name for col in spec.columns}]
    if unknown:
        raise ArrivalError(CONTRACT_INVALID, f"key columns {unknown} are not in {schema_ref}")
    structural: list[TableViolation] = []
    for column in spec.columns:
        if column.name not in df.schema and column.name in spec.required:
            structural.append(_violation(column.name, "missing_column", df.height, {}, "column is missing"))
    if not spec.additional:
        known = {c.name for c in spec.columns}
        structural += [_violation(n, "extra_column", df.height, {}, "column is not in the schema")
                       for n in df.columns if n not in known]
    checked = []
    for column in spec.columns:
        if column.name in df.schema and df.schema[column.name] != column.dtype:
            detail = f"has dtype {df.schema[column.name]}, expected {column.dtype}"
            structural.append(_violation(column.name, "dtype", df.height, {}, detail))
        elif column.name in df.schema:
            checked.append(column)
    if len(structural) >= limit or df.height == 0:
        return structural[:limit]
    pk = list(primary_key) if all(c in df.schema for c in primary_key) else []
    sort = list(writer_sort) if all(c in df.schema for c in writer_sort) else []
    # Sorted by writer_sort with the key columns first, duplicate keys can only sit on adjacent rows.
    pk_adjacent = bool(pk) and set(sort[: len(pk)]) == set(pk)
    distinct_cols = [c.name for c in checked if c.value_rules and c.item is None]
    work = _with_adjacent_masks(df, list(dict.fromkeys(distinct_cols + sort)), sort)

    aggs: dict[str, pl.Expr] = {}
    for column in checked:
        expr, name = pl.col(column.name), column.name
        if not column.nullable:
            aggs[f"{name}.null"] = expr.null_count()
        if column.checked_bounds:
            aggs[f"{name}.min"], aggs[f"{name}.max"] = expr.min(), expr.max()
        if column.dtype.is_float() and not column.allow_nonfinite:
            aggs[f"{name}.nonfinite"] = (~expr.is_finite()).sum()
        if name in distinct_cols:  # hash only the heads of runs: few in writer-sorted data
            aggs[f"{name}.distinct"] = expr.filter(~pl.col(_eq_prev(name))).unique().implode()
        if column.item is not None:
            items = expr.explode(keep_nulls=False)
            if not column.item.nullable:
                aggs[f"{name}.item_null"] = items.null_count()
            if column.item.value_rules:
                aggs[f"{name}.item_distinct"] = items.unique().implode()
    if sort:
        aggs["sort.unsorted"] = _unsorted(sort).sum()
    if pk_adjacent:
        aggs["pk.adjacent"] = pl.all_horizontal([pl.col(_eq_prev(n)) for n in sort[: len(pk)]]).sum()
    elif pk:
        aggs["pk.unique"] = pl.struct(pk).n_unique()
    row = work.select(**aggs).row(0, named=True)

    found: list[tuple[str, str, str, pl.Expr]] = []  # column, kind, detail, mask of offending rows
    for column in checked:
        expr, name = pl.col(column.name), column.name
        if row.get(f"{name}.null"):
            found.append((name, "null", "null in a non-nullable column", expr.is_null()))
        lo, hi = row.get(f"{name}.min"), row.get(f"{name}.max")
        if lo is not None and any(_breaks(v, op, lim) for op, lim in column.checked_bounds for v in (lo, hi)):
            rules = " and ".join(f"{op} {lim}" for op, lim in column.bounds)
            found.append((name, "range", f"outside {rules}", _out_of_range(expr, column)))
        if row.get(f"{name}.nonfinite"):
            found.append((name, "nonfinite", "NaN or infinite", (~expr.is_finite()).fill_null(False)))
        if f"{name}.distinct" in row:
            bad, kind, rule = _bad_values(pl.Series(row[f"{name}.distinct"], dtype=column.dtype), column)
            if bad:
                found.append((name, kind, f"{rule} (e.g. {bad[0]!r})", expr.is_in(bad)))
        if row.get(f"{name}.item_null"):
            mask = expr.list.eval(pl.element().is_null()).list.any().fill_null(False)
            found.append((name, "null", "null list item", mask))
        if f"{name}.item_distinct" in row:
            values = pl.Series(row[f"{name}.item_distinct"], dtype=column.item.dtype)
            bad, kind, rule = _bad_values(values, column.item)
            if bad:
                mask = expr.list.eval(pl.element().is_in(bad)).list.any().fill_null(False)
                found.append((name, kind, f"list item {rule} (e.g. {bad[0]!r})", mask))
    unsorted = bool(row.get("sort.unsorted"))
    if unsorted:
        found.append((", ".join(sort), "unsorted", f"sort before the previous row by ({', '.join(sort)})",
                      _unsorted(sort)))
    if pk:
        label = ", ".join(pk)
        if pk_adjacent and not unsorted and row["pk.adjacent"]:
            mask = pl.all_horizontal([pl.col(_eq_prev(n)) for n in sort[: len(pk)]])
            found.append((label, "pk_duplicate", f"repeat the key ({label}) of the previous row", mask))
        elif (pk_adjacent and unsorted) or row.get("pk.unique", df.height) < df.height:
            found.append((label, "pk_duplicate", f"repeat an earlier primary key ({label})",
                          pl.lit(_repeated_keys(df, pk))))
    return structural + _count_rows(work, found, pk, limit - len(structural))


def _repeated_keys(df: pl.DataFrame, pk: Sequence[str]) -> pl.Series:
    """Mask of rows whose key appeared on an earlier row: sorted u64 key hashes find candidates, keys confirm."""
    hashed = df.select(pl.struct(pk).hash(seed=0)).to_series()
    ordered = hashed.sort()
    candidates = hashed.is_in(ordered.filter(ordered == ordered.shift(1)).implode())
    rows = df.select(pk).with_row_index("__row").filter(candidates)
    repeats = rows.filter(~pl.struct(pk).is_first_distinct())["__row"]
    return pl.int_range(df.height, eager=True, dtype=repeats.dtype).is_in(repeats.implode())


def _violation(column: str, kind: str, count: int, key: dict, detail: str) -> TableViolation:
    label = f"columns ({column})" if ", " in column else f"column {column!r}"
    where = f"; first at key {key}" if key else ""
    return TableViolation(column, kind, count, key, f"{label}: {kind}: {count} row(s) {detail}{where}")


def _count_rows(work: pl.DataFrame, found: list, pk: Sequence[str], limit: int) -> list[TableViolation]:
    """Pass 2, only when something failed: rows affected and the first offending row of each violation."""
    if not found or limit <= 0:
        return []
    aggs = {}
    for j, (_, _, _, mask) in enumerate(found):
        aggs[f"{j}.count"], aggs[f"{j}.first"] = mask.sum(), mask.arg_true().first()
    row = work.select(**aggs).row(0, named=True)
    out = []
    for j, (column, kind, detail, _) in enumerate(found):
        if row[f"{j}.count"]:  # zero when, e.g., the +inf pass 1 saw as out of range is only non-finite
            first = row[f"{j}.first"]
            key = {name: work[name][first] for name in pk}
            out.append(_violation(column, kind, int(row[f"{j}.count"]), key,
                                  detail if key else f"{detail}; first at row {first}"))
    return out[:limit]


def validate_table(
    df: pl.DataFrame,
    schema_ref: str,
    *,
    code: str,
    where: str,
    primary_key: Sequence[str] = (),
    writer_sort: Sequence[str] = (),
    contracts_dir: Path = DEFAULT_CONTRACTS_DIR,
) -> None:
    """Validate a frame in full; raise `code` naming the file, column and key of the first violation."""
    found = table_violations(df, schema_ref, primary_key=primary_key, writer_sort=writer_sort,
                             contracts_dir=contracts_dir)
    if found:
        first = found[0]
        raise ArrivalError(
            code,
            f"{where}: {len(found)} violation(s) of {schema_ref}: " + "; ".join(v.message for v in found),
            file=where,
            column=first.column,
            kind=first.kind,
            key=first.example_key or None,
            rows=first.count,
        )

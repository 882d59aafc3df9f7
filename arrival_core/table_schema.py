"""Table schemas compiled: each JSON-Schema table column becomes a typed rule (dtype, nullability, bounds, value
rules) that `tables` checks against whole frames in vectorised passes."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _implied(dtype: pl.DataType, op: str, limit: Any) -> bool:
    """True when an integer dtype alone guarantees the bound."""
    if not dtype.is_integer():
        return False
    info = np.iinfo(str(dtype).lower())
    return (op == ">=" and limit <= info.min) or (op == ">" and limit < info.min) or \
        (op == "<=" and limit >= info.max) or (op == "<" and limit > info.max)


@dataclass(frozen=True)
class ColumnRule:
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
    item: ColumnRule | None = None

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
class TableSpec:
    schema_ref: str
    columns: tuple[ColumnRule, ...]
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
) -> ColumnRule:
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
    return ColumnRule(
        name=name, dtype=dtype, nullable="null" in types, enum=None if enum is None else tuple(enum),
        bounds=tuple(bounds), patterns=tuple(patterns), not_patterns=tuple(not_patterns), min_length=min_len,
        max_length=max_len, allow_nonfinite=any(p.get("x-allow-nonfinite") for p, _ in parts), item=item,
    )


@functools.lru_cache(maxsize=128)
def table_spec(contracts_dir: Path, schema_ref: str) -> TableSpec:
    resolved = contracts.resolve_schema(contracts_dir, schema_ref)
    schema = resolved.contents
    if not schema.get("x-table"):
        raise ArrivalError(CONTRACT_INVALID, f"{schema_ref} is not a table schema (x-table: true)")
    columns = tuple(_compile_column(name, col, resolved.resolver, schema_ref)
                    for name, col in schema["properties"].items())
    return TableSpec(schema_ref, columns, frozenset(schema.get("required", ())),
                      schema.get("additionalProperties", True) is not False)


def polars_schema(schema_ref: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict[str, pl.DataType]:
    """Return {column: Polars dtype} of a table schema in schema order, so writers can cast frames exactly."""
    return {c.name: c.dtype for c in table_spec(Path(contracts_dir).resolve(), schema_ref).columns}

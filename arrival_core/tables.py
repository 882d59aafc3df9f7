"""Table contracts: JSON-Schema table schemas compiled into vectorised Polars rules, and full validation of frames.

Every row is checked (columns, dtypes, nullability, enums, ranges, patterns on distinct values, primary-key
uniqueness, writer order); a violation names the column, the rule and the key of an offending row.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .contracts import DEFAULT_CONTRACTS_DIR
from .errors import CONTRACT_INVALID, ArrivalError
from .table_schema import ColumnRule, TableSpec, table_spec


@dataclass(frozen=True)
class TableViolation:
    """One kind of violation in one column: how many rows, and the primary key of the first offending row."""

    column: str
    kind: str
    count: int
    example_key: dict
    message: str


def _breaks(value: Any, op: str, limit: Any) -> bool:
    return {">=": value < limit, ">": value <= limit, "<=": value > limit, "<": value >= limit}[op]


def _out_of_range(expr: pl.Expr, column: ColumnRule) -> pl.Expr:
    mask = pl.lit(False)
    for op, limit in column.bounds:
        mask = mask | {">=": expr < limit, ">": expr <= limit, "<=": expr > limit, "<": expr >= limit}[op]
    if column.dtype.is_float() and not column.allow_nonfinite:
        mask = mask & expr.is_finite()
    return mask.fill_null(False)


def _bad_values(values: pl.Series, column: ColumnRule) -> tuple[list, str, str]:
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
    spec = table_spec(Path(contracts_dir).resolve(), schema_ref)
    unknown = [c for c in (*primary_key, *writer_sort) if c not in {col.name for col in spec.columns}]
    if unknown:
        raise ArrivalError(CONTRACT_INVALID, f"key columns {unknown} are not in {schema_ref}")
    structural, checked = _structural_violations(df, spec)
    if len(structural) >= limit or df.height == 0:
        return structural[:limit]
    keys = _Keys.of(df, primary_key, writer_sort)
    distinct_cols = [c.name for c in checked if c.value_rules and c.item is None]
    work = _with_adjacent_masks(df, list(dict.fromkeys(distinct_cols + keys.sort)), keys.sort)
    row = work.select(**_aggregates(checked, distinct_cols, keys)).row(0, named=True)
    found = _column_findings(row, checked) + _key_findings(row, df, keys)
    return structural + _count_rows(work, found, keys.pk, limit - len(structural))


@dataclass(frozen=True)
class _Keys:
    """The primary key and writer sort present in a frame; with the key leading the sort, duplicates are adjacent."""

    pk: list[str]
    sort: list[str]

    @classmethod
    def of(cls, df: pl.DataFrame, primary_key: Sequence[str], writer_sort: Sequence[str]) -> _Keys:
        pk = list(primary_key) if all(c in df.schema for c in primary_key) else []
        sort = list(writer_sort) if all(c in df.schema for c in writer_sort) else []
        return cls(pk, sort)

    @property
    def adjacent(self) -> bool:
        return bool(self.pk) and set(self.sort[: len(self.pk)]) == set(self.pk)


def _structural_violations(df: pl.DataFrame, spec: TableSpec) -> tuple[list[TableViolation], list[ColumnRule]]:
    """Missing, extra and mistyped columns, and the columns whose values can be checked."""
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
    return structural, checked


def _aggregates(checked: list[ColumnRule], distinct_cols: list[str], keys: _Keys) -> dict[str, pl.Expr]:
    """Pass 1: every aggregate the rules need, computed in one select."""
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
    if keys.sort:
        aggs["sort.unsorted"] = _unsorted(keys.sort).sum()
    if keys.adjacent:
        aggs["pk.adjacent"] = pl.all_horizontal([pl.col(_eq_prev(n)) for n in keys.sort[: len(keys.pk)]]).sum()
    elif keys.pk:
        aggs["pk.unique"] = pl.struct(keys.pk).n_unique()
    return aggs


Finding = tuple[str, str, str, pl.Expr]  # column, kind, detail, mask of offending rows


def _column_findings(row: dict, checked: list[ColumnRule]) -> list[Finding]:
    """The column rules pass 1 saw broken."""
    found: list[Finding] = []
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
    return found


def _key_findings(row: dict, df: pl.DataFrame, keys: _Keys) -> list[Finding]:
    """Writer order and primary-key uniqueness as pass 1 saw them."""
    found: list[Finding] = []
    sort, pk = keys.sort, keys.pk
    unsorted = bool(row.get("sort.unsorted"))
    if unsorted:
        found.append((", ".join(sort), "unsorted", f"sort before the previous row by ({', '.join(sort)})",
                      _unsorted(sort)))
    if pk:
        label = ", ".join(pk)
        if keys.adjacent and not unsorted and row["pk.adjacent"]:
            mask = pl.all_horizontal([pl.col(_eq_prev(n)) for n in sort[: len(pk)]])
            found.append((label, "pk_duplicate", f"repeat the key ({label}) of the previous row", mask))
        elif (keys.adjacent and unsorted) or row.get("pk.unique", df.height) < df.height:
            found.append((label, "pk_duplicate", f"repeat an earlier primary key ({label})",
                          pl.lit(_repeated_keys(df, pk))))
    return found


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

"""Dagster's column schema of each table dataset, built from its contract (names, dtypes, nullability, rules)."""
from __future__ import annotations

from functools import cache

import dagster as dg

from arrival_core import contracts, table_schema
from arrival_core.table_schema import ColumnRule


def _describe(rule: ColumnRule, raw: dict) -> str:
    """A column's description: the contract's own words, else its rules (enum, bounds, pattern)."""
    parts = [raw["description"]] if isinstance(raw.get("description"), str) else []
    if rule.enum is not None:
        parts.append("one of " + ", ".join(str(v) for v in rule.enum))
    parts += [f"{op} {limit}" for op, limit in rule.bounds]
    parts += [f"matches {p}" for p in rule.patterns]
    if rule.allow_nonfinite:
        parts.append("may be non-finite")
    return "; ".join(parts)


@cache
def column_schema(dataset_id: str) -> dg.TableSchema | None:
    """The TableSchema of a parquet dataset (None for JSON documents and bundles)."""
    entry = contracts.dataset(dataset_id)
    if entry.format != "parquet" or not entry.schema_ref:
        return None
    spec = table_schema.table_spec(contracts.DEFAULT_CONTRACTS_DIR.resolve(), entry.schema_ref)
    raw = contracts.load_schema(entry.schema_ref).get("properties", {})
    return dg.TableSchema(columns=[
        dg.TableColumn(name=rule.name, type=str(rule.dtype), description=_describe(rule, raw.get(rule.name, {})),
                       constraints=dg.TableColumnConstraints(nullable=rule.nullable))
        for rule in spec.columns
    ])

"""Dagster's column schema of each table dataset, built from its contract (names, dtypes, nullability, rules).

The UI renders a column's description as Markdown, so the contract's words are escaped and every rule (bound,
enum value, pattern) is a code span: `>= 0` must not become a quote, nor `\\|` lose its backslash.
"""
from __future__ import annotations

import re
from functools import cache

import dagster as dg

from arrival_core import contracts, table_schema
from arrival_core.table_schema import ColumnRule

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~!])")


def escape_markdown(text: str) -> str:
    """Text that Markdown shows as written (each special character backslash-escaped)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def code_span(text: str) -> str:
    """A Markdown code span showing `text` verbatim (fenced by more backticks than any run inside it)."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _describe(rule: ColumnRule, raw: dict) -> str:
    """A column's description in Markdown: the contract's own words, then its rules (enum, bounds, pattern)."""
    parts = [escape_markdown(raw["description"])] if isinstance(raw.get("description"), str) else []
    if rule.enum is not None:
        parts.append("one of " + ", ".join(code_span(str(v)) for v in rule.enum))
    parts += [code_span(f"{op} {limit}") for op, limit in rule.bounds]
    parts += [f"matches {code_span(p)}" for p in rule.patterns]
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

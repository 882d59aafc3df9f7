"""Column descriptions are Markdown (the UI renders them): rendered, they read exactly as the contract's rules."""
from __future__ import annotations

import html
import re

import pytest

from arrival_assets.assets import columns
from arrival_core import contracts, table_schema

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (a CommonMark renderer) is not installed")



def _rendered_text(markdown: str) -> str:
    """The text a reader sees: CommonMark-rendered, tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markdown_it.MarkdownIt().render(markdown))).strip()


def _plain(rule: table_schema.ColumnRule, raw: dict) -> str:
    """The contract's words and rules as plain text, written independently of the Markdown."""
    parts = [raw["description"]] if isinstance(raw.get("description"), str) else []
    if rule.enum is not None:
        parts.append("one of " + ", ".join(str(v) for v in rule.enum))
    parts += [f"{op} {limit}" for op, limit in rule.bounds]
    parts += [f"matches {p}" for p in rule.patterns]
    if rule.allow_nonfinite:
        parts.append("may be non-finite")
    return "; ".join(parts)


@pytest.mark.parametrize("dataset_id", ["s3_bucket_counts_5B", "s2_realised_intensity_5B", "s1_grouping_5B",
                                        "s1_time_grid_5B", "s2_latent_field_5B"])
def test_column_descriptions_render_as_the_contract_states_them(dataset_id):
    entry = contracts.dataset(dataset_id)
    spec = table_schema.table_spec(contracts.DEFAULT_CONTRACTS_DIR.resolve(), entry.schema_ref)
    raw = contracts.load_schema(entry.schema_ref).get("properties", {})
    schema = columns.column_schema(dataset_id)
    described = {c.name: c.description for c in schema.columns}
    for rule in spec.columns:
        assert _rendered_text(described[rule.name]) == _plain(rule, raw.get(rule.name, {})), rule.name


def test_count_n_reads_greater_or_equal_zero():
    count_n = next(c for c in columns.column_schema("s3_bucket_counts_5B").columns if c.name == "count_N")
    assert _rendered_text(count_n.description) == ">= 0"


def test_a_pattern_keeps_its_backslashes_and_pipes():
    text = columns.code_span(r"^(a|b)\|c\.d$")
    assert _rendered_text(text) == r"^(a|b)\|c\.d$"
    assert _rendered_text(columns.code_span("a`b")) == "a`b"


def test_contract_words_with_markdown_characters_render_verbatim():
    words = r"> quoted *not* emphasised _x_ [link](y) <b> # 1 \ back | pipe ~ !"
    assert _rendered_text(columns.escape_markdown(words)) == words

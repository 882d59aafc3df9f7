"""Documents are parsed within limits: bytes, nesting, and size with every shared value (a YAML alias) counted
where it is used; a value holding itself is refused. Known answers on small documents."""
from __future__ import annotations

import pytest

from arrival_core.encoding import DocumentLimitError, DocumentLimits, check_bounds, load_json, load_yaml

LIMITS = DocumentLimits(max_bytes=1000, max_depth=3, max_expanded_size=20)


def test_expanded_size_counts_containers_scalars_and_characters_where_used():
    check_bounds({"ab": [1, 2]}, LIMITS)  # dict 1 + "ab" 3 + list 1 + 1 + 1 = 7
    shared = ["x" * 5] * 1  # a list of one 5-character string: 1 + 6 = 7
    check_bounds([shared, shared], LIMITS)  # 1 + 7 + 7 = 15 <= 20
    with pytest.raises(DocumentLimitError, match="expands to more than 20"):
        check_bounds([shared, shared, shared], LIMITS)  # 1 + 21 = 22


def test_depth_counts_nested_containers():
    check_bounds([[[1]]], LIMITS)
    with pytest.raises(DocumentLimitError, match="deeper than 3"):
        check_bounds([[[[1]]]], LIMITS)


def test_yaml_aliases_are_expanded_in_the_measure_and_self_reference_is_refused():
    text = "a: &a [x, x, x, x]\nb: [*a, *a, *a, *a]\n"  # a: 1 + 4·2 = 9; b: 1 + 4·9 = 37
    assert load_yaml(text) == {"a": ["x"] * 4, "b": [["x"] * 4] * 4}
    with pytest.raises(DocumentLimitError, match="expands"):
        load_yaml(text, LIMITS)
    with pytest.raises(DocumentLimitError, match="refers to itself"):
        load_yaml("&a [*a]", DocumentLimits(1000, 3, 1000))


def test_bytes_and_parser_recursion_are_limits_too():
    with pytest.raises(DocumentLimitError, match="1,001 bytes"):
        load_json(b" " * 999 + b"[]", LIMITS)
    with pytest.raises(DocumentLimitError, match="nests too deeply"):
        load_json("[" * 100_000 + "]" * 100_000, DocumentLimits(10**6, 3, 10**6))
    assert isinstance(DocumentLimitError("x"), ValueError)

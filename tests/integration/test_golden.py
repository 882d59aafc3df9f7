"""Every 5B output byte of the tiny world is pinned: refactors that are meant to change no behaviour keep them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_golden_digests", DATA / "make_golden_digests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_outputs_match_golden_digests() -> None:
    expected = [line for line in (DATA / "golden_digests_tiny.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    actual = _load_maker().digests("tiny")
    assert len(actual) == len(expected) == 44
    changed = [a for a, e in zip(actual, expected) if a != e]
    assert actual == expected, f"{len(changed)} output(s) differ from the golden digests, first: {changed[:3]}"

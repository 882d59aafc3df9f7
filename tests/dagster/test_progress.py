"""A streaming state's progress in the step log: the first chunk, then at most one line every
`progress_seconds` (each line is an event the instance stores), and always the last."""
from __future__ import annotations

from types import SimpleNamespace

from arrival_assets.assets import outcomes, states
from arrival_core import contracts


def test_progress_lines_are_the_first_one_a_period_and_the_last(monkeypatch):
    every = contracts.runtime_settings()["progress_seconds"]
    assert every == 1.0
    lines: list[str] = []
    context = SimpleNamespace(log=SimpleNamespace(info=lines.append))
    clock = iter([0.0, 0.3, 0.9, 1.0, 1.4, 2.1, 2.2, 2.3])  # one reading per chunk
    monkeypatch.setattr(states.time, "monotonic", lambda: next(clock))
    log = states.progress_logger(context)
    for done in range(1, 9):
        log("S2", done * 10, 80)
    assert lines == [f"{outcomes.PROGRESS_PREFIX}S2: {n} / 80 rows" for n in (10, 40, 60, 80)]


def test_every_chunk_is_a_line_when_the_period_is_zero(monkeypatch):
    lines: list[str] = []
    context = SimpleNamespace(log=SimpleNamespace(info=lines.append))
    monkeypatch.setattr(states.contracts, "runtime_settings", lambda: {"progress_seconds": 0.0})
    monkeypatch.setattr(states.time, "monotonic", lambda: 5.0)
    log = states.progress_logger(context)
    for done in (1, 2, 3):
        log("S3", done, 3)
    assert len(lines) == 3

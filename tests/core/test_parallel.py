"""The engine's worker threads: the setting and its default, ordered maps over the pool, and a forked child."""
from __future__ import annotations

import os
import threading
import time

import pytest

from arrival_core import parallel


@pytest.fixture(autouse=True)
def default_threads(monkeypatch):
    monkeypatch.delenv(parallel.ENV, raising=False)
    yield
    parallel.set_threads(None)


def test_threads_default_to_the_affinity_mask_then_the_environment_then_the_setting(monkeypatch):
    assert parallel.thread_count() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5, 7})
    assert parallel.thread_count() == 3
    monkeypatch.setenv(parallel.ENV, "5")
    assert parallel.thread_count() == 5
    parallel.set_threads(2)
    assert parallel.thread_count() == 2
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="ARRIVAL_THREADS"):
            parallel.parse_threads(bad)


@pytest.mark.parametrize("count", [1, 2, 8])
def test_ordered_yields_in_input_order_with_a_bounded_number_in_flight(count):
    parallel.set_threads(count)
    running, most = 0, 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (i % 3))  # later items often finish first
        with lock:
            running -= 1
        return i * i

    assert list(parallel.ordered(work, range(40), ahead=3)) == [i * i for i in range(40)]
    assert most <= 3


def test_an_ordered_map_inside_a_worker_runs_on_that_worker_and_never_waits_for_its_siblings():
    """Two workers each mapping over items would wait for ever if the inner items queued behind them."""
    parallel.set_threads(2)

    def inner(i: int) -> tuple[int, str]:
        return i, threading.current_thread().name

    def outer(i: int) -> list[tuple[int, str]]:
        return list(parallel.ordered(inner, range(i, i + 3)))

    results = list(parallel.ordered(outer, range(4), ahead=2))
    assert [[i for i, _ in r] for r in results] == [[i, i + 1, i + 2] for i in range(4)]
    assert all(len({name for _, name in r}) == 1 for r in results)


def test_a_failure_is_raised_where_its_result_would_have_been():
    parallel.set_threads(3)

    def work(i: int) -> int:
        if i in (5, 9):
            raise RuntimeError(f"item {i}")
        return i

    results = parallel.ordered(work, range(20))
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="item 5"):
        next(results)


def test_a_forked_child_starts_its_own_pool():
    parallel.set_threads(2)
    assert list(parallel.ordered(lambda x: x + 1, range(4))) == [1, 2, 3, 4]  # the parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = list(parallel.ordered(lambda x: x * 3, range(6))) == [0, 3, 6, 9, 12, 15]
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and status == 0


@pytest.mark.parametrize("count", [1, 2])
def test_soon_returns_the_result_or_raises_the_failure_where_it_is_asked_for(count):
    parallel.set_threads(count)
    started = threading.Event()

    def work() -> int:
        started.set()
        return 7

    result = parallel.soon(work)
    assert started.wait(5) and result() == 7

    def fails() -> int:
        raise RuntimeError("late")

    asked = parallel.soon(fails)  # nothing is raised until the result is asked for
    with pytest.raises(RuntimeError, match="late"):
        asked()

"""Worker threads of the engine: how many (a setting; no output depends on it), the shared pool, and ordered maps
over it with a bounded number of items in flight."""
from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENV = "ARRIVAL_THREADS"

_lock = threading.Lock()
_chosen: int | None = None
_pool: ThreadPoolExecutor | None = None
_local = threading.local()


def _forget_pool_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own pool when it needs one."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count() -> int:
    """Worker threads: `set_threads`, else `$ARRIVAL_THREADS`, else the CPUs this process may use."""
    if _chosen is not None:
        return _chosen
    value = os.environ.get(ENV, "").strip()
    if value:
        return parse_threads(value)
    return available_cpus()


def parse_threads(value: str | int) -> int:
    """A thread count from a setting: a positive integer, else ValueError naming the setting."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ValueError(f"threads must be a positive integer (--threads or ${ENV}), got {value!r}")
    return count


def set_threads(count: int | None) -> None:
    """Use `count` worker threads from now on (None: back to `$ARRIVAL_THREADS` or the CPUs)."""
    global _chosen, _pool
    with _lock:
        _chosen = None if count is None else parse_threads(count)
        old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=False)


def pool() -> ThreadPoolExecutor | None:
    """The shared pool of `thread_count()` workers, or None for one thread (work then runs on the caller)."""
    global _pool
    count = thread_count()
    if count == 1:
        return None
    with _lock:
        if _pool is None or _pool._max_workers != count:  # a changed setting gets a new pool
            _pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="arrival-worker", initializer=_mark_worker)
        return _pool


def _mark_worker() -> None:
    _local.worker = True


def in_worker() -> bool:
    """Whether this thread is one of the pool's workers (whose work is already one of several in parallel)."""
    return getattr(_local, "worker", False)


def in_flight() -> int:
    """Items of one stream worked on at once: the threads, at least 2, at most `in_flight_max` of
    config/runtime.yaml (memory stays bounded on many cores)."""
    from . import contracts

    return max(2, min(thread_count(), contracts.runtime_settings()["in_flight_max"]))


def ordered(work: Callable[[T], R], items: Iterable[T], ahead: int | None = None) -> Iterator[R]:
    """work(item) for each item on the shared pool, yielded in the items' order, with at most `ahead` (default
    `in_flight()`) items in flight; a failure is raised where its result would have been. Stopping early
    cancels what has not started and waits for what has. On one of the pool's workers the items run on that worker
    (a worker waiting for its siblings' work could wait for ever)."""
    executor = pool()
    if executor is None or in_worker():
        for item in items:
            yield work(item)
        return
    limit = max(1, ahead or in_flight())
    pending: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            while pending and (len(pending) >= limit or pending[0].done()):
                yield pending.popleft().result()
            pending.append(executor.submit(work, item))
        while pending:
            yield pending.popleft().result()
    finally:
        settle(pending)


def over_ranges(total: int, step: int, work: Callable[[int, int], None]) -> None:
    """work(start, stop) over consecutive ranges of `step` covering range(total) on the shared pool, each writing
    only its own part of a result (so neither the ranges nor the threads change a value)."""
    bounds = [(start, min(start + step, total)) for start in range(0, total, step)]  # over batches, not rows
    for _ in ordered(lambda pair: work(*pair), bounds):
        pass


def soon(work: Callable[[], R], *, own_thread: bool = False) -> Callable[[], R]:
    """Start work() on the shared pool (at once when there is no pool, or on one of its workers) and return the
    call that waits for its result (re-raising its failure): work that no later step needs before then overlaps
    the steps between. `own_thread`: on a thread of its own, for work that itself spreads over the pool (which
    a pool worker's work never does)."""
    executor = pool()
    if executor is not None and not in_worker() and not own_thread:
        return executor.submit(work).result
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # noqa: BLE001 - raised where the result is asked for
            future.set_exception(exc)

    if own_thread:
        threading.Thread(target=run, daemon=True, name="arrival-soon").start()
    else:
        run()
    return future.result


def settle(pending: Iterable[Future]) -> None:
    """Cancel the futures that have not started and wait for the others (their results are dropped)."""
    for future in pending:
        future.cancel()
    for future in pending:
        if not future.cancelled():
            future.exception()

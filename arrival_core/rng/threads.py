"""Elementwise `nogil` kernels over contiguous slices on the engine's threads: `prange`'s parallelism without a
parallel compile (seconds on a fresh checkout); values do not depend on the slicing, as every kernel is elementwise."""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import TypeVar

from .. import contracts, parallel

T = TypeVar("T")


def bounds(n: int) -> list[tuple[int, int]]:
    """Contiguous slices covering range(n): one per `parallel.thread_count()`, none under `thread_min_slice`
    (config/runtime.yaml) elements but the only one; one on a worker of `parallel.pool()` (its siblings keep the
    other cores busy)."""
    if parallel.in_worker():
        return [(0, n)]
    count = max(1, min(parallel.thread_count(), n // contracts.runtime_settings()["thread_min_slice"]))
    return list(itertools.pairwise([n * i // count for i in range(count + 1)]))


def run_sliced(n: int, body: Callable[[int, int], T]) -> list[T]:
    """body(start, stop) per slice of `bounds(n)`, the first on this thread; results in order."""
    parts = bounds(n)
    if len(parts) == 1:
        return [body(0, n)]
    results: list = [None] * len(parts)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = body(*parts[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread once every slice is done
            errors.append(exc)

    helpers = [threading.Thread(target=work, args=(i,), name=f"arrival-kernel-{i}") for i in range(1, len(parts))]
    for helper in helpers:
        helper.start()
    work(0)
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return results

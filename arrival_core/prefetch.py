"""Read-ahead: an iterator's next items made on a worker thread, so decoding a file overlaps the work on what was
already read (Arrow and Parquet release the GIL while they decode)."""
from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of `items` in order, produced up to `depth` ahead on a worker thread that starts at once
    (before the first item is asked for); an exception of the producer is raised where its item would have been.
    Stopping early, or never starting, stops the worker."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failed(exc))
            return
        put(_DONE)

    worker = threading.Thread(target=work, daemon=True, name="arrival-read-ahead")
    worker.start()

    def consume() -> Iterator[T]:
        try:
            while (item := ahead.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            worker.join()

    out = consume()
    weakref.finalize(out, stop.set)  # a consumer dropped before its first item never runs its `finally`
    return out

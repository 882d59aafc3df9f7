"""A child process compiles kernels into numba's on-disk cache while the run does something else (loads Dagster,
runs S0–S1; numba's compiler holds the GIL, so a thread would only take turns with the run); before a kernel's
first call the run waits for the phase that compiles it and then loads the kernel from the cache.

This module knows no kernel: its callers name what to compile as `Phase`s (the pipeline its RNG kernels, the
check evaluation its check kernels), the child runs them in order and prints each phase's name when it is done,
and `wait(name)` returns once that line is read, the child has ended, or `warmup_wait_seconds` have passed (the
run then compiles for itself: only time is at stake, never a value).
"""
from __future__ import annotations

import importlib
import json
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import contracts


@dataclass(frozen=True)
class Phase:
    """What one phase compiles: `target` ("module:function") is called in the child with `args`; `kernels` are the
    numba dispatchers it compiles, so a phase whose kernels are all cached needs no child."""

    name: str
    target: str
    args: tuple[str, ...] = ()
    kernels: tuple = ()


_lock = threading.Lock()
_child: subprocess.Popen | None = None
_pending: list[str] = []  # names of the child's phases not yet reported done, in order


def cached(kernel: object) -> bool:
    """Whether numba's on-disk cache holds a fresh index for a kernel (numba's internals: False when in doubt)."""
    try:
        return bool(kernel._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - numba's cache internals differ: treat the kernel as not cached
        return False


def start(phases: Sequence[Phase]) -> None:
    """Start a child compiling `phases` in order, unless numba's cache already holds every kernel they name."""
    global _child
    todo = [phase for phase in phases if not all(cached(kernel) for kernel in phase.kernels)]
    if not todo:
        return
    spec = json.dumps([[phase.name, phase.target, list(phase.args)] for phase in phases])
    with _lock:
        if _child is None:
            _pending[:] = [phase.name for phase in todo]
            _child = subprocess.Popen([sys.executable, "-m", __name__, spec], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def wait(name: str) -> None:
    """Let a compiling child finish the phase `name` before this process calls one of its kernels."""
    global _child
    if _child is None or name not in _pending:
        return
    timeout = contracts.runtime_settings()["warmup_wait_seconds"]
    deadline = time.monotonic() + timeout
    with _lock:
        child = _child
        while child is not None and name in _pending:
            ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # still compiling after the wait: the run compiles this phase's kernels for itself
                del _pending[:_pending.index(name) + 1]
                return  # the child is left to finish (or to `stop`)
            line = child.stdout.readline().decode().strip()
            if not line:  # the child ended (a failed one too: the run compiles whatever is missing)
                _pending.clear()
            elif line in _pending:
                del _pending[:_pending.index(line) + 1]
        if child is not None and not _pending:
            try:
                child.wait(timeout=timeout)  # its last phase is done: it is exiting
            except subprocess.TimeoutExpired:
                pass
            child.stdout.close()
            _child = None


def stop() -> None:
    """End a child still compiling when the command is done (it needed none of the kernels)."""
    global _child
    with _lock:
        child, _child = _child, None
        _pending.clear()
    if child is not None:
        if child.poll() is None:
            child.terminate()
            child.wait()
        child.stdout.close()


def _run(spec: str) -> None:
    """The child: call each phase's target and print its name when it returns."""
    for name, target, args in json.loads(spec):
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(*args)
        sys.stdout.buffer.write(f"{name}\n".encode())
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        _run(sys.argv[1])
    except (Exception, KeyboardInterrupt):  # noqa: BLE001 - the run compiles whatever is missing itself
        sys.exit(1)

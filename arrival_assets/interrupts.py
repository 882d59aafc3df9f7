"""Exit statuses of `arrival` commands and the handling of SIGINT / SIGTERM: stop at once, keep nothing partial.

A signal raises `Interrupted` (a KeyboardInterrupt: every open transaction aborts and removes its temp files).
Inside a Dagster run, Dagster's own handler turns the signal into an interrupted step and ends the run; the
signal is still recorded through the wake-up fd, so `raise_if_signalled` stops the command before it starts
anything more, and it exits 130 / 143.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

EXIT_OK = 0
EXIT_CHECKS_FAILED = 1  # only blocking checks failed
EXIT_FAILURE = 2  # a coded failure: identity, input, policy, I/O, conflict
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Interrupted(KeyboardInterrupt):
    """The command was interrupted by a signal; carries the exit status that reports it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


_wakeup: dict[str, int] = {}  # the read end of the wake-up pipe while `stopping_on_signals` is active


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread while the block runs, and are recorded."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    _wakeup["fd"] = read_fd
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(signalled() or signal.SIGINT) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        _wakeup.pop("fd", None)
        os.close(read_fd)
        os.close(write_fd)


def signalled() -> int | None:
    """The first SIGINT / SIGTERM received since the last call (None if none), from the wake-up pipe."""
    fd = _wakeup.get("fd")
    if fd is None:
        return None
    try:
        data = os.read(fd, 512)
    except BlockingIOError:
        return None
    return next((b for b in data if b in (signal.SIGINT, signal.SIGTERM)), None)


def raise_if_signalled(interrupted: bool = False) -> None:
    """Raise `Interrupted` if a signal arrived (or a run reports it was interrupted): start nothing more."""
    signum = signalled()
    if signum is not None or interrupted:
        raise Interrupted(signum or signal.SIGINT)


def worst_status(statuses: Sequence[int]) -> int:
    """The exit status of several runs: an interrupt's, else a coded failure's, else failed checks', else 0."""
    for status in (EXIT_SIGINT, EXIT_SIGTERM, EXIT_FAILURE, EXIT_CHECKS_FAILED):
        if status in statuses:
            return status
    return max(statuses, default=EXIT_OK)

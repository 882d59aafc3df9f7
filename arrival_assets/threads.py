"""`--threads N` of `arrival run` and `arrival bench`: the engine's worker threads for this process and the
processes it starts."""
from __future__ import annotations

import argparse
import os


def _threads(text: str) -> int:
    """A `--threads` value: a positive integer (argparse reports anything else as a usage error)."""
    from arrival_core.parallel import parse_threads

    try:
        return parse_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--threads N`: worker threads of the engine (default $ARRIVAL_THREADS, else the CPUs this process may use)."""
    parser.add_argument("--threads", type=_threads, metavar="N",
                        help="worker threads (default $ARRIVAL_THREADS, else the CPUs this process may use); "
                             "no output depends on it")


def use_threads(count: int | None) -> None:
    """Apply `--threads` to this process and to the processes it starts (through $ARRIVAL_THREADS)."""
    from arrival_core import parallel

    if count is not None:
        os.environ[parallel.ENV] = str(count)
    parallel.set_threads(count)

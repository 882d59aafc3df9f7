"""What `arrival run` shows while it works: a line as each step (the sealed inputs, a state with its checks)
starts and ends (with elapsed seconds), where a state's step spent its time (the state, its pictures, its checks),
and the rows S2 and S3 have streamed — a tqdm bar when stderr is a
terminal, else a line per progress event (about one a second).

It is a Dagster logger: the step log carries the same events and progress lines (see `assets.states`), so the
UI shows what the terminal shows. tqdm comes with Dagster, and draws a clean bar on a terminal while degrading
to nothing on a pipe; this module prints plain lines there instead.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import dagster as dg
from tqdm import tqdm

from .assets.outcomes import PROGRESS_PREFIX, TIMES_PREFIX

EVENTS = {"STEP_START": "started", "STEP_SUCCESS": "done", "STEP_FAILURE": "failed"}


class StepLines(logging.Handler):
    """Prints step starts and ends and streaming progress of a run to a text stream."""

    def __init__(self, stream: TextIO, partition: str) -> None:
        super().__init__(logging.DEBUG)
        self.stream, self.partition = stream, partition
        self.started = time.perf_counter()
        self.bar: tqdm | None = None
        self.tty = stream.isatty()

    def _line(self, text: str) -> None:
        self._close_bar()
        print(f"{time.perf_counter() - self.started:7.1f} s  {self.partition}  {text}", file=self.stream,
              flush=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _progress(self, text: str) -> None:
        state, _, counts = text.removeprefix(PROGRESS_PREFIX).partition(": ")
        done, _, total = counts.removesuffix(" rows").partition(" / ")
        done_rows, total_rows = int(done.replace(",", "")), int(total.replace(",", ""))
        if not self.tty:
            self._line(f"{state}: {done_rows:,} / {total_rows:,} rows")
            return
        if self.bar is None:
            self.bar = tqdm(total=total_rows, desc=f"{self.partition} {state}", unit=" rows", unit_scale=True,
                            file=self.stream, leave=False)
        self.bar.update(done_rows - self.bar.n)

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict):
            return
        event = meta.get("dagster_event")
        if event is not None and event.event_type_value in EVENTS:
            self._line(f"{meta.get('step_key') or event.step_key:<40} {EVENTS[event.event_type_value]}")
        elif str(meta.get("orig_message", "")).startswith(PROGRESS_PREFIX):
            self._progress(meta["orig_message"])
        elif str(meta.get("orig_message", "")).startswith(TIMES_PREFIX):
            self._line(f"{meta.get('step_key') or '':<40} {meta['orig_message']}")

    def close(self) -> None:
        self._close_bar()
        super().close()


@dg.logger(config_schema={"partition": dg.Field(str, default_value="")},
           description="Step starts and ends and S2/S3 progress on stderr (used by `arrival run`).")
def step_progress(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The logger `arrival run` adds to a run unless --quiet."""
    logger = logging.getLogger(f"arrival.progress.{id(init_context)}")
    logger.setLevel(logging.DEBUG)  # step events are logged at DEBUG
    logger.propagate = False
    logger.handlers = [StepLines(sys.stderr, init_context.logger_config["partition"])]
    return logger


def run_config(partition: str, *, quiet: bool) -> dict:
    """Loggers of a run of `arrival run`: Dagster's console silenced, step lines unless quiet."""
    loggers: dict = {"console": {"config": {"log_level": "CRITICAL"}}}
    if not quiet:
        loggers["progress"] = {"config": {"partition": partition}}
    return {"loggers": loggers}

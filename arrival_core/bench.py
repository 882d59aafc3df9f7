"""The benchmark: S0–S3 and the audit through `pipeline` on one world and seed, timed per state (wall, CPU, RSS)."""
from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from . import pipeline
from .store import Store

TARGET_SECONDS = 60.0  # DESIGN §12, reference world, S0–S3
TARGET_RSS_BYTES = 8 * 2**30


@dataclass(frozen=True)
class StateTiming:
    """One state over every scenario: rows of its main output, wall and CPU seconds, process peak RSS after it."""

    state: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class BenchResult:
    """A benchmark run: which world and law, each state's timing, and the S0–S3 total against the targets."""

    profile: str
    count_law: str
    seed: int
    scenarios: tuple[str, ...]
    states: tuple[StateTiming, ...]

    @property
    def s0_s3_seconds(self) -> float:
        return sum(t.seconds for t in self.states if t.state != "AUDIT")

    @property
    def peak_rss_bytes(self) -> int:
        return max(t.peak_rss_bytes for t in self.states)

    def to_dict(self) -> dict:
        """A JSON-ready record (a log of one measurement, not an identity output)."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "states"},
            "scenarios": list(self.scenarios),
            "states": [asdict(t) | {"rows_per_second": round(t.rows_per_second, 1)} for t in self.states],
            "s0_s3_seconds": round(self.s0_s3_seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "targets": {"s0_s3_seconds": TARGET_SECONDS, "peak_rss_bytes": TARGET_RSS_BYTES},
            "met": self.s0_s3_seconds <= TARGET_SECONDS and self.peak_rss_bytes <= TARGET_RSS_BYTES,
            "cpu_count": os.cpu_count(),
        }


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_bench(store: Store, *, profile: str, count_law: str, seed: int, scenarios: Sequence[str]) -> BenchResult:
    """Run every state for every scenario in order, summing each state's time over the scenarios."""
    timings = []
    for state in pipeline.STATES:
        rows, wall, cpu = 0, 0.0, 0.0
        for sid in scenarios:
            start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
            result = state.runner(store, seed=seed, scenario_id=sid)
            wall += time.perf_counter() - start_wall
            cpu += _cpu_seconds() - start_cpu
            if state.measured_by is None:
                rows += sum(v["events"] for k, v in result.report["metrics"].items()
                            if isinstance(v, dict) and "events" in v)
            else:
                rows += next(p.rows or 0 for p in result.published if p.dataset_id == state.measured_by)
        timings.append(StateTiming(state.code, rows, round(wall, 3), round(cpu, 3), _peak_rss_bytes()))
    return BenchResult(profile, count_law, seed, tuple(scenarios), tuple(timings))


def format_table(result: BenchResult) -> str:
    """The per-state table the CLI prints."""
    lines = [(f"bench {result.profile} · count law {result.count_law} · seed {result.seed} · "
              f"scenarios {', '.join(result.scenarios)}"),
             f"{'state':<6} {'rows':>12} {'seconds':>9} {'cpu s':>8} {'rows/s':>12} {'peak RSS':>10}"]
    for t in result.states:
        lines.append(f"{t.state:<6} {t.rows:>12,} {t.seconds:>9.2f} {t.cpu_seconds:>8.2f} {t.rows_per_second:>12,.0f} "
                     f"{t.peak_rss_bytes / 2**30:>8.2f} GiB")
    verdict = "met" if result.to_dict()["met"] else "NOT met"
    lines.append(f"S0–S3 {result.s0_s3_seconds:.2f} s wall, peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB "
                 f"(reference-world targets {TARGET_SECONDS:.0f} s, {TARGET_RSS_BYTES / 2**30:.0f} GiB: {verdict})")
    return "\n".join(lines)

"""The benchmark: S0–S3 and the audit through `pipeline` on one world and seed, timed per state (wall, CPU, RSS),
plus rows for the user's paths measured by the caller (the engine as a process of its own, a partition through
Dagster, its verified re-run), each as a multiple of the engine process's wall time."""
from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .parallel import available_cpus, thread_count

STREAMED = ("S2", "S3")  # the states that stream a partition's rows on every core
ENGINE_PROCESS = "engine process"  # one partition's S0–S3 and audit in a process of its own: the paths' yardstick
DAGSTER_PARTITION, DAGSTER_PAIR, VERIFIED = "dagster partition", "two partitions at once", "verified re-run"

if TYPE_CHECKING:  # the engine is imported when a bench runs, not when the command line is parsed
    from .store import Store


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

    @property
    def cores_busy(self) -> float:
        """CPU seconds over wall seconds: how many cores the state kept busy on average."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PathTiming:
    """A user's path through the system (e.g. one partition through the Dagster graph): wall seconds, peak RSS,
    the partitions it realised, and the CPU seconds its checks took (when its steps reported them)."""

    name: str
    seconds: float
    peak_rss_bytes: int
    partitions: int = 1
    checks_cpu_seconds: float | None = None


@dataclass(frozen=True)
class BenchResult:
    """A benchmark run: which world and variant, each state's timing, the user paths, and the targets."""

    world: str
    variant: str
    seed: int
    scenarios: tuple[str, ...]
    states: tuple[StateTiming, ...]
    targets: dict
    paths: tuple[PathTiming, ...] = field(default=())
    threads: int = 1

    @property
    def s0_s3_seconds(self) -> float:
        return sum(t.seconds for t in self.states if t.state != "AUDIT")

    @property
    def engine_cpu_seconds(self) -> float:
        return sum(t.cpu_seconds for t in self.states if t.state != "AUDIT")

    @property
    def peak_rss_bytes(self) -> int:
        return max([t.peak_rss_bytes for t in self.states] + [p.peak_rss_bytes for p in self.paths])

    def engine_seconds_per_partition(self) -> float:
        return self.s0_s3_seconds / max(1, len(self.scenarios))

    def engine_cpu_seconds_per_partition(self) -> float:
        return self.engine_cpu_seconds / max(1, len(self.scenarios))

    def engine_process_seconds(self) -> float | None:
        """Wall seconds of the engine process (spawn to exit, one partition), the yardstick of every path's
        ratio; None when it was not measured, and then no path has a ratio (the in-process S0–S3 seconds leave
        out the start-up and the audit a user's process pays)."""
        engine = next((p for p in self.paths if p.name == ENGINE_PROCESS), None)
        return engine.seconds if engine is not None and engine.seconds > 0 else None

    def ratio_to_engine(self, path: PathTiming) -> float | None:
        """A path's wall seconds per partition over the engine process's wall seconds."""
        engine = self.engine_process_seconds()
        return None if engine is None else path.seconds / path.partitions / engine

    def verdicts(self) -> dict[str, bool]:
        """Each target against what was measured (a path target only when that path was measured)."""
        t = self.targets
        out = {"engine_seconds": self.s0_s3_seconds <= t["engine_seconds"],
               "peak_rss_gib": self.peak_rss_bytes <= t["peak_rss_gib"] * 2**30}
        streams = [s for s in self.states if s.state in STREAMED]
        if streams:
            out["stream_cores_busy"] = all(s.cores_busy >= t["stream_cores_busy"] for s in streams)
        by_name = {p.name: p for p in self.paths}
        if DAGSTER_PARTITION in by_name:
            one = by_name[DAGSTER_PARTITION]
            if (ratio := self.ratio_to_engine(one)) is not None:
                out["dagster_ratio"] = ratio <= t["dagster_ratio"]
            if one.checks_cpu_seconds is not None:  # against the in-process engine's CPU: no start-up in either
                out["checks_cpu_share"] = one.checks_cpu_seconds <= \
                    t["checks_cpu_share"] * self.engine_cpu_seconds_per_partition()
        if DAGSTER_PAIR in by_name and (ratio := self.ratio_to_engine(by_name[DAGSTER_PAIR])) is not None:
            out["dagster_pair_ratio"] = ratio <= t["dagster_pair_ratio"]
        if VERIFIED in by_name:
            out["verified_seconds"] = by_name[VERIFIED].seconds <= t["verified_seconds"]
        return out

    def to_dict(self) -> dict:
        """A JSON-ready record (a log of one measurement, not an identity output)."""
        ratios = [self.ratio_to_engine(p) for p in self.paths]
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("states", "paths")},
            "scenarios": list(self.scenarios),
            "states": [asdict(t) | {"rows_per_second": round(t.rows_per_second, 1)} for t in self.states],
            "paths": [asdict(p) | {"ratio_to_engine": None if r is None else round(r, 3)}
                      for p, r in zip(self.paths, ratios, strict=True)],
            "s0_s3_seconds": round(self.s0_s3_seconds, 3),
            "engine_process_seconds": self.engine_process_seconds(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "met": self.verdicts(),
            "cpu_count": os.cpu_count(),
            "available_cpus": available_cpus(),
        }


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """CPU seconds this process has used so far, every thread (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_bench(store: Store, *, world: str, variant: str, seed: int, scenarios: Sequence[str]) -> BenchResult:
    """Run every state for every scenario in order, summing each state's time over the scenarios."""
    from . import pipeline
    from .identity import PartitionKey

    threads = thread_count()
    keys = [PartitionKey(seed, sid) for sid in scenarios]  # validated once, where the bench takes them
    timings = []
    for state in pipeline.STATES:
        rows, wall, cpu = 0, 0.0, 0.0
        for key in keys:
            start_wall, start_cpu = time.perf_counter(), cpu_seconds()
            result = state.runner(store, key)
            wall += time.perf_counter() - start_wall
            cpu += cpu_seconds() - start_cpu
            if state.measured_by is None:
                rows += sum(v["events"] for k, v in result.report["metrics"].items()
                            if isinstance(v, dict) and "events" in v)
            else:
                rows += next(p.rows or 0 for p in result.published if p.dataset_id == state.measured_by)
        timings.append(StateTiming(state.code, rows, round(wall, 3), round(cpu, 3), peak_rss_bytes()))
    targets = pipeline.read_config(store, "bench_targets")
    return BenchResult(world, variant, seed, tuple(scenarios), tuple(timings), targets, threads=threads)


def format_table(result: BenchResult) -> str:
    """The table the CLI prints: per state, then the user paths with their ratio to the engine process (per
    partition), then verdicts."""
    lines = [(f"bench {result.world} · {result.variant} · seed {result.seed} · scenarios "
              f"{', '.join(result.scenarios)} · {result.threads} thread(s)"),
             f"{'state':<22} {'rows':>12} {'seconds':>9} {'cpu s':>8} {'cores':>6} {'rows/s':>12} {'peak RSS':>10}"]
    for t in result.states:
        lines.append(f"{t.state:<22} {t.rows:>12,} {t.seconds:>9.2f} {t.cpu_seconds:>8.2f} {t.cores_busy:>6.2f} "
                     f"{t.rows_per_second:>12,.0f} {t.peak_rss_bytes / 2**30:>8.2f} GiB")
    engine_cpu = result.engine_cpu_seconds_per_partition()
    for p in result.paths:
        ratio = result.ratio_to_engine(p)
        per = "" if ratio is None else f"{ratio:.2f}× engine" + (" each" if p.partitions > 1 else "")
        checks = "" if p.checks_cpu_seconds is None else \
            f" · checks {p.checks_cpu_seconds:.2f} CPU s ({p.checks_cpu_seconds / engine_cpu:.0%} of the engine's)"
        lines.append(f"{p.name:<22} {'':>12} {p.seconds:>9.2f} {'':>8} {'':>6} {per:>12} "
                     f"{p.peak_rss_bytes / 2**30:>8.2f} GiB{checks}")
    t = result.targets
    verdicts = ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in result.verdicts().items())
    lines.append(f"S0–S3 {result.s0_s3_seconds:.2f} s wall, peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB · "
                 f"targets (config/bench_targets.yaml): engine ≤ {t['engine_seconds']:g} s, RSS ≤ "
                 f"{t['peak_rss_gib']:g} GiB, S2 and S3 ≥ {t['stream_cores_busy']:g} cores busy, one partition through "
                 f"Dagster ≤ {t['dagster_ratio']:g}× the engine process, two at once ≤ {t['dagster_pair_ratio']:g}× "
                 f"each, checks ≤ {t['checks_cpu_share']:.0%} of the engine's CPU (S0–S3 in process), verified ≤ "
                 f"{t['verified_seconds']:g} s · {verdicts}")
    return "\n".join(lines)

"""The bench's arithmetic on made-up timings: every path's ratio is to the engine process's wall seconds (the
engine as a user's process, start-up and audit included), the checks' CPU share to the in-process engine's CPU
seconds per partition (no timing is measured here)."""
from __future__ import annotations

import pytest

from arrival_core import bench
from arrival_core.bench import BenchResult, PathTiming, StateTiming, format_table

TARGETS = {"engine_seconds": 12.0, "peak_rss_gib": 3.0, "stream_cores_busy": 1.8, "dagster_ratio": 1.5,
           "dagster_pair_ratio": 1.3, "checks_cpu_share": 0.25, "verified_seconds": 5.0}
GIB = 2**30


def _result(paths: tuple[PathTiming, ...], scenarios: tuple[str, ...] = ("baseline_v1",)) -> BenchResult:
    """S0–S3 in process: 10 s wall and 16 CPU s over the scenarios (the audit's 1 s and 1 CPU s count in neither)."""
    states = (StateTiming("S0", 10, 0.5, 0.5, GIB), StateTiming("S1", 100, 1.5, 1.5, GIB),
              StateTiming("S2", 1000, 4.0, 7.0, GIB), StateTiming("S3", 1000, 4.0, 7.0, GIB),
              StateTiming("AUDIT", 0, 1.0, 1.0, GIB))
    return BenchResult("reference", "poisson", 42, scenarios, states, TARGETS, paths, threads=2)


def test_the_dagster_ratios_are_to_the_engine_process_not_to_the_in_process_seconds():
    """Engine process 20 s against 10 s in process: one partition in 28 s is 1.4× the process (met; 2.8× the
    in-process seconds would not be), two at once in 50 s are 1.25× each (met; 2.5× would not be)."""
    result = _result((PathTiming(bench.ENGINE_PROCESS, 20.0, GIB), PathTiming(bench.DAGSTER_PARTITION, 28.0, GIB),
                      PathTiming(bench.DAGSTER_PAIR, 50.0, GIB, partitions=2), PathTiming(bench.VERIFIED, 3.0, GIB)))
    assert result.engine_seconds_per_partition() == 10.0 and result.engine_process_seconds() == 20.0
    met = result.verdicts()
    assert met["dagster_ratio"] and met["dagster_pair_ratio"] and met["verified_seconds"]
    doc = result.to_dict()
    assert doc["engine_process_seconds"] == 20.0 and doc["s0_s3_seconds"] == 10.0
    assert [(p["name"], p["ratio_to_engine"]) for p in doc["paths"]] == [
        (bench.ENGINE_PROCESS, 1.0), (bench.DAGSTER_PARTITION, 1.4), (bench.DAGSTER_PAIR, 1.25),
        (bench.VERIFIED, 0.15)]
    rows = {line.split("  ")[0]: line for line in format_table(result).splitlines()}
    assert "1.40× engine" in rows[bench.DAGSTER_PARTITION] and "1.25× engine each" in rows[bench.DAGSTER_PAIR]
    assert "1.00× engine" in rows[bench.ENGINE_PROCESS] and "20.00" in rows[bench.ENGINE_PROCESS]


def test_a_slower_partition_than_the_engine_process_allows_is_not_met_even_within_the_in_process_target():
    """Engine process 5 s against 10 s in process: one partition in 10 s is 2× the process (not met, though 1×
    the in-process seconds), two at once in 14 s are 1.4× each (not met, though 0.7×)."""
    result = _result((PathTiming(bench.ENGINE_PROCESS, 5.0, GIB), PathTiming(bench.DAGSTER_PARTITION, 10.0, GIB),
                      PathTiming(bench.DAGSTER_PAIR, 14.0, GIB, partitions=2)))
    met = result.verdicts()
    assert met["dagster_ratio"] is False and met["dagster_pair_ratio"] is False
    assert [p["ratio_to_engine"] for p in result.to_dict()["paths"]] == [1.0, 2.0, 1.4]
    assert "2.00× engine" in format_table(result) and "1.40× engine each" in format_table(result)


def test_without_the_engine_process_no_path_has_a_ratio_or_a_dagster_verdict():
    result = _result((PathTiming(bench.DAGSTER_PARTITION, 28.0, GIB),
                      PathTiming(bench.DAGSTER_PAIR, 50.0, GIB, partitions=2)))
    assert result.engine_process_seconds() is None
    assert "dagster_ratio" not in result.verdicts() and "dagster_pair_ratio" not in result.verdicts()
    doc = result.to_dict()
    assert doc["engine_process_seconds"] is None and [p["ratio_to_engine"] for p in doc["paths"]] == [None, None]
    assert "×" not in "\n".join(format_table(result).splitlines()[1:-1])  # no ratio in the rows


@pytest.mark.parametrize(("checks_cpu", "met"), [(3.9, True), (4.1, False)])
def test_the_checks_cpu_share_is_to_the_in_process_engine_cpu_per_partition(checks_cpu: float, met: bool):
    """16 CPU s of S0–S3 in process: 25 % is 4 CPU s for one scenario and 2 per partition for two (so the base
    is neither every scenario's CPU seconds nor the engine process's 100 wall seconds)."""
    one = _result((PathTiming(bench.ENGINE_PROCESS, 100.0, GIB),
                   PathTiming(bench.DAGSTER_PARTITION, 1.0, GIB, 1, checks_cpu)))
    assert one.verdicts()["checks_cpu_share"] is met  # 25 % of 16 CPU s = 4
    two = _result(one.paths, scenarios=("baseline_v1", "stress_v1"))
    assert two.verdicts()["checks_cpu_share"] is False  # 25 % of 8 CPU s per partition = 2
    assert f"({checks_cpu / 16:.0%} of the engine's)" in format_table(one)
    assert f"({checks_cpu / 8:.0%} of the engine's)" in format_table(two)

"""`arrival status`: the terminal view of the asset-check dashboard, read from the Dagster instance alone.

One row per registered (scenario, seed) partition: the state of each step (S0 gate … RNG audit) and the
latest results of every check for that partition. Nothing under the run root is read.

A state is `failed` when its step failed in the run of the latest attempt at one of its required outputs,
`running` while that run is unfinished, `materialized` when each required output has a materialisation for the
partition, and `missing` otherwise (never run, or not reached because an upstream step failed).

Queries: two per asset (all partitions at once), one for the runs of unmaterialised attempts, one per failed
run (its failed steps), one for the check results of every partition, one per partition with a failed check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from arrival_core import checks as core_checks
from arrival_core import contracts, pipeline
from arrival_core.identity import PartitionKey, validate_seed

from .checks import asset_key_of
from .partitions import SCENARIO_DIMENSION, SEED_DIMENSION, partition_key

MATERIALIZED = "materialized"
MISSING = "missing"
FAILED = "failed"
RUNNING = "running"
STATE_NAMES: tuple[str, ...] = tuple(state.name for state in pipeline.STATES)
RUN_FETCH_BATCH = 100
UNFINISHED_RUN_STATUSES = frozenset(
    {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.MANAGED,
    }
)

Printer = Callable[[str], None]
# Printed under the table: what its cells mean.
STATUS_KEY = ("key: a state is materialized | failed | running | missing (never run, not reached, or interrupted); "
              "passed / failed / warned count the checks by their latest result (failed: ERROR, blocks; warned: "
              "WARN, never blocks)")


@dataclass(frozen=True)
class PartitionStatus:
    """What the instance records for one (scenario, seed) partition."""

    key: str  # the grid key, "<scenario>|<seed>"
    seed: str
    scenario_id: str
    states: dict[str, str]  # state name (s0_gate … rng_audit) -> materialized | failed | running | missing
    checks_passed: int = 0
    checks_failed: int = 0  # ERROR checks whose latest evaluation failed
    checks_warned: int = 0  # WARN checks whose latest evaluation failed
    checks_not_run: int = 0  # planned in the latest run but never evaluated (an upstream step failed)
    failed_checks: tuple[str, ...] = field(default=())  # "asset:check" of each failed ERROR check
    warned_checks: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """Every state materialised and no ERROR check failing."""
        return all(s == MATERIALIZED for s in self.states.values()) and not self.checks_failed


def required_outputs(state: pipeline.State) -> tuple[str, ...]:
    """The outputs a state must publish (the optional diagnostic outputs excluded)."""
    return tuple(out for out in state.outputs if not contracts.dataset(out).optional)


def check_keys() -> list[dg.AssetCheckKey]:
    """The key of every check of the graph, in the order of the core catalogue."""
    keys = (dg.AssetCheckKey(asset_key_of(spec.dataset_id), spec.name) for spec in core_checks.CHECKS)
    return list(dict.fromkeys(keys))


def _seed_order(seed: str) -> tuple[int, int | str]:
    return (0, int(seed)) if seed.isdigit() else (1, seed)


def registered_partitions(
    instance: dg.DagsterInstance, *, seed: str | None = None
) -> list[tuple[str, str, str]]:
    """(grid key, seed, scenario) of each registered partition (or one seed's), by seed then scenario."""
    seeds = sorted(instance.get_dynamic_partitions(SEED_DIMENSION), key=_seed_order)
    scenarios = sorted(instance.get_dynamic_partitions(SCENARIO_DIMENSION))
    if seed is not None:
        wanted = str(validate_seed(seed))
        seeds = [s for s in seeds if s == wanted]
    return [(str(partition_key(PartitionKey(s, sid))), s, sid) for s in seeds for sid in scenarios]


def _run_statuses(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> dict[str, dg.DagsterRunStatus]:
    to_fetch = sorted(set(run_ids))
    statuses: dict[str, dg.DagsterRunStatus] = {}
    for start in range(0, len(to_fetch), RUN_FETCH_BATCH):
        chunk = to_fetch[start : start + RUN_FETCH_BATCH]
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=chunk)):
            statuses[run.run_id] = run.status
    return statuses


def _failed_steps(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> dict[str, set[str]]:
    """Run -> the keys of its steps that failed (a state's step key is the state's name)."""
    return {
        run_id: {
            event.step_key
            for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            if event.step_key
        }
        for run_id in sorted(set(run_ids))
    }


def output_status(instance: dg.DagsterInstance, outputs: Sequence[str]) -> dict[str, dict[str, str]]:
    """Asset -> partition -> materialized | failed | running, for partitions with anything recorded.

    The latest attempt decides: an attempt without a later materialisation is `failed` when the step of the
    state publishing the asset failed in that run, `running` while that run is unfinished; otherwise (the step
    was never reached, the run was cancelled, or an optional output was skipped) any earlier materialisation
    stands.
    """
    materialized: dict[str, set[str]] = {}
    attempts: dict[str, dict[str, str]] = {}  # asset -> partition -> run of its latest unmaterialised attempt
    storage = instance.event_log_storage
    for out in outputs:
        key = dg.AssetKey(out)
        materialized[out] = instance.get_materialized_partitions(key)
        latest = storage.get_latest_asset_partition_materialization_attempts_without_materializations(key)
        attempts[out] = {partition: run_id for partition, (run_id, _event_id) in latest.items()}
    runs = _run_statuses(instance, (r for latest in attempts.values() for r in latest.values()))
    failed_runs = [r for r, status in runs.items() if status == dg.DagsterRunStatus.FAILURE]
    failed_steps = _failed_steps(instance, failed_runs)
    status: dict[str, dict[str, str]] = {}
    for out in outputs:
        step = pipeline.state_of_output(out).name
        status[out] = dict.fromkeys(materialized[out], MATERIALIZED)
        for partition, run_id in attempts[out].items():
            if runs.get(run_id) in UNFINISHED_RUN_STATUSES:
                status[out][partition] = RUNNING
            elif step in failed_steps.get(run_id, ()):
                status[out][partition] = FAILED
    return status


def state_status(outputs: Mapping[str, Mapping[str, str]], state: pipeline.State, partition: str) -> str:
    """A state's status for one partition from its required outputs' statuses."""
    found = [outputs[out].get(partition, MISSING) for out in required_outputs(state)]
    for status in (RUNNING, FAILED):
        if status in found:
            return status
    return MATERIALIZED if found and all(s == MATERIALIZED for s in found) else MISSING


def _check_name(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def check_results(
    instance: dg.DagsterInstance, partitions: Sequence[str], keys: Sequence[dg.AssetCheckKey]
) -> dict[str, dict[str, list[str]]]:
    """Partition -> passed | failed | warned | not_run -> the checks so at their latest execution."""
    out: dict[str, dict[str, list[str]]] = {
        p: {"passed": [], "failed": [], "warned": [], "not_run": []} for p in partitions
    }
    if not partitions or not keys:
        return out
    storage = instance.event_log_storage
    with_failures: dict[str, list[dg.AssetCheckKey]] = {}
    for info in storage.get_asset_check_partition_info(list(keys), partition_keys=list(partitions)):
        if info.partition_key not in out:
            continue
        if info.latest_execution_status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            out[info.partition_key]["passed"].append(_check_name(info.check_key))
        elif info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
            with_failures.setdefault(info.partition_key, []).append(info.check_key)
        else:
            out[info.partition_key]["not_run"].append(_check_name(info.check_key))
    for partition, failed in with_failures.items():  # the severity is on the evaluation event
        records = storage.get_latest_asset_check_execution_by_key(
            failed, partition_filter=PartitionKeyFilter(key=partition)
        )
        for check_key in failed:
            record = records.get(check_key)
            evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
            warned = getattr(evaluation, "severity", None) == dg.AssetCheckSeverity.WARN
            out[partition]["warned" if warned else "failed"].append(_check_name(check_key))
    return out


def partition_status(instance: dg.DagsterInstance, *, seed: str | None = None) -> list[PartitionStatus]:
    """The status of every registered partition (or one seed's), by seed then scenario."""
    partitions = registered_partitions(instance, seed=seed)
    keys = [key for key, _, _ in partitions]
    outputs = output_status(instance, [out for state in pipeline.STATES for out in required_outputs(state)])
    checks = check_results(instance, keys, check_keys())
    rows = []
    for key, seed_key, scenario_id in partitions:
        results = checks[key]
        rows.append(
            PartitionStatus(
                key=key,
                seed=seed_key,
                scenario_id=scenario_id,
                states={state.name: state_status(outputs, state, key) for state in pipeline.STATES},
                checks_passed=len(results["passed"]),
                checks_failed=len(results["failed"]),
                checks_warned=len(results["warned"]),
                checks_not_run=len(results["not_run"]),
                failed_checks=tuple(results["failed"]),
                warned_checks=tuple(results["warned"]),
            )
        )
    return rows


def format_status(rows: Sequence[PartitionStatus]) -> list[str]:
    """The table `arrival status` prints: partition × state, then the check counts; failed checks below."""
    if not rows:
        return ["no partitions registered (arrival partitions add --seed N, or arrival run --seed N)"]
    key_width = max(len("partition"), *(len(r.key) for r in rows))
    widths = [max(len(name), len(MATERIALIZED)) for name in STATE_NAMES]
    header = (
        f"{'partition':<{key_width}}  "
        + "  ".join(f"{name:<{w}}" for name, w in zip(STATE_NAMES, widths, strict=True))
        + "  passed  failed  warned"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "  ".join(f"{row.states[name]:<{w}}" for name, w in zip(STATE_NAMES, widths, strict=True))
        counts = "  ".join(f"{n:>6}" for n in (row.checks_passed, row.checks_failed, row.checks_warned))
        line = f"{row.key:<{key_width}}  {cells}  {counts}"
        if row.checks_not_run:
            line += f"  ({row.checks_not_run} not run)"
        lines.append(line)
        lines.extend(f"{'':<{key_width}}    FAILED {name}" for name in row.failed_checks)
        lines.extend(f"{'':<{key_width}}    WARN   {name}" for name in row.warned_checks)
    complete = sum(r.complete for r in rows)
    failing = sum(any(s == FAILED for s in r.states.values()) or bool(r.checks_failed) for r in rows)
    lines.append(STATUS_KEY)
    lines.append(f"{len(rows)} partition(s): {complete} complete, {failing} with failures, "
                 f"{len(rows) - complete - failing} incomplete (a state missing or running: never run, not reached "
                 "or interrupted)")
    return lines


def show_status(*, seed: str | None = None, out: Printer = print) -> int:
    """Print the status table of the instance at $DAGSTER_HOME (the one `arrival run` records into)."""
    from .commands import open_instance, prepare_dagster_home

    with open_instance(prepare_dagster_home()) as instance:
        rows = partition_status(instance, seed=seed)
    if not rows and seed is not None:
        out(f"seed {validate_seed(seed)} has no registered partitions (arrival partitions add --seed {seed})")
        return 0
    for line in format_status(rows):
        out(line)
    return 0

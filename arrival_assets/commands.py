"""The `arrival partitions add`, `run` and `verify` commands (their argument parsing is in cli.py)."""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from arrival_core import checks as core_checks
from arrival_core import memory, pipeline
from arrival_core.errors import IDENTITY_INVALID, ArrivalError
from arrival_core.identity import PartitionKey, validate_scenario_id, validate_seed
from arrival_core.store import Store, read_json

from . import interrupts, liveness, progress
from .checks import asset_of
from .cluster import install_instance_config, launch_partition_run
from .executors import celery_settings
from .jobs import JOB_NAME
from .partitions import partition_key, register_partitions
from .resources import StoreResource
from .run_roots import (
    ensure_seed,
    ensure_world,
    resolve_config_dir,
    resolve_run_root,
    scenarios_for,
)

AUDIT_DATASET = "rng_audit_log_5B"
# The summary is the command's output; the step-by-step event log stays in the instance (and the UI).
BLOCKING_FAILED = "blocking check(s) failed"
CODED = re.compile(r"^(5B\.[A-Z0-9_.]+): ")  # a check that failed because an error with a code was raised
INTERRUPTED_ERRORS = frozenset({"DagsterExecutionInterruptedError", "Interrupted", "KeyboardInterrupt"})

Printer = Callable[[str], None]


def prepare_dagster_home(explicit: str | os.PathLike | None = None) -> Path:
    """$DAGSTER_HOME (default ./.arrival/dagster_home) with the shipped instance config installed when absent
    (a Postgres-backed one when ARRIVAL_PG_URL is set)."""
    return install_instance_config(explicit)


def open_instance(home: Path) -> dg.DagsterInstance:
    """The instance at a home, opened under an exclusive file lock: the first open of a new SQLite instance
    creates its tables, and two `arrival` commands doing that at once would corrupt it."""
    with open(home / ".arrival-open.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return dg.DagsterInstance.from_config(str(home))


@contextmanager
def opening_instance(early: bool) -> Iterator[Callable[[], dg.DagsterInstance]]:
    """A getter of the instance at DAGSTER_HOME, disposed on exit. With `early` it is opened at once on a worker
    thread, overlapping what the caller does first (a new SQLite instance creates its tables: about a second of
    a first run, while the demo world is created); otherwise on first use, so a refused command touches no home."""
    with ThreadPoolExecutor(1, thread_name_prefix="arrival-instance") as pool:
        opened: list[Future] = []

        def start() -> None:
            if not opened:
                opened.append(pool.submit(lambda: open_instance(prepare_dagster_home())))

        def instance() -> dg.DagsterInstance:
            start()
            return opened[0].result()

        if early:
            start()
        try:
            yield instance
        finally:
            if opened and opened[0].exception() is None:
                opened[0].result().dispose()


def add_partitions(
    *, root: str | None, seeds: Sequence[str], scenarios: Sequence[str] | None, out: Printer = print,
    create: bool = True,
) -> int:
    """Register seeds and scenarios (default: the world's) as partitions in the instance at DAGSTER_HOME; an
    absent or empty root gets the demo world only when `create`."""
    seed_keys = [str(validate_seed(s)) for s in seeds]
    store = ensure_world(resolve_run_root(root), create=create)
    scenario_list = scenarios_for(store, scenarios)
    with open_instance(prepare_dagster_home()) as instance:
        added = register_partitions(instance, seed_keys, scenario_list)
    out(f"seeds: {', '.join(seed_keys)} (added: {', '.join(added['seed']) or 'none'})")
    out(f"scenarios: {', '.join(scenario_list)} (added: {', '.join(added['scenario']) or 'none'})")
    return 0


def remove_partitions(*, seeds: Sequence[str] | None, scenarios: Sequence[str] | None, out: Printer = print) -> int:
    """Delete registered seed or scenario keys from the instance at DAGSTER_HOME (such as a scenario added by hand
    that the world does not have); their runs and materialisations stay in the instance's history."""
    from .partitions import remove_partitions as remove

    seed_keys, scenario_keys = list(seeds or []), list(scenarios or [])
    if not seed_keys and not scenario_keys:
        raise ArrivalError(IDENTITY_INVALID, "name a --seed or a --scenario to remove", field="partition")
    with open_instance(prepare_dagster_home()) as instance:
        remove(instance, seed_keys, scenario_keys)
    if seed_keys:
        out(f"seeds removed: {', '.join(seed_keys)}")
    if scenario_keys:
        out(f"scenarios removed: {', '.join(scenario_keys)}")
    return 0


@dataclass
class PartitionRun:
    """What one partition's run did: per-step outcomes, RNG totals, check results and the first error."""

    key: str
    run_id: str
    success: bool
    seconds: float
    materialized: dict[str, dict] = field(default_factory=dict)  # asset -> metadata values
    steps_failed: dict[str, str] = field(default_factory=dict)  # step -> "code: message"
    steps_not_run: list[str] = field(default_factory=list)  # stopped by an upstream failure or blocking check
    error_code: str | None = None
    error: str | None = None  # "code: message" of the first failure that carried a code
    interrupted: bool = False  # a step was stopped by SIGINT / SIGTERM
    tracebacks: dict[str, str] = field(default_factory=dict)  # step -> the failure's traceback (shown with --debug)
    run_failure: str | None = None  # the run's own failure message (e.g. a Celery worker's pool process died)

    @property
    def only_checks_failed(self) -> bool:
        """Whether blocking checks are the run's only failures (exit 1); anything else is exit 2."""
        return (self.error_code is None and bool(self.checks_failed)
                and all(why == BLOCKING_FAILED for why in self.steps_failed.values()))
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)
    rng: dict[str, dict] = field(default_factory=dict)


def _metadata_values(metadata: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _innermost_message(error: object) -> str:
    """The first line of the deepest cause of a step error (the exception the asset body raised)."""
    if error is None:
        return "failed"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return (getattr(error, "message", "") or "failed").strip().splitlines()[0]


def _shorten(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summarise(result: dg.ExecuteInProcessResult, key: str, seconds: float) -> PartitionRun:
    """Collect a partition run's materialisations, failures (with their codes) and check results."""
    run = PartitionRun(key=key, run_id=result.run_id, success=result.success, seconds=seconds)
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        run.materialized[mat.asset_key.to_user_string()] = _metadata_values(mat.metadata)
    for evaluation in result.get_asset_check_evaluations():
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        if evaluation.description and not evaluation.passed:
            name += f" — {_shorten(evaluation.description)}"
        coded = CODED.match(evaluation.description or "") if not evaluation.passed else None
        if coded and evaluation.severity == dg.AssetCheckSeverity.ERROR and run.error_code is None:
            run.error_code, run.error = coded.group(1), _shorten(evaluation.description)  # a coded failure: exit 2
        if evaluation.passed:
            run.checks_passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.WARN:
            run.checks_warned.append(name)
        else:
            run.checks_failed.append(name)
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.error is not None and data.error.cls_name == "DagsterAssetCheckFailedError":
            run.steps_failed[event.step_key] = BLOCKING_FAILED
            continue
        if data.error is not None and data.error.cls_name in INTERRUPTED_ERRORS:
            run.interrupted = True
            run.steps_failed[event.step_key] = "interrupted"
            continue
        if data.error is not None:
            run.tracebacks[event.step_key] = data.error.to_string()
        meta = _metadata_values(data.user_failure_data.metadata) if data.user_failure_data else {}
        code = meta.get("error_code")
        message = meta.get("error_message") or _innermost_message(data.error)
        run.steps_failed[event.step_key] = f"{code}: {message}" if code else message
        if code and run.error_code is None:
            run.error_code, run.error = code, f"{code}: {message}"
    if not run.success:
        failed = [e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"]
        if failed and failed[-1].message:
            run.run_failure = _shorten(failed[-1].message)
    done = {e.step_key for e in result.get_step_success_events()} | set(run.steps_failed)
    run.steps_not_run = [n for n in result.job_def.graph.node_names() if n not in done]
    audit = run.materialized.get(AUDIT_DATASET)
    if audit and audit.get("path"):
        families = read_json(Path(audit["path"])).get("families") or {}
        run.rng = {
            fid: {k: fam.get(k) for k in ("events", "draws", "blocks")}
            for fid, fam in sorted(families.items())
        }
    return run


def format_run(run: PartitionRun) -> list[str]:
    """Render a partition run as the lines `arrival run` prints."""
    status = "PASS" if run.success else "FAIL"
    lines = [f"== {run.key}  {status}  ({run.seconds:.1f} s, run {run.run_id})"]
    sealed = [k for k, m in run.materialized.items() if "present" in m]
    absent = [k for k in sealed if not run.materialized[k]["present"]]
    if sealed:
        lines.append(
            f"   {'sealed':<11}{len(sealed)} inputs verified"
            + (f", optional absent: {', '.join(absent)}" if absent else "")
        )
    step_of = {out: state.name for state in pipeline.STATES for out in state.outputs}
    for asset, meta in run.materialized.items():
        if asset in sealed:
            continue
        rows = meta.get("dagster/row_count")
        rows = f"{rows:,} rows" if isinstance(rows, int) else "—"
        step = step_of.get(asset, "")
        lines.append(f"   {step:<11}{asset:<34}{rows:>16}  sha256 {str(meta.get('digest', ''))[:12]}")
    for fid, totals in run.rng.items():
        lines.append(
            f"   {'rng':<11}{fid:<34}"
            + ", ".join(f"{k} {v:,}" for k, v in totals.items() if isinstance(v, int))
        )
    lines.append(
        f"   checks: {run.checks_passed} passed, {len(run.checks_failed)} failed, "
        f"{len(run.checks_warned)} warned"
        + "".join(f"\n     FAILED {c}" for c in run.checks_failed)
        + "".join(f"\n     WARN   {c}" for c in run.checks_warned)
    )
    for step, why in run.steps_failed.items():
        lines.append(f"   step {step} failed: {why}")
    if run.steps_not_run:
        states = [s.name for s in pipeline.STATES if s.name in run.steps_not_run]
        others = len(run.steps_not_run) - len(states)
        lines.append(
            f"   not run: {', '.join(states) or '—'}" + (f" (and {others} other steps)" if others else "")
        )
    return lines


def already_materialised(instance: dg.DagsterInstance, store: Store, key: PartitionKey) -> bool:
    """Whether a partition needs no run: its files and check results are verified by their records, and the
    instance already holds materialisations of those very files (the same data versions)."""
    try:
        identity = pipeline.resolve_identity(store, key, state="S1")
    except ArrivalError:
        return False
    checked = [(d, pipeline.state_of_output(asset_of(d)).code)
               for d in dict.fromkeys(spec.dataset_id for spec in core_checks.CHECKS)]
    names = {d: [spec.name for spec in core_checks.checks_for(d)] for d, _ in checked}
    digests = pipeline.partition_verified(store, identity, checked, names)
    if digests is None:
        return False
    grid_key = str(partition_key(key))
    for state in pipeline.STATES:
        asset = state.outputs[0]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[grid_key]), limit=1).records
        if not records or records[0].asset_materialization is None or \
                records[0].asset_materialization.tags.get("dagster/data_version") != digests.get(asset):
            return False
    return True


def run_partitions(
    *, root: str | None, seed: str, scenario: str | None, out: Printer = print, err: Printer = print,
    quiet: bool = False, debug: bool = False, create: bool = True,
) -> int:
    """Ensure the world (an absent or empty root gets the demo world only when `create`), register partitions,
    materialise the graph per (scenario, seed); 0 if all pass."""
    from .definitions import build_definitions

    seed_value = validate_seed(seed)
    requested = [validate_scenario_id(scenario)] if scenario is not None else None
    run_root = resolve_run_root(root)
    creating_world = not run_root.exists() or (run_root.is_dir() and not any(run_root.iterdir()))
    if creating_world and not create:
        ensure_world(run_root, create=False)  # refuses, naming the root and --create, before any home is touched
    failures: list[PartitionRun] = []
    with opening_instance(early=creating_world) as opened:
        store = ensure_world(run_root, say=None if quiet else err, create=create)
        scenario_list = scenarios_for(store, requested)  # every identity value is valid before the world is extended
        ensure_seed(store, seed_value)
        resource = StoreResource(run_root=str(run_root))
        job = build_definitions(resource).resolve_job_def(JOB_NAME)
        run_store = Store(run_root=run_root, config_dir=resolve_config_dir())
        if not quiet:
            out(f"run root {run_root}")
        instance = opened()
        for run_id in liveness.fail_dead_runs(instance):
            err(f"marked run {run_id} failed: the process that executed it is gone")
        register_partitions(instance, [str(seed_value)], scenario_list)
        memory.freeze_loaded_objects()  # Dagster, the job and the instance are loaded: the collector leaves them be
        for sid in scenario_list:
            part = PartitionKey(seed_value, sid)
            key = partition_key(part)
            started = time.perf_counter()
            if already_materialised(instance, run_store, part):
                out(f"== {key}  PASS  verified, already materialised ({time.perf_counter() - started:.1f} s; every "
                    f"file matches its commit record and every check its record: no run launched)")
                continue
            if celery_settings() is None:
                result = job.execute_in_process(
                    partition_key=key, instance=instance, raise_on_error=False, run_config=progress.run_config(str(key), quiet=quiet),
                    tags=liveness.process_tags(),
                )
            else:  # every step is a Celery task; this process coordinates the run
                result = launch_partition_run(instance, str(key), run_root, progress.run_config(str(key), quiet=quiet))
            run = summarise(result, str(key), time.perf_counter() - started)
            for line in format_run(run):
                out(line)
            interrupts.raise_if_signalled(run.interrupted)
            if not run.success:
                failures.append(run)
    for run in failures:
        if debug:
            for step, trace in run.tracebacks.items():
                err(f"--- {run.key} {step}\n{trace}")
        if run.error:
            err(f"error: {run.key}: {run.error}")
        elif run.only_checks_failed:
            err(f"error: {run.key}: blocking check(s) failed: " + ", ".join(c.split(" — ")[0] for c in run.checks_failed))
        else:
            step, why = next(iter(run.steps_failed.items()), ("the run", run.run_failure or "failed"))
            err(f"error: {run.key}: {step} failed without a code: {why}")
    if not failures:
        return interrupts.EXIT_OK
    return interrupts.EXIT_CHECKS_FAILED if all(r.only_checks_failed for r in failures) else interrupts.EXIT_FAILURE

"""`arrival verify`: every check over a partition's stored outputs with a full RNG replay, failing fast.

An unknown scenario or seed is refused in one line (IDENTITY_INVALID); a partition whose outputs are missing is
refused in one line naming them and the `arrival run` command that makes them (PARTITION_NOT_MATERIALISED);
paths in every line are relative to the run root.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arrival_core import checks as core_checks
from arrival_core import contracts, pipeline
from arrival_core.errors import IDENTITY_INVALID, NOT_MATERIALISED, ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.store import Store

from . import interrupts
from .run_roots import resolve_run_root

Printer = Callable[[str], None]


def relative(text: str, root: Path) -> str:
    """A message with the run root's prefix taken off its paths."""
    return text.replace(f"{root}/", "").replace(str(root), ".")


def _missing_outputs(store: Store, key: PartitionKey, datasets: list[str]) -> list[str]:
    identity = pipeline.resolve_identity(store, key, state="S1")
    return [d for d in datasets if not contracts.dataset(d).optional and not pipeline.output_path(store, d, identity).is_file()]


def require_materialised(store: Store, key: PartitionKey, datasets: list[str]) -> None:
    """Refuse in one line a partition the world does not know (IDENTITY_INVALID; no world: RUN_RECEIPT_MISSING)
    or whose required outputs are missing (PARTITION_NOT_MATERIALISED, naming the command that makes them)."""
    known = pipeline.world_scenarios(store)
    if key.scenario_id not in known:
        raise ArrivalError(IDENTITY_INVALID, f"scenario {key.scenario_id!r} is not in the world's scenario manifest "
                                             f"(known: {', '.join(known)})", field="scenario_id")
    missing = _missing_outputs(store, key, datasets)
    if missing:
        raise ArrivalError(NOT_MATERIALISED, f"partition {key.scenario_id}|{key.seed} has no {', '.join(missing)} "
                                             f"under this parameter_hash; make it first with `arrival run --seed "
                                             f"{key.seed} --scenario {key.scenario_id}`", dataset=missing[0])


def verify_partition(*, root: str | None, seed: str, scenario: str, out: Printer = print) -> int:
    """Every check over a partition's stored outputs with a full RNG replay; 1 if an ERROR check fails."""
    run_root = resolve_run_root(root)
    store = Store(run_root=run_root)
    key = PartitionKey(seed, scenario)
    datasets = list(dict.fromkeys(spec.dataset_id for spec in core_checks.CHECKS))
    require_materialised(store, key, datasets)
    failed = 0
    contexts: dict = {}  # one check context per identity: policies, grouping and replays derived once
    for dataset_id in datasets:
        state = contracts.dataset(dataset_id).state or "S0"
        identity = pipeline.resolve_identity(store, key, state=state)
        shared = contexts.setdefault(identity, core_checks.new_context(store, identity, replay="full"))
        for outcome in core_checks.evaluate(store, identity, dataset_id, replay="full", shared=shared):
            mark = "ok  " if outcome.passed else ("FAIL" if outcome.severity == "ERROR" else "warn")
            failed += (not outcome.passed) and outcome.severity == "ERROR"
            out(relative(f"{mark}  {outcome.severity:<5} {dataset_id:<34} {outcome.name:<36} {outcome.summary}",
                         run_root))
    out(f"{failed} ERROR check(s) failed" if failed else "all ERROR checks passed")
    return interrupts.EXIT_CHECKS_FAILED if failed else interrupts.EXIT_OK

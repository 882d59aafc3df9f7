"""Asset checks in their state's step: the specs a state's multi-asset declares, built from
`arrival_core.checks.CHECKS`, and the results its step yields."""

import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg

from arrival_core import checks as core_checks
from arrival_core import contracts, pipeline
from arrival_core.checks import CheckOutcome, CheckSpec
from arrival_core.identity import Identity
from arrival_core.store import Store

from .assets.outcomes import call_core, partition_of, sealed_parameter_hash
from .partitions import grid

SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def asset_of(dataset_id: str) -> str:
    """The asset a dataset's checks attach to: its own, or for a companion (an RNG trace) the asset it is published
    beside (the dataset dictionary's `companion_of`)."""
    return contracts.dataset(dataset_id).companion_of or dataset_id


def asset_key_of(dataset_id: str) -> dg.AssetKey:
    """The asset key a dataset's checks attach to."""
    return dg.AssetKey(asset_of(dataset_id))


def check_spec(spec: CheckSpec) -> dg.AssetCheckSpec:
    """The Dagster spec of one core check: ERROR checks block downstream assets, WARN checks never do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are a preview feature
        return dg.AssetCheckSpec(
            spec.name,
            asset=asset_key_of(spec.dataset_id),
            description=spec.description,
            blocking=spec.severity == "ERROR" and spec.blocking,
            partitions_def=grid,
            metadata={"severity": spec.severity, "dataset": spec.dataset_id},
        )


def _metadata_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return dg.MetadataValue.json(value if not isinstance(value, tuple) else list(value))
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value if value is not None else dg.MetadataValue.null()
    return str(value)


def check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    """The Dagster result of one core outcome, with its summary and Markdown table as metadata."""
    metadata = {k: _metadata_value(v) for k, v in outcome.metadata.items() if k != "table_md"}
    if "table_md" in outcome.metadata:
        metadata["table"] = dg.MetadataValue.md(str(outcome.metadata["table_md"]))
    metadata["summary"] = outcome.summary
    return dg.AssetCheckResult(
        asset_key=asset_key_of(outcome.dataset_id),
        check_name=outcome.name,
        passed=bool(outcome.passed),
        severity=SEVERITY[outcome.severity],
        description=outcome.summary,
        metadata=metadata,
    )


def checked_datasets(outputs: tuple[str, ...]) -> tuple[str, ...]:
    """The datasets a state's step checks: its outputs and their companions (RNG traces), in catalogue order."""
    datasets = dict.fromkeys(spec.dataset_id for spec in core_checks.CHECKS)
    return tuple(d for d in datasets if asset_of(d) in outputs)


def state_check_specs(outputs: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    """The Dagster specs of every check a state's step evaluates."""
    return [check_spec(s) for d in checked_datasets(outputs) for s in core_checks.checks_for(d)]


def check_key(spec: CheckSpec | CheckOutcome) -> dg.AssetCheckKey:
    """The Dagster key of one core check (or of its outcome)."""
    return dg.AssetCheckKey(asset_key_of(spec.dataset_id), spec.name)


def evaluate_state_checks(context: dg.AssetExecutionContext, st: Store, identity: Identity, state: pipeline.State, *,
                          recall: bool) -> Iterator[dg.AssetCheckResult]:
    """The results of the run's selected checks of a state's datasets: each dataset read once for all of its
    checks (`evaluate_recorded`), and what they share (policies, grouping, the reference's replay) derived once.
    `recall`: the state's files were proved in this step, so a check record on their basis is re-recorded and a
    new one written; else (a check-only run) they are evaluated afresh over the stored files and nothing is
    written."""
    selected = set(context.selected_asset_check_keys)
    derived = core_checks.new_context(st, identity)
    for dataset_id in checked_datasets(state.outputs):
        if not any(check_key(s) in selected for s in core_checks.checks_for(dataset_id)):
            continue
        outcomes, recalled = call_core(context, core_checks.evaluate_recorded, st, identity, dataset_id,
                                       state=state.code, recall=recall, record=recall,
                                       shared=derived)
        if recalled:
            context.log.info(f"{dataset_id}: files verified in this run; check results re-recorded")
        yield from (check_result(o) for o in outcomes if check_key(o) in selected)


def stored_identity(context: dg.AssetExecutionContext, st: Store, state: pipeline.State) -> Identity:
    """The identity of a partition's stored files for a check-only run: the one S0 sealed for it."""
    return call_core(context, pipeline.resolve_identity, st, partition_of(context), state=state.code,
                     parameter_hash=sealed_parameter_hash(context))

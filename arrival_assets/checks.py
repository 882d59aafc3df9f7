"""Asset checks in their state's step: the specs a state's multi-asset declares, built from
`arrival_core.checks.CHECKS`, and the results its step yields."""

import warnings
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from arrival_core import checks as core_checks
from arrival_core import contracts, pipeline
from arrival_core.checks import CheckOutcome, CheckSpec
from arrival_core.errors import NOT_MATERIALISED, ArrivalError
from arrival_core.identity import Identity
from arrival_core.store import Store

from .assets.outcomes import call_core, failure_from, partition_of, sealed_parameter_hash
from .partitions import grid, parse_partition_key

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
                          recall: bool, selected: AbstractSet[dg.AssetCheckKey] | None = None,
                          streamed: core_checks.StreamChecks | None = None,
                          known: Mapping[str, Any] | None = None) -> Iterator[dg.AssetCheckResult]:
    """The results of the run's selected checks (or of `selected`) of a state's datasets, evaluated at once on the
    engine's threads (`evaluate_datasets`): each dataset read once for all of its checks, and what they share
    (policies, grouping, the reference's replay) derived once. `recall`: the state's files were proved in this step,
    so a check record on their basis is re-recorded and a new one written; else (a check-only run) they are
    evaluated afresh over the stored files and nothing is written. `streamed`: the checks made while the state
    streamed (its big outputs'), taken as they are; `known`: what the state read that its checks would read again
    (`StateResult.diagnostics`)."""
    selected = set(context.selected_asset_check_keys if selected is None else selected)
    datasets = [d for d in checked_datasets(state.outputs)
                if any(check_key(s) in selected for s in core_checks.checks_for(d))]
    evaluated = call_core(context, core_checks.evaluate_datasets, st, identity, datasets, state=state.code,
                          recall=recall, record=recall, streamed=streamed,
                          shared=core_checks.new_context(st, identity, known=known))
    for dataset_id, (outcomes, recalled) in zip(datasets, evaluated, strict=True):
        if recalled:
            context.log.info(f"{dataset_id}: files verified in this run; check results re-recorded")
        yield from (check_result(o) for o in outcomes if check_key(o) in selected)


def stored_identity(context: dg.AssetExecutionContext, st: Store, state: pipeline.State,
                    partition: str | None = None) -> Identity:
    """The identity of a partition's stored files for a check-only run (the run's partition, or `partition`): the
    one S0 sealed for it."""
    key = partition_of(context) if partition is None else call_core(context, parse_partition_key, partition)
    return call_core(context, pipeline.resolve_identity, st, key, state=state.code,
                     parameter_hash=sealed_parameter_hash(context, partition))


def materialised_partitions(context: dg.AssetExecutionContext) -> dict[str, set[dg.AssetCheckKey]]:
    """Each partition (in key order) in which an asset of the run's selected checks is materialised, with that
    asset's selected checks; none is PARTITION_NOT_MATERIALISED, naming the command that makes one."""
    selected = context.selected_asset_check_keys
    by_partition: dict[str, set[dg.AssetCheckKey]] = {}
    for asset in sorted({k.asset_key for k in selected}, key=lambda a: a.to_user_string()):
        for partition in context.instance.get_materialized_partitions(asset):
            by_partition.setdefault(partition, set()).update(k for k in selected if k.asset_key == asset)
    if not by_partition:
        assets = sorted({k.asset_key.to_user_string() for k in selected})
        raise failure_from(context, ArrivalError(
            NOT_MATERIALISED, f"no partition of {', '.join(assets)} is materialised, so there are no stored files to "
            "check: materialise one first (`arrival run --seed <seed> --scenario <scenario>`)", dataset=assets))
    return dict(sorted(by_partition.items()))


def target_materialization(context: dg.AssetExecutionContext, asset: dg.AssetKey,
                           partition: str) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The partition's latest materialisation of the asset: what an evaluation of its checks is about."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1).records
    if not records:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp)


def evaluate_materialised_partitions(context: dg.AssetExecutionContext, st: Store, state: pipeline.State
                                     ) -> Iterator[dg.AssetCheckEvaluation]:
    """A check-only run without a partition (what Dagster's UI sends from "Execute all" on a partitioned asset's
    checks): the selected checks of every partition whose asset is materialised, each evaluated over that
    partition's stored files and recorded for that partition."""
    partitions = materialised_partitions(context)
    context.log.info(f"a check-only run without a partition: evaluating the selected checks of the "
                     f"{len(partitions)} materialised partition(s) {', '.join(partitions)}")
    specs = {spec.key: spec for spec in context.assets_def.check_specs}
    for partition, keys in partitions.items():
        identity = stored_identity(context, st, state, partition)
        for result in evaluate_state_checks(context, st, identity, state, recall=False, selected=keys):
            key = dg.AssetCheckKey(result.asset_key, result.check_name)
            yield dg.AssetCheckEvaluation(
                asset_key=result.asset_key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, description=result.description,
                blocking=specs[key].blocking, partition=partition,
                target_materialization_data=target_materialization(context, result.asset_key, partition))

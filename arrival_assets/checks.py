"""Asset checks: one multi-asset check per output dataset, built from `arrival_core.checks.CHECKS`."""

import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg

from arrival_core import checks as core_checks
from arrival_core import contracts, pipeline
from arrival_core.checks import CheckOutcome, CheckSpec

from .assets.outcomes import call_core, partition_of, sealed_parameter_hash
from .partitions import grid
from .resources import StoreResource

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


def materialised_in_run(context: dg.AssetCheckExecutionContext, asset: str) -> bool:
    """Whether this run materialised (computed or verified) an asset: its files were proved in this run."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return any(r.asset_key is not None and r.asset_key.to_user_string() == asset for r in records)


def build_dataset_checks(dataset_id: str, specs: tuple[CheckSpec, ...]) -> dg.AssetChecksDefinition:
    """One step reading the dataset once and yielding a result per check, recorded for its own partition."""

    @dg.multi_asset_check(
        name=f"check_{dataset_id}",
        specs=[check_spec(s) for s in specs],
        description=f"Checks of {dataset_id}: " + ", ".join(s.name for s in specs),
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, store: StoreResource
    ) -> Iterator[dg.AssetCheckResult]:
        part = partition_of(context)
        st = call_core(context, store.open)
        state = contracts.dataset(dataset_id).state or "S0"
        identity = call_core(
            context, pipeline.resolve_identity, st, part, state=state,
            parameter_hash=sealed_parameter_hash(context),
        )
        owner = pipeline.state_of_output(asset_key_of(dataset_id).to_user_string())
        outcomes, recalled = call_core(context, core_checks.evaluate_recorded, st, identity, dataset_id,
                                       state=owner.code, recall=materialised_in_run(context, owner.outputs[0]))
        if recalled:
            context.log.info(f"{dataset_id}: files verified in this run; check results re-recorded")
        for outcome in outcomes:
            yield check_result(outcome)

    return _checks


def build_checks() -> list[dg.AssetChecksDefinition]:
    """Every dataset's check step, in the order of the core catalogue."""
    datasets = list(dict.fromkeys(spec.dataset_id for spec in core_checks.CHECKS))
    return [build_dataset_checks(d, core_checks.checks_for(d)) for d in datasets]

"""Helpers for the Dagster tests: the graph bound to a run root, and in-process runs of one partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from arrival_assets.definitions import build_definitions
from arrival_assets.jobs import JOB_NAME
from arrival_assets.partitions import parse_partition_key, register_partitions
from arrival_assets.progress import run_config
from arrival_assets.resources import StoreResource

PARTITIONS = ("baseline_v1|1", "stress_v1|1", "baseline_v1|42", "stress_v1|42")


def graph_for(root: Path, config_dir: Path | None = None) -> dg.Definitions:
    """The code location bound to one run root (and optionally another policy folder)."""
    return build_definitions(StoreResource(run_root=str(root), config_dir=str(config_dir or "")))


def run_partition(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: str, selection: list[dg.AssetKey] | None = None
) -> dg.ExecuteInProcessResult:
    """Register the key's seed and scenario, then run the arrival_5b job for it in process."""
    part = parse_partition_key(key)
    register_partitions(instance, [str(part.seed)], [part.scenario_id])
    return defs.resolve_job_def(JOB_NAME).execute_in_process(
        partition_key=key,
        instance=instance,
        raise_on_error=False,
        asset_selection=selection,
        run_config=run_config(key, quiet=True),
    )


def run_checks(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: str | None, checks: set[dg.AssetCheckKey] | None = None
) -> dg.ExecuteInProcessResult:
    """Run only checks (default: every check) of one registered partition in process, materialising nothing;
    `key` None: a run without a partition, as Dagster's UI sends "Execute all" on a partitioned asset's checks."""
    job = defs.resolve_job_def(JOB_NAME)
    checks = set(defs.resolve_asset_graph().asset_check_keys) if checks is None else checks
    return job.get_subset(asset_selection=set(), asset_check_selection=checks).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config=run_config(key or "", quiet=True))


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Asset -> plain metadata values of every materialisation in a run."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        out[mat.asset_key.to_user_string()]["data_version"] = mat.tags.get("dagster/data_version")
    return out


def failures(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Step -> plain failure metadata of every failed step in a run."""
    out = {}
    for event in result.get_step_failure_events():
        data = event.step_failure_data.user_failure_data
        out[event.step_key] = {k: getattr(v, "value", v) for k, v in (data.metadata if data else {}).items()}
    return out

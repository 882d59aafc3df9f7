"""A check-only run (checks and no asset selected: a GraphQL `launchRun`, the UI's "Execute all"): every check
of a materialised partition is evaluated over the stored files in its state's step, recorded for that partition,
and no file is written; without a partition (what the UI sends) it does so for every materialised partition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from graph_helpers import failures, graph_for, materialized, run_checks, run_partition
from webserver_lib import free_port, graphql, stop_server, wait_until_serving

from arrival_assets.jobs import JOB_NAME
from arrival_assets.partitions import register_partitions
from arrival_assets.progress import run_config
from arrival_core.contracts import PROJECT_ROOT

KEY = "baseline_v1|42"
ASSET = "s3_bucket_counts_5B"
RUN_SECONDS = 300

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = 'query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }'


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the run root with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_check_only_run_in_process_records_every_check_and_writes_nothing(world_root):
    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(defs, instance, KEY).success
        before = listing(world_root)
        result = run_checks(defs, instance, KEY)
        assert result.success, failures(result)
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key for e in evaluations} == set(defs.resolve_asset_graph().asset_check_keys)
    assert all(e.passed for e in evaluations)
    assert materialized(result) == {}
    assert listing(world_root) == before


def test_check_only_run_without_a_partition_records_each_materialised_partition(world_root):
    """What Dagster 1.13's UI sends from "Execute all" on a partitioned asset's checks (no partition): every
    check is evaluated and recorded for each partition materialised, and only those (a registered partition that
    is not materialised gets none); no file is written and nothing is materialised."""
    defs = graph_for(world_root)
    materialised = {"baseline_v1|42", "stress_v1|42"}
    with dg.DagsterInstance.ephemeral() as instance:
        runs = {key: run_partition(defs, instance, key) for key in sorted(materialised)}
        assert all(r.success for r in runs.values())
        register_partitions(instance, ["1"], ["baseline_v1"])  # registered, never materialised
        before = listing(world_root)
        result = run_checks(defs, instance, None)
        assert result.success, failures(result)
    checks = set(defs.resolve_asset_graph().asset_check_keys)
    evaluations = result.get_asset_check_evaluations()
    assert sorted((e.asset_check_key.to_user_string(), e.partition) for e in evaluations) == sorted(
        (k.to_user_string(), p) for k in checks for p in materialised)
    assert all(e.passed for e in evaluations)
    # Each evaluation is about its partition's materialisation of the asset: the run that made it.
    assert {e.partition: e.target_materialization_data.run_id for e in evaluations} == {
        key: r.run_id for key, r in runs.items()}
    assert materialized(result) == {}
    assert listing(world_root) == before


def test_check_only_run_without_a_partition_and_none_materialised_names_the_command(world_root):
    defs = graph_for(world_root)
    checks = {k for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key == dg.AssetKey(ASSET)}
    with dg.DagsterInstance.ephemeral() as instance:
        register_partitions(instance, ["42"], ["baseline_v1"])
        result = run_checks(defs, instance, None, checks)
    assert not result.success
    assert result.get_asset_check_evaluations() == []
    failure = failures(result)["s3_counts"]
    assert failure["error_code"] == "5B.PARTITION_NOT_MATERIALISED"
    assert f"no partition of {ASSET} is materialised" in failure["error_message"]
    assert "arrival run --seed <seed> --scenario <scenario>" in failure["error_message"]


def test_materialising_run_without_a_partition_is_identity_invalid_before_any_input_is_read(world_root):
    """Only a check-only run has a meaning without a partition: a run that materialises fails in its first step."""
    defs = graph_for(world_root)
    with dg.DagsterInstance.ephemeral() as instance:
        before = listing(world_root)
        result = defs.resolve_job_def(JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config("", quiet=True))
    assert not result.success
    assert {k: v["error_code"] for k, v in failures(result).items()} == {"sealed_inputs": "5B.IDENTITY_INVALID"}
    assert "this run has no partition" in failures(result)["sealed_inputs"]["error_message"]
    assert materialized(result) == {}
    assert listing(world_root) == before


def test_check_only_run_launched_through_graphql_records_every_check_of_the_partition(world_root, tmp_path):
    """What the UI's "Execute all" sends (no asset, the checks), with the partition's tag added: one partition."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(  # launch at once (no daemon to dequeue), as `dagster dev` does
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n")
    defs = graph_for(world_root)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_partition(defs, instance, KEY).success
    before = listing(world_root)
    checks = defs.resolve_asset_graph().asset_check_keys
    params = {
        "mode": "default",
        "runConfigData": "{}",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": KEY}]},
        "selector": {
            "jobName": "arrival_5b",
            "repositoryLocationName": "arrival_5b",
            "repositoryName": "__repository__",
            "assetSelection": [],
            "assetCheckSelection": [{"assetKey": {"path": list(k.asset_key.path)}, "name": k.name} for k in checks],
        },
    }
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "ARRIVAL_RUN_ROOT": str(world_root)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port, proc)
        launched = graphql(port, LAUNCH, {"params": params})["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline, status = time.monotonic() + RUN_SECONDS, None
        while time.monotonic() < deadline:
            status = graphql(port, RUN_STATUS, {"id": run_id})["data"]["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
    finally:
        stop_server(proc)
    assert status == "SUCCESS"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
        mats = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    assert {e.asset_check_key for e in evaluations} == set(checks)
    assert len(evaluations) == len(checks)
    assert {e.partition for e in evaluations} == {KEY}
    assert all(e.passed for e in evaluations)
    assert mats == []
    assert listing(world_root) == before

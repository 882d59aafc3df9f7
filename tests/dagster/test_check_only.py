"""A check-only run (the UI's "Execute", `dagster asset check`): every check of a materialised partition is
evaluated over the stored files in its state's step, recorded for that partition, and no file is written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from graph_helpers import failures, graph_for, materialized, run_checks, run_partition
from webserver_lib import free_port, graphql, stop_server, wait_until_serving

from arrival_core.contracts import PROJECT_ROOT

KEY = "baseline_v1|42"
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




def test_check_only_run_launched_through_graphql_records_every_check_of_the_partition(world_root, tmp_path):
    """What the UI's "Execute" sends (no asset, the checks), with the partition's tag."""
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

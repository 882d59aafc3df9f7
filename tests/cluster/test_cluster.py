"""End to end on this machine: a real PostgreSQL, a real Redis and two Celery workers run one partition.

`cluster_up` starts the servers and the workers as separate processes; the `arrival_5b` job runs for
`baseline_v1|7` of a tiny world with dagster-celery's executor, the coordinator in this process. Then:
every step ran in a worker process, the run and its check results are in Postgres for that partition,
the outputs are byte-identical to an in-process run of the same world in another root, and
`cluster_down` stops every process by pid with its graceful signal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
from clusterlib import missing_modules, missing_servers, need

from arrival_assets.cluster import cluster_down, cluster_up, launch_partition_run, pid_alive
from arrival_assets.definitions import build_definitions
from arrival_assets.jobs import JOB_NAME
from arrival_assets.partitions import register_partitions
from arrival_assets.resources import StoreResource
from arrival_core.world import create_world

pytestmark = pytest.mark.cluster

KEY = "baseline_v1|7"
SEEDS = ["7"]
SCENARIOS = ["baseline_v1", "stress_v1"]
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
STEP_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE")


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under data/layer2/5B, by relative path, run reports left out."""
    top = root / "data" / "layer2" / "5B"
    return {
        str(path.relative_to(top)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(top.rglob("*"))
        if path.is_file() and "run_report" not in path.relative_to(top).parts
    }


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pg_query(env: dict[str, str], sql: str, *args):
    import psycopg2

    url = urlsplit(env["ARRIVAL_PG_URL"])
    conn = psycopg2.connect(
        host=url.hostname, port=url.port, user=url.username, password=url.password, dbname=url.path[1:]
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two workers, PostgreSQL and Redis in a folder under /tmp (reachable by the `postgres` account)."""
    need(missing_servers() + missing_modules("dagster_celery", "dagster_postgres", "psycopg2", "redis"))
    world = tmp_path_factory.mktemp("cluster_world") / "root"
    create_world("tiny", world, seeds=(7,))
    base = Path(tempfile.mkdtemp(prefix="arrival-cluster-"))
    base.chmod(0o755)
    lines: list[str] = []
    started = time.monotonic()
    info = cluster_up(2, base / "cluster", run_root=world, out=lines.append)
    info.up_seconds = time.monotonic() - started
    info.up_lines = lines
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in info.env.items():
                env.setenv(name, value)
            yield info
    finally:
        cluster_down(info.base, out=lambda _: None)  # a no-op once test_down_... has stopped everything
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def celery_run(cluster):
    """The partition run through the Celery executor, the coordinator in this process."""
    with dg.DagsterInstance.get() as instance:
        register_partitions(instance, SEEDS, SCENARIOS)
        started = time.monotonic()
        result = launch_partition_run(instance, KEY, cluster.env["ARRIVAL_RUN_ROOT"], QUIET)
        result.seconds = time.monotonic() - started
        yield instance, result


def test_cluster_writes_its_environment_and_records_every_process(cluster):
    text = cluster.env_file.read_text()
    for name in ("ARRIVAL_PG_URL", "ARRIVAL_CELERY_BROKER", "DAGSTER_HOME", "ARRIVAL_RUN_ROOT"):
        assert f"export {name}=" in text
    assert oct(cluster.env_file.stat().st_mode & 0o777) == "0o600"  # it holds the database password
    names = [p.name for p in cluster.processes]
    assert names == ["postgres", "redis", "worker-1", "worker-2"]
    assert all(pid_alive(p.pid, p.match) for p in cluster.processes)
    assert len({p.pid for p in cluster.processes}) == 4


def test_the_instance_keeps_runs_events_and_schedules_in_postgres(cluster):
    with dg.DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == Path(cluster.env["DAGSTER_HOME"])
        kinds = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage)}
        kinds.add(type(instance.schedule_storage).__name__)
        assert kinds == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}


def test_the_partition_run_succeeds_with_every_step(celery_run):
    _, result = celery_run
    assert result.success, [e.step_key for e in result.get_step_failure_events()]
    done = {e.step_key for e in result.get_step_success_events()}
    assert done == set(result.job_def.graph.node_names())
    assert len(done) >= 10  # sealed inputs, five states and their checks


def test_every_step_ran_in_a_worker_process(cluster, celery_run):
    _, result = celery_run
    workers = set(cluster.worker_pids)
    step_pids = {e.step_key: e.pid for e in result.all_events if e.event_type_value in STEP_EVENTS}
    assert step_pids and os.getpid() not in step_pids.values()
    # Each step ran in a pool process of one of the workers `cluster_up` started.
    assert {parent_pid(pid) for pid in set(step_pids.values())} <= workers
    delegated = {
        e.step_key: e.event_specific_data.metadata["Celery worker"].value
        for e in result.all_events
        if e.event_type_value == "ENGINE_EVENT" and "in celery worker" in (e.message or "")
    }
    assert set(delegated) == set(step_pids)
    assert {name.split("@")[0] for name in delegated.values()} <= {"arrival-1", "arrival-2"}
    print(f"\ncluster up in {cluster.up_seconds:.1f} s: " + "; ".join(cluster.up_lines))
    print(
        f"run {result.run_id} in {result.seconds:.1f} s, coordinator pid {os.getpid()}, workers {sorted(workers)}"
    )
    for step, pid in step_pids.items():
        print(f"  {step:<40} {delegated[step]:<20} pid {pid} (worker pid {parent_pid(pid)})")


def test_check_results_are_stored_in_postgres_for_the_partition(cluster, celery_run):
    instance, result = celery_run
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    rows = pg_query(
        cluster.env,
        "SELECT partition, execution_status, count(*) FROM asset_check_executions WHERE run_id = %s "
        "GROUP BY 1, 2",
        result.run_id,
    )
    assert rows == [(KEY, "SUCCEEDED", len(evaluations))]
    runs = pg_query(cluster.env, "SELECT status, partition FROM runs WHERE run_id = %s", result.run_id)
    assert runs == [("SUCCESS", KEY)]
    stored = instance.get_run_by_id(result.run_id)
    assert stored.tags["dagster/partition/scenario"] == "baseline_v1"
    assert stored.tags["dagster/partition/seed"] == "7"


def test_outputs_are_byte_identical_to_an_in_process_run(cluster, celery_run, tmp_path):
    _, result = celery_run
    assert result.success
    other = tmp_path / "in_process"
    create_world("tiny", other, seeds=(7,))
    job = build_definitions(StoreResource(run_root=str(other))).resolve_job_def(JOB_NAME)
    with dg.DagsterInstance.ephemeral() as instance:
        register_partitions(instance, SEEDS, SCENARIOS)
        local = job.execute_in_process(partition_key=KEY, instance=instance, run_config=QUIET)
    assert local.success
    on_cluster = output_digests(Path(cluster.env["ARRIVAL_RUN_ROOT"]))
    assert len(on_cluster) >= 10
    assert on_cluster == output_digests(other)


COORDINATOR = """
import json, sys
import dagster as dg
from arrival_assets.cluster import launch_partition_run
with dg.DagsterInstance.get() as instance:
    result = launch_partition_run(instance, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps({"success": result.success, "run_id": result.run_id}))
"""


def test_sigterm_drains_a_worker_mid_step_and_the_run_finishes_on_the_other(cluster, celery_run):
    """SIGTERM to a worker running S2: it finishes the step, exits; the other worker takes the rest."""
    import json
    import signal
    import subprocess
    import sys

    (start_id,) = pg_query(cluster.env, "SELECT coalesce(max(id), 0) FROM event_logs")[0]
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            COORDINATOR,
            "stress_v1|7",
            cluster.env["ARRIVAL_RUN_ROOT"],
            json.dumps(QUIET),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        worker = None
        while worker is None and time.monotonic() < deadline and coordinator.poll() is None:
            for (event,) in pg_query(
                cluster.env,
                "SELECT event FROM event_logs WHERE id > %s AND step_key = 's2_latent' "
                "AND dagster_event_type = 'ENGINE_EVENT'",
                start_id,
            ):
                if "in celery worker" in event:
                    worker = "worker-1" if "arrival-1@" in event else "worker-2"
            time.sleep(0.1)
        assert worker, "s2_latent never started on a worker"
        proc = next(p for p in cluster.processes if p.name == worker)
        in_flight = not pg_query(
            cluster.env,
            "SELECT 1 FROM event_logs WHERE id > %s AND step_key = 's2_latent' "
            "AND dagster_event_type = 'STEP_SUCCESS'",
            start_id,
        )
        os.kill(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        while pid_alive(proc.pid) and time.monotonic() - signalled < 120:
            time.sleep(0.1)
        drain_seconds = time.monotonic() - signalled
        assert not pid_alive(proc.pid), f"{worker} did not stop after SIGTERM"
        out, _ = coordinator.communicate(timeout=300)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    cluster.drained = worker
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["success"]
    events = pg_query(
        cluster.env,
        "SELECT step_key, dagster_event_type FROM event_logs WHERE run_id = %s AND step_key IS NOT NULL",
        outcome["run_id"],
    )
    assert ("s2_latent", "STEP_SUCCESS") in events  # the step in flight was finished, not abandoned
    assert "Warm shutdown" in (cluster.base / "logs" / f"{worker}.log").read_text()
    print(
        f"\nSIGTERM to {worker} (pid {proc.pid}) with s2_latent {'in flight' if in_flight else 'just done'}: "
        f"exited {drain_seconds:.1f} s later; run {outcome['run_id']} succeeded"
    )


def test_down_stops_every_process_by_pid_with_its_graceful_signal(cluster, celery_run):
    drained = getattr(cluster, "drained", None)
    outcome = cluster_down(cluster.base, out=lambda _: None)
    expected = {"worker-1": "stopped", "worker-2": "stopped", "redis": "stopped", "postgres": "stopped"}
    if drained:
        expected[drained] = "not running"  # already stopped by the drain test
    assert outcome == expected
    assert not any(pid_alive(p.pid) for p in cluster.processes)
    for index in (1, 2):
        assert "Warm shutdown" in (cluster.base / "logs" / f"worker-{index}.log").read_text()
    assert "database system is shut down" in (cluster.base / "logs" / "postgres.log").read_text()
    assert cluster_down(cluster.base, out=lambda _: None) == {}

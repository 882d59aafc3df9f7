"""End to end on this machine: a real PostgreSQL, a real Redis and two Celery workers, driven by the CLIs.

`cluster_up` starts the servers and two workers as separate processes on a tiny world; every run then goes
through a command line in the cluster's environment (what `source env.sh` gives a shell), while `arrival
run` in process (another root and DAGSTER_HOME, no cluster variable) makes the reference outputs alongside:

- `arrival run --seed 7`: exit 0, every step in a worker process, every check result in Postgres for its own
  partition, outputs byte-identical to the in-process run;
- meanwhile, a backfill of seeds 9 and 10 x both scenarios (`dagster job backfill`), launched by
  `dagster-daemon` at most two runs at once: every run succeeds, every step on a worker, and no write
  conflict anywhere though up to four runs published the same seed-invariant files at once;
- SIGKILL to the worker running S3 of `baseline_v1|8`: the step is handed to the other worker once the
  visibility timeout has passed and the run completes; nothing half-written stays; after the worker is
  restarted a re-run completes, byte-identical;
- SIGTERM to the worker running S2 of `stress_v1|8`: it finishes the step, exits, and the run completes;
- `cluster_down` stops every process by pid with its graceful signal.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from clusterlib import (
    REPO,
    celery_hosts,
    in_process_env,
    last_event_id,
    missing_modules,
    missing_servers,
    need,
    of_seed,
    output_digests,
    parent_pid,
    pg_query,
    run_lines,
    step_pids,
    stop_by_pid,
    temp_files,
    tool,
    wait_for_step_on_a_worker,
)

from arrival_assets.cluster import cluster_down, cluster_up, pid_alive, read_pids, restart_worker
from arrival_assets.concurrency import concurrent_runs
from arrival_assets.jobs import JOB_NAME
from arrival_core.world import create_world

pytestmark = pytest.mark.cluster

SCENARIOS = ("baseline_v1", "stress_v1")
BACKFILL_SEEDS = (9, 10)
CHECKS_PER_PARTITION = 42
VISIBILITY_TIMEOUT = 30  # s before a killed worker's step is handed out again; a step takes < 15 s here
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
WORKER_NAMES = {"arrival-1", "arrival-2"}


def worker_record(base: Path, host: str):
    """The pids.json record of the worker whose Celery name is `host` (`arrival-2@vm` -> worker-2)."""
    name = "worker-" + host.split("@")[0].rsplit("-", 1)[1]
    return next(p for p in read_pids(base) if p.name == name)


def arrival(*args: str, env: dict[str, str] | None = None, timeout: float = 900, nice: int = 0) -> SimpleNamespace:
    """`arrival ARGS` to its end (the cluster's environment unless `env`): exit status, output and pid."""
    command = ["nice", "-n", str(nice), tool("arrival"), *args] if nice else [tool("arrival"), *args]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    return SimpleNamespace(
        code=proc.returncode, out=out, err=err, pid=proc.pid, runs=run_lines(out),
        seconds=time.monotonic() - started,
    )


# ---- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two workers, PostgreSQL and Redis in a folder under /tmp (reachable by the `postgres` account); this
    process and every command it starts get the cluster's environment."""
    need(missing_servers() + missing_modules("dagster_celery", "dagster_postgres", "psycopg2", "redis"))
    world = tmp_path_factory.mktemp("cluster_world") / "root"
    create_world("tiny", world, seeds=(7,))
    base = Path(tempfile.mkdtemp(prefix="arrival-cluster-"))
    base.chmod(0o755)
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARRIVAL_CELERY_VISIBILITY_TIMEOUT", str(VISIBILITY_TIMEOUT))  # the workers inherit it
        started = time.monotonic()
        info = cluster_up(2, base / "cluster", run_root=world, out=lines.append)
        info.up_seconds, info.up_lines = time.monotonic() - started, lines
        try:
            for name, value in info.env.items():
                env.setenv(name, value)
            yield info
        finally:
            cluster_down(info.base, out=lambda _: None)  # a no-op once test_down_... has stopped everything
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def in_process(cluster, tmp_path_factory):
    """`arrival run` in process for seed 7 and for baseline_v1|8 on a copy of the world, in the background
    while the cluster works; `.wait()` returns the root once both have passed."""
    top = tmp_path_factory.mktemp("in_process")
    root = top / "root"
    create_world("tiny", root, seeds=(7, 8))
    env = in_process_env(top / "dagster_home")
    done: list[SimpleNamespace] = []

    def work() -> None:  # at a lower priority: it takes the CPU the cluster leaves idle while it waits
        done.append(arrival("run", "--seed", "7", "--root", str(root), env=env, nice=10))
        done.append(arrival("run", "--seed", "8", "--scenario", "baseline_v1", "--root", str(root), env=env, nice=10))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait() -> Path:
        thread.join(timeout=900)
        assert [r.code for r in done] == [0, 0], [r.err[-2000:] for r in done]
        return root

    yield SimpleNamespace(wait=wait)
    thread.join(timeout=900)


def wait_for_backfill(backfill_id: str, count: int, timeout: float = 900) -> list[tuple]:
    """(run id, partition, status, start, end) of the backfill's runs once all `count` have ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = pg_query(
            os.environ,
            "SELECT r.run_id, r.partition, r.status, r.start_time, r.end_time FROM runs r "
            "JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'dagster/backfill' AND t.value = %s",
            backfill_id,
        )
        if len(runs) == count and all(run[2] in TERMINAL for run in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"backfill {backfill_id} did not end in {timeout:.0f} s: {runs}")


@pytest.fixture(scope="module")
def backfill(cluster):
    """`dagster job backfill` of 2 seeds x 2 scenarios, launched by `dagster-daemon run` (started and stopped
    by pid) from the Postgres instance that `arrival instance` configures; the runs' steps go to the workers.
    It goes on in the background (`arrival run --seed 7` shares the workers meanwhile); `.wait()` returns
    the outcome once every run has ended and the daemon is stopped."""
    keys = [f"{scenario}|{seed}" for seed in BACKFILL_SEEDS for scenario in SCENARIOS]
    seeds = [arg for seed in BACKFILL_SEEDS for arg in ("--seed", str(seed))]
    for args in (("partitions", "add", *seeds), ("instance",)):
        done = arrival(*args, timeout=300)
        assert done.code == 0, done.err
    state = SimpleNamespace(keys=keys, log=cluster.base / "logs" / "daemon.log", error=None)
    with open(state.log, "ab") as log:
        daemon = subprocess.Popen(
            [tool("dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def work() -> None:
        try:
            started = time.monotonic()
            submitted = subprocess.run(
                [tool("dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", JOB_NAME,
                 "--partitions", ",".join(keys), "--noprompt"],
                cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
            )
            found = re.search(r"Launched backfill job `([^`]+)`", submitted.stdout + submitted.stderr)
            assert submitted.returncode == 0 and found, submitted.stderr[-3000:]
            state.runs = wait_for_backfill(found.group(1), len(keys))
            state.seconds = time.monotonic() - started
        except BaseException as exc:  # noqa: BLE001 - raised again by wait()
            state.error = exc
        finally:
            state.daemon_stop = stop_by_pid(daemon)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait() -> SimpleNamespace:
        thread.join(timeout=1500)
        if state.error is not None:
            raise state.error
        return state

    yield SimpleNamespace(wait=wait)
    thread.join(timeout=1500)


@pytest.fixture(scope="module")
def cli_run(cluster, backfill):
    """`arrival run --seed 7` through Celery, started while the backfill goes on."""
    return arrival("run", "--seed", "7")


@pytest.fixture(scope="module")
def killed_run(cluster, cli_run, backfill):
    """`arrival run --seed 8 --scenario baseline_v1`; the worker that runs S3 is SIGKILLed with its pool
    (its process group: a lost machine) as soon as S3 has staged a file, or has started if that is too quick."""
    backfill.wait()  # both workers are free
    after = last_event_id(os.environ)
    outputs = Path(cluster.env["ARRIVAL_RUN_ROOT"]) / "data" / "layer2" / "5B"
    proc = subprocess.Popen(
        [tool("arrival"), "run", "--seed", "8", "--scenario", "baseline_v1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        host = wait_for_step_on_a_worker(os.environ, after, "s3_counts", proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # S3's counts and RNG events, staged beside their targets
            if staged := [path for path in temp_files(outputs) if "bucket_count" in path]:
                break
            time.sleep(0.02)
        victim = worker_record(cluster.base, host)
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=VISIBILITY_TIMEOUT + 300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return SimpleNamespace(
        code=proc.returncode, out=out, err=err, runs=run_lines(out), host=host, victim=victim,
        staged=staged, after_kill=time.monotonic() - killed,
    )


@pytest.fixture(scope="module")
def rerun(cluster, killed_run):
    """The killed worker restarted, then `arrival run --seed 8 --scenario baseline_v1` again."""
    index = int(killed_run.victim.name.rsplit("-", 1)[1])
    restarted = restart_worker(cluster.base, index)
    return SimpleNamespace(restarted=restarted, run=arrival("run", "--seed", "8", "--scenario", "baseline_v1"))


@pytest.fixture(scope="module")
def drained_run(cluster, rerun):
    """`arrival run --seed 8 --scenario stress_v1` (a partition not materialised yet); SIGTERM to the worker
    that takes its S2."""
    after = last_event_id(os.environ)
    proc = subprocess.Popen(
        [tool("arrival"), "run", "--seed", "8", "--scenario", "stress_v1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        host = wait_for_step_on_a_worker(os.environ, after, "s2_latent", proc)
        drained = worker_record(cluster.base, host)
        log = Path(drained.log)
        offset = log.stat().st_size
        os.kill(drained.pid, signal.SIGTERM)
        signalled = time.monotonic()
        while pid_alive(drained.pid) and time.monotonic() - signalled < 120:
            time.sleep(0.1)
        drain_seconds = time.monotonic() - signalled
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return SimpleNamespace(
        code=proc.returncode, out=out, err=err, runs=run_lines(out), drained=drained,
        drain_seconds=drain_seconds, drain_log=log.read_bytes()[offset:].decode(errors="replace"),
    )


# ---- the cluster -----------------------------------------------------------------------------------------------


def test_cluster_writes_its_environment_and_records_every_process(cluster):
    text = cluster.env_file.read_text()
    for name in ("ARRIVAL_PG_URL", "ARRIVAL_CELERY_BROKER", "DAGSTER_HOME", "ARRIVAL_RUN_ROOT"):
        assert f"export {name}=" in text
    assert oct(cluster.env_file.stat().st_mode & 0o777) == "0o600"  # it holds the database password
    names = [p.name for p in cluster.processes]
    assert names == ["postgres", "redis", "worker-1", "worker-2"]
    assert all(pid_alive(p.pid, p.match) for p in cluster.processes)
    assert len({p.pid for p in cluster.processes}) == 4


def test_the_instance_keeps_runs_in_postgres_and_queues_them_two_at_a_time(cluster):
    with dg.DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == Path(cluster.env["DAGSTER_HOME"])
        kinds = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage)}
        kinds.add(type(instance.schedule_storage).__name__)
        assert kinds == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == concurrent_runs()


# ---- (a) arrival run --seed 7 through Celery -------------------------------------------------------------------


def test_arrival_run_through_celery_exits_0_for_both_scenarios(cli_run):
    print(f"\narrival run --seed 7 through Celery in {cli_run.seconds:.1f} s")
    assert cli_run.code == 0, cli_run.err[-3000:]
    assert {key: status for key, (status, _) in cli_run.runs.items()} == {f"{s}|7": "PASS" for s in SCENARIOS}


def test_every_step_of_arrival_run_ran_in_a_worker_process(cluster, cli_run):
    workers = set(cluster.worker_pids)
    for key, (_, run_id) in cli_run.runs.items():
        pids = step_pids(os.environ, run_id)
        every_pid = set().union(*pids.values())
        assert pids and cli_run.pid not in every_pid, key
        assert {parent_pid(pid) for pid in every_pid} <= workers, key  # a pool process of a cluster worker
        hosts = celery_hosts(os.environ, run_id)
        assert {step for step, _ in hosts} == set(pids), key
        assert {host.split("@")[0] for _, host in hosts} <= WORKER_NAMES, key


def test_every_check_result_is_stored_in_postgres_for_its_own_partition(cli_run):
    run_ids = [run_id for _, run_id in cli_run.runs.values()]
    rows = pg_query(
        os.environ,
        "SELECT partition, execution_status, count(*) FROM asset_check_executions WHERE run_id = ANY(%s) "
        "GROUP BY 1, 2 ORDER BY 1",
        run_ids,
    )
    assert rows == [(f"{s}|7", "SUCCEEDED", CHECKS_PER_PARTITION) for s in SCENARIOS]
    runs = pg_query(os.environ, "SELECT run_id, partition, status FROM runs WHERE run_id = ANY(%s)", run_ids)
    assert sorted(runs) == sorted((run_id, key, "SUCCESS") for key, (_, run_id) in cli_run.runs.items())


def test_arrival_run_tags_its_runs_with_the_coordinating_process(cli_run):
    """So that the next `arrival run` marks a run failed if its coordinator died (liveness.fail_dead_runs)."""
    run_ids = [run_id for _, run_id in cli_run.runs.values()]
    tags = pg_query(os.environ, "SELECT run_id, value FROM run_tags WHERE key = 'arrival/pid' AND run_id = ANY(%s)",
                    run_ids)
    assert sorted(tags) == sorted((run_id, str(cli_run.pid)) for run_id in run_ids)


def test_arrival_run_outputs_are_byte_identical_to_an_in_process_run(cluster, cli_run, in_process):
    reference = in_process.wait()
    on_cluster = output_digests(Path(cluster.env["ARRIVAL_RUN_ROOT"]), of_seed(7))
    assert len(on_cluster) >= 20
    assert on_cluster == output_digests(reference, of_seed(7))


# ---- (c) a backfill launched by the daemon ---------------------------------------------------------------------


def test_backfill_runs_every_partition_to_success(backfill):
    backfill = backfill.wait()
    print(f"\nbackfill of {len(backfill.keys)} partitions in {backfill.seconds:.1f} s")
    assert sorted(run[1] for run in backfill.runs) == sorted(backfill.keys)
    assert {run[2] for run in backfill.runs} == {"SUCCESS"}


def test_backfill_ran_at_most_two_runs_at_once(backfill):
    """The queue's limit holds whatever the timing: never more than two runs between their start and end (whether
    two did overlap depends on how fast each ran, so it is not asserted)."""
    backfill = backfill.wait()
    edges = sorted([(run[3], 1) for run in backfill.runs] + [(run[4], -1) for run in backfill.runs])
    running = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert len(backfill.runs) > 2 and max(running) <= 2


def test_backfill_steps_ran_on_the_workers(cluster, backfill):
    backfill = backfill.wait()
    workers = set(cluster.worker_pids)
    for run_id, *_ in backfill.runs:
        pids = step_pids(os.environ, run_id)
        hosts = celery_hosts(os.environ, run_id)
        assert pids and {step for step, _ in hosts} == set(pids)
        assert {host.split("@")[0] for _, host in hosts} <= WORKER_NAMES
        assert {parent_pid(pid) for pid in set().union(*pids.values())} <= workers


def test_backfill_wrote_without_a_conflict_anywhere(cluster, backfill):
    backfill.wait()  # and `arrival run --seed 7`, which published the same seed-invariant files meanwhile
    assert pg_query(os.environ, "SELECT count(*) FROM event_logs WHERE event LIKE '%%IO_WRITE_CONFLICT%%'") == [(0,)]
    for log in sorted((cluster.base / "logs").glob("*.log")):
        assert "IO_WRITE_CONFLICT" not in log.read_text(errors="replace"), log.name


def test_the_daemon_stops_by_pid_with_sigterm(backfill):
    backfill = backfill.wait()
    assert backfill.daemon_stop == "stopped"
    assert "Daemon threads shut down" in backfill.log.read_text(errors="replace")


# ---- the project's executor -------------------------------------------------------------------------------------


def sessions_opened() -> int:
    """Connections ever opened to the cluster's database (PostgreSQL's own count), this query's included."""
    rows = pg_query(os.environ, "SELECT pg_stat_clear_snapshot(); SELECT sessions FROM pg_stat_database "
                                "WHERE datname = current_database()")
    return int(rows[0][0])


def test_a_run_polls_its_steps_at_the_configured_interval_on_connections_kept_open(cluster, cli_run, backfill,
                                                                                  monkeypatch):
    """With ARRIVAL_CELERY_BROKER set the job runs the project's executor: its coordinator (this process, once the
    daemon has stopped) sleeps `celery_poll_seconds` of config/runtime.yaml between two looks at its steps, never
    dagster-celery's own second; and the coordinator and the workers reuse their database connections, where one
    per query (dagster-postgres's default) would open at least as many connections as the run writes events
    (a few are still opened: a query made while another holds the kept connection opens its own)."""
    from dagster_celery import core_execution_loop

    from arrival_assets.cluster import launch_partition_run
    from arrival_core import contracts

    backfill.wait()
    slept: list[float] = []
    monkeypatch.setattr(core_execution_loop, "time", SimpleNamespace(sleep=lambda s: (slept.append(s), time.sleep(s))))
    time.sleep(1.5)  # PostgreSQL counts a session when its backend reports its statistics
    before = sessions_opened()
    with dg.DagsterInstance.get() as instance:
        result = launch_partition_run(instance, "baseline_v1|7", cluster.env["ARRIVAL_RUN_ROOT"])
        events = len(instance.get_records_for_run(result.run_id, limit=100000).records)
    time.sleep(1.5)
    opened = sessions_opened() - before - 1
    assert result.success
    assert slept and set(slept) == {contracts.runtime_settings()["celery_poll_seconds"]} != {1}
    print(f"\n{opened} database connections opened for a run of {events} events")
    assert events > 100 and opened < events / 4, (opened, events)  # a connection per event: opened >= events


# ---- (b) SIGKILL to a worker in S3 -----------------------------------------------------------------------------


def test_the_step_of_a_killed_worker_is_handed_out_again_and_the_run_completes(killed_run):
    """Which happened: the run did not fail, S3 ran twice, on the killed worker then on the other one."""
    print(
        f"\nSIGKILL to {killed_run.victim.name} (pid {killed_run.victim.pid}) in s3_counts "
        f"({'a file staged' if killed_run.staged else 'nothing staged yet'}): the run ended "
        f"{killed_run.after_kill:.1f} s later"
    )
    assert killed_run.code == 0, killed_run.err[-3000:]
    ((status, run_id),) = killed_run.runs.values()
    assert status == "PASS"
    attempts = [host for step, host in celery_hosts(os.environ, run_id) if step == "s3_counts"]
    assert len(attempts) == 2 and attempts[0] == killed_run.host != attempts[1]  # handed out again, elsewhere
    assert pg_query(os.environ, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]


def test_the_killed_step_left_nothing_half_written(cluster, killed_run, in_process):
    root = Path(cluster.env["ARRIVAL_RUN_ROOT"])
    assert temp_files(root) == []  # what the killed step staged was swept when S3 ran again
    reference = output_digests(in_process.wait(), of_seed(8, "baseline_v1"))
    seed_8 = {path: digest for path, digest in output_digests(root, of_seed(8)).items() if "seed=8/" in path}
    assert seed_8 and all(reference.get(path) == digest for path, digest in seed_8.items())


def test_after_a_worker_restart_a_re_run_completes_byte_identical(cluster, rerun, in_process):
    """The partition was completed by the redelivered step, so `arrival run` finds every file and check
    verified by its record and launches nothing; either way it passes and the files match."""
    assert pid_alive(rerun.restarted.pid, "celery")
    assert rerun.run.code == 0, rerun.run.err[-3000:]
    assert [status for status, _ in rerun.run.runs.values()] == ["PASS"]
    root = Path(cluster.env["ARRIVAL_RUN_ROOT"])
    on_cluster = output_digests(root, of_seed(8, "baseline_v1"))
    assert sum("seed=8/" in path for path in on_cluster) >= 6
    assert on_cluster == output_digests(in_process.wait(), of_seed(8, "baseline_v1"))
    assert temp_files(root) == []


def test_sigterm_drains_a_worker_mid_step_and_the_run_finishes_on_the_other(drained_run):
    print(
        f"\nSIGTERM to {drained_run.drained.name} running s2_latent: it exited {drained_run.drain_seconds:.1f} s "
        "later"
    )
    assert not pid_alive(drained_run.drained.pid), f"{drained_run.drained.name} did not stop after SIGTERM"
    assert "Warm shutdown" in drained_run.drain_log
    assert drained_run.code == 0, drained_run.err[-3000:]
    ((status, run_id),) = drained_run.runs.values()
    assert status == "PASS"
    events = pg_query(
        os.environ, "SELECT step_key, dagster_event_type FROM event_logs WHERE run_id = %s AND step_key IS NOT NULL",
        run_id,
    )
    assert ("s2_latent", "STEP_SUCCESS") in events  # the step in flight was finished, not abandoned
    attempts = [host for step, host in celery_hosts(os.environ, run_id) if step == "s2_latent"]
    assert len(attempts) == 1  # finished where it started: not handed out again


# ---- down ------------------------------------------------------------------------------------------------------


def test_down_stops_every_process_by_pid_with_its_graceful_signal(cluster, drained_run):
    recorded = read_pids(cluster.base)
    outcome = cluster_down(cluster.base, out=lambda _: None)
    expected = {"worker-1": "stopped", "worker-2": "stopped", "redis": "stopped", "postgres": "stopped"}
    expected[drained_run.drained.name] = "not running"  # already drained by SIGTERM
    assert outcome == expected
    assert not any(pid_alive(p.pid) for p in recorded)
    for index in (1, 2):
        assert "Warm shutdown" in (cluster.base / "logs" / f"worker-{index}.log").read_text()
    assert "database system is shut down" in (cluster.base / "logs" / "postgres.log").read_text()
    assert cluster_down(cluster.base, out=lambda _: None) == {}

"""The pure helpers of the arrival_assets.cluster package: executor choice, instance config, worker command, bookkeeping.

No server is started here; see test_cluster.py for the real PostgreSQL, Redis and workers.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from clusterlib import missing_modules, need

from arrival_assets import cluster
from arrival_assets.cluster import (
    GENERATED_MARK,
    SHIPPED_INSTANCE_CONFIG,
    ClusterError,
    celery_settings,
    cluster_down,
    env_file_text,
    find_postgres_bin,
    find_redis_server,
    install_instance_config,
    instance_config,
    pid_alive,
    postgres_db_config,
    processes,
    psycopg2_url,
    servers,
    store_run_config,
    visibility_timeout,
    worker_celery_config,
    worker_command,
    worker_environment,
)
from arrival_assets.concurrency import concurrent_runs, threads_each
from arrival_core import contracts

PG = {"ARRIVAL_PG_URL": "postgresql://ar%40user:p%3Ass@db.example:6543/runs?sslmode=require"}
BROKER = {"ARRIVAL_CELERY_BROKER": "redis://127.0.0.1:6379/0"}


# ---- executor --------------------------------------------------------------------------------------------------


def test_celery_settings_default_the_backend_to_the_broker():
    assert celery_settings({}) is None
    assert celery_settings({"ARRIVAL_CELERY_BROKER": "  "}) is None
    assert celery_settings(BROKER) == {
        "broker": BROKER["ARRIVAL_CELERY_BROKER"],
        "backend": BROKER["ARRIVAL_CELERY_BROKER"],
    }
    both = {**BROKER, "ARRIVAL_CELERY_BACKEND": "redis://127.0.0.1:6379/1"}
    assert celery_settings(both)["backend"] == "redis://127.0.0.1:6379/1"


def test_executor_is_in_process_without_a_broker():
    import dagster as dg

    assert cluster.executor_from_env({}) is dg.in_process_executor


def test_executor_is_the_projects_celery_executor_with_a_broker():
    need(missing_modules("dagster_celery"))
    from arrival_assets.cluster.celery_executor import polling_celery_executor

    for env in (BROKER, {**BROKER, "ARRIVAL_CELERY_BACKEND": "redis://x/1"}):
        chosen = cluster.executor_from_env(env)
        assert chosen.name == "celery"  # dagster-celery's name and config, so the UI and run configs read the same
        assert chosen.executor_creation_fn is polling_celery_executor.executor_creation_fn


def test_the_celery_executor_polls_at_the_configured_interval():
    need(missing_modules("dagster_celery"))
    import dagster as dg
    from dagster._core.executor.init import InitExecutorContext

    from arrival_assets.cluster.celery_executor import PollingCeleryExecutor, polling_celery_executor

    config = {"broker": "redis://127.0.0.1:1/0", "backend": "redis://127.0.0.1:1/1", "retries": {"disabled": {}}}
    with dg.DagsterInstance.ephemeral() as instance:
        made = polling_celery_executor.executor_creation_fn(
            InitExecutorContext(job=dg.reconstructable(cluster.cluster_job), executor_def=polling_celery_executor,
                                executor_config=config, instance=instance))
    assert isinstance(made, PollingCeleryExecutor)
    assert made.poll_seconds == contracts.runtime_settings()["celery_poll_seconds"] < 1  # dagster-celery's is 1 s
    assert made.app_args()["broker"] == "redis://127.0.0.1:1/0" and made.app_args()["backend"] == "redis://127.0.0.1:1/1"


def test_importing_the_module_does_not_import_dagster(monkeypatch):
    monkeypatch.setenv("ARRIVAL_CELERY_BROKER", "redis://127.0.0.1:1/0")
    code = "import arrival_assets.cluster, sys; sys.exit(0 if 'dagster' not in sys.modules else 1)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cluster_job_uses_the_executor_of_the_environment(monkeypatch):
    need(missing_modules("dagster_celery"))
    monkeypatch.delenv("ARRIVAL_CELERY_BROKER", raising=False)
    assert cluster.cluster_job().executor_def.name == "in_process"
    monkeypatch.setenv("ARRIVAL_CELERY_BROKER", "redis://127.0.0.1:1/0")
    job = cluster.cluster_job()
    assert job.executor_def.name == "celery"
    assert job.executor_def.executor_creation_fn is cluster.executor_from_env(BROKER).executor_creation_fn
    tags = cluster.partition_run_tags(job, "baseline_v1|7")
    assert tags["dagster/partition"] == "baseline_v1|7"
    assert tags["dagster/partition/scenario"] == "baseline_v1"
    assert tags["dagster/partition/seed"] == "7"


def test_store_run_config_pins_the_run_root_and_keeps_the_rest(tmp_path):
    config = store_run_config(tmp_path, {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    assert config["resources"]["store"]["config"]["run_root"] == str(tmp_path.resolve())
    assert config["loggers"]["console"]["config"]["log_level"] == "CRITICAL"


# ---- instance config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"])
def test_psycopg2_url_rewrites_the_scheme_only(scheme):
    assert psycopg2_url(f"{scheme}://u:p@h:1/d?x=1") == "postgresql+psycopg2://u:p@h:1/d?x=1"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "sqlite:///x.db", "redis://h/0"])
def test_psycopg2_url_refuses_other_databases(url):
    with pytest.raises(ClusterError, match="postgresql://"):
        psycopg2_url(url)


def test_postgres_db_config_decodes_the_url():
    assert postgres_db_config(PG["ARRIVAL_PG_URL"]) == {
        "username": "ar@user",
        "password": "p:ss",
        "hostname": "db.example",
        "port": 6543,
        "db_name": "runs",
        "params": {"sslmode": "require"},
        "scheme": "postgresql+psycopg2",
    }
    assert postgres_db_config("postgresql://u@h/d")["port"] == 5432


@pytest.mark.parametrize("url", ["postgresql://u@h:5432/", "postgresql://h:5432/db"])
def test_postgres_db_config_needs_a_user_and_a_database(url):
    with pytest.raises(ClusterError, match="must name"):
        postgres_db_config(url)


def test_instance_config_is_the_shipped_one_with_the_kept_open_event_log_without_a_database(tmp_path):
    shipped = cluster.with_machine_concurrency(yaml.safe_load(SHIPPED_INSTANCE_CONFIG.read_text()), {})
    assert shipped["concurrency"]["runs"]["max_concurrent_runs"] == concurrent_runs({})
    assert instance_config({}) == shipped
    config = instance_config({}, home=tmp_path)
    assert {k: v for k, v in config.items() if k != "event_log_storage"} == shipped
    assert config["event_log_storage"] == {
        "module": "arrival_assets.event_log", "class": "KeptOpenSqliteEventLogStorage",
        "config": {"base_dir": str(tmp_path / "history" / "runs")},
    }


def test_instance_config_with_a_database_keeps_every_other_shipped_setting():
    shipped = cluster.with_machine_concurrency(yaml.safe_load(SHIPPED_INSTANCE_CONFIG.read_text()), PG)
    config = instance_config(PG)
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert {k: v for k, v in config.items() if k != "storage"} == {
        k: v for k, v in shipped.items() if k not in cluster.STORAGE_KEYS
    }


def test_the_generated_config_is_valid_for_dagster(tmp_path):
    need(missing_modules("dagster_postgres"))
    from dagster._core.instance.config import dagster_instance_config

    home = install_instance_config(tmp_path / "home", env=PG)
    config, _ = dagster_instance_config(str(home))
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == "db.example"


def test_install_tracks_the_environment_and_leaves_a_hand_written_config_alone(tmp_path):
    home = tmp_path / "home"
    target = home / "dagster.yaml"
    target.parent.mkdir()
    target.write_text(SHIPPED_INSTANCE_CONFIG.read_text())  # as earlier versions installed it
    install_instance_config(home, env={})
    sqlite_text = target.read_text()
    machine = cluster.MAX_RUNS_LINE.sub(rf"\g<1> {concurrent_runs({})}", SHIPPED_INSTANCE_CONFIG.read_text())
    assert sqlite_text.startswith(GENERATED_MARK) and machine in sqlite_text
    assert yaml.safe_load(sqlite_text) == instance_config({}, home=home.resolve())
    install_instance_config(home, env=PG)
    assert target.read_text().startswith(GENERATED_MARK) and "postgres_db" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds a password
    install_instance_config(home, env={})  # unset again: back to SQLite
    assert target.read_text() == sqlite_text
    target.write_text("telemetry:\n  enabled: false\n")
    install_instance_config(home, env=PG)
    assert target.read_text() == "telemetry:\n  enabled: false\n"


def test_concurrent_runs_are_cores_over_threads_bounded_by_memory():
    gib = 2**30
    run = contracts.runtime_settings()["run_memory_bytes"]
    assert concurrent_runs({"ARRIVAL_THREADS": "4"}, cores=16, memory_bytes=64 * gib) == 4
    assert concurrent_runs({"ARRIVAL_THREADS": "1"}, cores=16, memory_bytes=3 * run + 1) == 3  # memory bounds it
    assert concurrent_runs({"NUMBA_NUM_THREADS": "2"}, cores=2, memory_bytes=64 * gib) == 1
    assert concurrent_runs({"ARRIVAL_THREADS": "8"}, cores=2, memory_bytes=run // 2) == 1  # never below one


def test_runs_started_together_share_the_cores_unless_the_user_set_their_threads():
    assert threads_each(2, {}, cores=2) == 1
    assert threads_each(4, {}, cores=16) == 4
    assert threads_each(3, {}, cores=16) == 5
    assert threads_each(8, {}, cores=2) == 1  # never below one
    assert threads_each(1, {}, cores=16) == 16
    assert threads_each(2, {"ARRIVAL_THREADS": "2"}, cores=2) is None
    assert threads_each(2, {"NUMBA_NUM_THREADS": "1"}, cores=16) is None


def test_arrival_run_at_once_gives_each_partition_process_its_share(monkeypatch):
    """`arrival run --seed … --parallel 2` on 16 cores: each `arrival run` child is started with 8 threads, or
    with the user's $ARRIVAL_THREADS when set."""
    from arrival_assets import parallel_runs, run_roots

    started: list[str | None] = []

    def child(command, **kwargs):
        started.append(kwargs["env"].get("ARRIVAL_THREADS"))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(run_roots, "partitions_to_run", lambda **_: [(1, "baseline_v1"), (2, "baseline_v1"),
                                                                         (3, "baseline_v1")])
    monkeypatch.setattr(parallel_runs, "threads_each", lambda at_once: threads_each(at_once, {}, cores=16))
    monkeypatch.setattr(parallel_runs.subprocess, "run", child)
    monkeypatch.delenv("ARRIVAL_THREADS", raising=False)
    common = {"root": None, "scenario": None, "quiet": True, "debug": False, "create": False, "err": print}
    assert parallel_runs.run_in_processes(seeds=["1", "2", "3"], parallel=2, **common) == 0
    assert started == ["8", "8", "8"]
    started.clear()
    monkeypatch.setenv("ARRIVAL_THREADS", "3")
    monkeypatch.setattr(parallel_runs, "threads_each", lambda at_once: threads_each(at_once, cores=16))
    assert parallel_runs.run_in_processes(seeds=["1", "2", "3"], parallel=2, **common) == 0
    assert started == ["3", "3", "3"]


@pytest.mark.parametrize(("waits", "given", "goes", "left"), [
    (False, "go\nrest", True, "go\nrest"),  # not started early: its stdin is not read
    (True, "go\nrest", True, "rest"),
    (True, "stop\nrest", False, "rest"),
    (True, "", False, ""),  # the parent ended without a word
])
def test_a_partition_process_started_early_goes_on_only_on_its_parents_word(waits, given, goes, left):
    """A partition's process started before its parent ensured the world waits for "go" on its stdin (a parent that
    stopped or ended says no); one not started so never reads its stdin."""
    probe = ("import sys; from arrival_assets.parallel_runs import wait_for_world; "
             "print(wait_for_world(), repr(sys.stdin.read()))")
    env = {k: v for k, v in os.environ.items() if k != "ARRIVAL_WAIT_FOR_WORLD"}
    done = subprocess.run([sys.executable, "-c", probe], input=given, capture_output=True, text=True,
                          env=env | ({"ARRIVAL_WAIT_FOR_WORLD": "1"} if waits else {}), check=True, timeout=60)
    assert done.stdout.split(" ", 1) == [str(goes), repr(left) + "\n"]


def test_the_instance_written_for_a_machine_sets_its_concurrency(tmp_path):
    home = install_instance_config(tmp_path / "home", env={"ARRIVAL_THREADS": "1"})
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == concurrent_runs({"ARRIVAL_THREADS": "1"})


def test_install_defaults_to_dagster_home(tmp_path):
    home = install_instance_config(env={"DAGSTER_HOME": str(tmp_path / "dh")})
    assert home == (tmp_path / "dh").resolve() and (home / "dagster.yaml").is_file()


# ---- worker ----------------------------------------------------------------------------------------------------


def test_worker_command_runs_the_projects_celery_app_with_this_interpreter():
    command = worker_command(3, "heavy", "w1")
    assert command[:6] == [sys.executable, "-m", "celery", "-A", "arrival_assets.cluster.celery_app", "worker"]
    assert command[command.index("--concurrency") + 1] == "3"
    assert command[command.index("--queues") + 1] == "heavy"
    assert command[command.index("--hostname") + 1] == "w1@%h"
    assert command[command.index("--prefetch-multiplier") + 1] == "1"
    assert "--include" not in command  # the main process never loads the code before forking its pool
    assert not any("redis://" in part for part in command)  # the broker travels in the environment


def test_the_worker_acknowledges_a_step_when_it_ends_and_hands_out_a_lost_one_again():
    config = worker_celery_config({"max_retries": 3}, env={})
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is False
    options = config["broker_transport_options"]
    assert options["max_retries"] == 3  # dagster-celery's own options are kept
    assert options["visibility_timeout"] == 6 * 3600
    assert options["unacked_restore_interval"] == 10 and options["unacked_restore_throttle"] == 1
    assert config["worker_proc_alive_timeout"] >= 60  # a pool process imports the code before it is up


def test_the_visibility_timeout_comes_from_the_environment():
    assert visibility_timeout({"ARRIVAL_CELERY_VISIBILITY_TIMEOUT": " 45 "}) == 45
    for bad in ("0", "-5", "1.5", "soon"):
        with pytest.raises(ClusterError, match="ARRIVAL_CELERY_VISIBILITY_TIMEOUT"):
            visibility_timeout({"ARRIVAL_CELERY_VISIBILITY_TIMEOUT": bad})


def test_the_worker_app_registers_dagster_celerys_tasks_without_loading_the_code():
    need(missing_modules("dagster_celery"))
    code = (
        "import sys; from arrival_assets.cluster import celery_app as m; "
        "assert {'execute_plan', 'execute_job', 'resume_job'} <= set(m.app.tasks); "
        "assert m.execute_plan.acks_late; "
        "sys.exit(0 if 'arrival_assets.definitions' not in sys.modules else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


@pytest.mark.parametrize(("concurrency", "queue"), [(0, "dagster"), (1, "a b"), (1, "")])
def test_worker_command_refuses_bad_arguments(concurrency, queue):
    with pytest.raises(ClusterError):
        worker_command(concurrency, queue)


def test_worker_environment_sets_celerys_variables():
    env = worker_environment({**BROKER, "ARRIVAL_CELERY_BACKEND": "redis://127.0.0.1:6379/1", "X": "y"})
    assert env["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert env["CELERY_RESULT_BACKEND"] == "redis://127.0.0.1:6379/1"
    assert env["X"] == "y"
    with pytest.raises(ClusterError, match="ARRIVAL_CELERY_BROKER"):
        worker_environment({})


def test_worker_without_a_broker_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARRIVAL_CELERY")}
    done = subprocess.run(
        [sys.executable, "-m", "arrival_assets.cluster", "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2
    assert "ARRIVAL_CELERY_BROKER is not set" in done.stderr


# ---- local cluster bookkeeping ---------------------------------------------------------------------------------


def test_missing_servers_name_their_debian_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match=r"Debian package `postgresql`"):
        find_postgres_bin("initdb", search_root=tmp_path)
    with pytest.raises(ClusterError, match=r"Debian package `redis-server`"):
        find_redis_server()


def test_postgres_binaries_are_found_off_path_under_the_newest_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    for version in ("9.6", "13", "15"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").write_text("")
    assert find_postgres_bin("initdb", search_root=tmp_path) == tmp_path / "15" / "bin" / "initdb"


def test_env_file_quotes_values(tmp_path):
    text = env_file_text({"ARRIVAL_PG_URL": "postgresql://u:a b'c@h/d", "DAGSTER_HOME": "/x y"})
    script = tmp_path / "env.sh"
    script.write_text(text)
    shown = subprocess.run(
        ["bash", "-c", f'source {script} && printf "%s\\n%s" "$ARRIVAL_PG_URL" "$DAGSTER_HOME"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "postgresql://u:a b'c@h/d\n/x y"


def test_env_file_reads_back_what_it_exports(tmp_path):
    env = {"ARRIVAL_PG_URL": "postgresql://u:a b'c@h/d", "DAGSTER_HOME": "/x y", "EMPTY": ""}
    (tmp_path / "env.sh").write_text(env_file_text(env))
    assert cluster.read_env_file(tmp_path / "env.sh") == env


def test_a_worker_is_ready_only_from_what_its_log_says_after_it_started(tmp_path):
    log = tmp_path / "worker-1.log"
    log.write_text("[...] arrival-1@vm ready.\n")  # an earlier run of the same worker
    ready = processes.log_ready(log, r"@\S+ ready\.", processes.log_size(log))
    assert not ready()
    with open(log, "a") as handle:
        handle.write("[...] arrival-1@vm ready.\n")
    assert ready()


def test_restarting_a_worker_that_runs_is_refused(tmp_path):
    code = "import time; print('up', flush=True); time.sleep(30)  # celery"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        processes.write_pids(tmp_path, [cluster.Process("worker-1", proc.pid, "SIGTERM", "celery")])
        with pytest.raises(ClusterError, match=rf"worker-1 is running \(pid {proc.pid}\)"):
            cluster.restart_worker(tmp_path, 1)
    finally:
        proc.kill()
        proc.wait()


def test_down_without_a_cluster_does_nothing(tmp_path):
    assert cluster_down(tmp_path, out=lambda _: None) == {}


def test_pid_alive_checks_the_command_line_and_ignores_zombies():
    code = "import time; print('up', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"  # past exec: /proc/<pid>/cmdline names the interpreter
        assert pid_alive(proc.pid, "python")
        assert not pid_alive(proc.pid, "redis-server")  # a reused pid is not the recorded process
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)


def test_stale_pids_are_reported_not_running(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    processes.write_pids(tmp_path, [cluster.Process("redis", proc.pid, "SIGTERM", "redis-server")])
    assert cluster_down(tmp_path, out=lambda _: None) == {"redis": "not running"}
    assert not (tmp_path / "pids.json").exists()


def test_cluster_folder_must_be_reachable_by_the_postgres_account(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root hands PostgreSQL to an unprivileged account")
    account = servers.pg_account()
    base = Path(tempfile.mkdtemp(prefix="arrival-reach-"))
    try:
        base.chmod(0o755)
        servers.check_traversable(base, account)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        with pytest.raises(ClusterError, match=rf"cannot enter {closed}: .*chmod o\+x"):
            servers.check_traversable(closed / "postgres", account)
    finally:
        shutil.rmtree(base)

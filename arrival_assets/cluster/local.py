"""`arrival cluster up|down`: a real PostgreSQL, a real Redis and N Celery workers on this machine, each a
separate process recorded by pid in <base>/pids.json, and the env.sh that points every shell at them."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from .instance import install_instance_config
from .processes import (
    ClusterInfo,
    Process,
    env_file_text,
    free_port,
    log_ready,
    log_size,
    pid_alive,
    read_env_file,
    read_pids,
    read_state,
    spawn_logged,
    stop_process,
    wait_for,
    write_private,
)
from .servers import (
    PG_DATABASE,
    PG_USER,
    find_postgres_server,
    find_redis_server,
    pg_account,
    start_postgres,
    start_redis,
)
from .settings import (
    BACKEND_ENV,
    BROKER_ENV,
    DAGSTER_CELERY_PIN,
    DAGSTER_HOME_ENV,
    DEFAULT_CLUSTER_DIR,
    DEFAULT_QUEUE,
    PG_URL_ENV,
    RUN_ROOT_ENV,
    ClusterError,
    Printer,
)

REQUIRED_MODULES = (("dagster_celery", "dagster-celery[redis]"), ("dagster_postgres", "dagster-postgres"))
WORKER_READY = r"@\S+ ready\."  # the line a Celery worker logs once it consumes its queue


def _refuse_running(base: Path) -> None:
    running = [p for p in read_pids(base) if pid_alive(p.pid, p.match)]
    if running:
        raise ClusterError(
            f"a cluster is already up in {base} (pids {', '.join(str(p.pid) for p in running)}): "
            "stop it first with `arrival cluster down`"
        )


def _check_requirements() -> None:
    """Every server binary, Python package and account is there before anything starts."""
    find_postgres_server()
    find_redis_server()
    for module, package in REQUIRED_MODULES:
        if importlib.util.find_spec(module) is None:
            raise ClusterError(f"{module} is not installed: pip install '{package}=={DAGSTER_CELERY_PIN}'")
    pg_account()


def _prepare(base: Path, run_root: str | os.PathLike | None) -> tuple[ClusterInfo, str, int, int]:
    """The cluster folder, its password (kept across restarts), two free ports and the environment."""
    from ..run_roots import resolve_run_root

    base.mkdir(parents=True, exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    password = read_state(base).get("pg_password") or secrets.token_urlsafe(18)
    pg_port, redis_port = free_port(), free_port()
    while redis_port == pg_port:
        redis_port = free_port()
    write_private(base / "cluster.json", json.dumps({"pg_password": password}) + "\n")
    env = {
        PG_URL_ENV: f"postgresql://{PG_USER}:{password}@127.0.0.1:{pg_port}/{PG_DATABASE}",
        BROKER_ENV: f"redis://127.0.0.1:{redis_port}/0",
        BACKEND_ENV: f"redis://127.0.0.1:{redis_port}/1",
        DAGSTER_HOME_ENV: str(base / "dagster_home"),
        RUN_ROOT_ENV: str(resolve_run_root(run_root)),
    }
    return ClusterInfo(base=base, env_file=base / "env.sh", env=env), password, pg_port, redis_port


def worker_process_command(index: int, concurrency: int, queue: str) -> list[str]:
    """`python -m arrival_assets.cluster worker ...` for the cluster's worker number `index`."""
    return [
        sys.executable,
        "-m",
        "arrival_assets.cluster",
        "worker",
        "--concurrency",
        str(concurrency),
        "--queue",
        queue,
        "--name",
        f"arrival-{index}",
    ]


def start_worker(info: ClusterInfo, index: int, concurrency: int, queue: str) -> tuple[subprocess.Popen, int]:
    """Start worker number `index` in its own session with the cluster's environment and record it; return
    the process and where its log stood before it started."""
    name, log_path = f"worker-{index}", info.base / "logs" / f"worker-{index}.log"
    offset = log_size(log_path)
    proc = spawn_logged(worker_process_command(index, concurrency, queue), log_path, env={**os.environ, **info.env})
    info.record(proc, name, "SIGTERM", "celery", log_path)
    return proc, offset


def wait_for_worker(info: ClusterInfo, proc: subprocess.Popen, index: int, offset: int, timeout: float) -> None:
    log_path = info.base / "logs" / f"worker-{index}.log"
    ready = log_ready(log_path, WORKER_READY, offset)
    wait_for(ready, proc, f"Celery worker-{index}", log_path, timeout)


def start_workers(
    info: ClusterInfo, workers: int, concurrency: int, queue: str, timeout: float, out: Printer
) -> None:
    """Start `workers` workers at once, then wait for each to log that it is ready."""
    started = [(i, *start_worker(info, i, concurrency, queue)) for i in range(1, workers + 1)]
    t0 = time.monotonic()
    for index, proc, offset in started:
        wait_for_worker(info, proc, index, offset, timeout)
        out(f"{f'worker-{index}':<9} pid {proc.pid}  queue {queue}, concurrency {concurrency}")
    if started:
        out(f"workers ready ({time.monotonic() - t0:.1f} s)")


def restart_worker(
    base_dir: str | os.PathLike = DEFAULT_CLUSTER_DIR,
    index: int = 1,
    *,
    concurrency: int = 1,
    queue: str = DEFAULT_QUEUE,
    timeout: float = 120.0,
) -> Process:
    """Start worker number `index` of a running cluster again (after it died); wait until it is ready.

    Its record in pids.json is replaced; a worker of that number still running is an error."""
    base = Path(base_dir).expanduser().resolve()
    processes = read_pids(base)
    name = f"worker-{index}"
    alive = [p for p in processes if p.name == name and pid_alive(p.pid, p.match)]
    if alive:
        raise ClusterError(f"{name} is running (pid {alive[0].pid}): stop it first")
    env_file = base / "env.sh"
    info = ClusterInfo(base, env_file, read_env_file(env_file), [p for p in processes if p.name != name])
    proc, offset = start_worker(info, index, concurrency, queue)
    wait_for_worker(info, proc, index, offset, timeout)
    return info.processes[-1]


def _start_servers(info: ClusterInfo, password: str, pg_port: int, redis_port: int, timeout: float,
                   out: Printer) -> None:
    t0 = time.monotonic()
    proc = start_postgres(info, pg_port, password, timeout)
    out(f"postgres  pid {proc.pid}  127.0.0.1:{pg_port}  ({time.monotonic() - t0:.1f} s)")
    t0 = time.monotonic()
    proc = start_redis(info, redis_port, timeout)
    out(f"redis     pid {proc.pid}  127.0.0.1:{redis_port}  ({time.monotonic() - t0:.1f} s)")


def cluster_up(
    workers: int = 2,
    base_dir: str | os.PathLike = DEFAULT_CLUSTER_DIR,
    *,
    run_root: str | os.PathLike | None = None,
    concurrency: int = 1,
    queue: str = DEFAULT_QUEUE,
    timeout: float = 120.0,
    out: Printer = print,
) -> ClusterInfo:
    """Start PostgreSQL, Redis and `workers` Celery workers as separate processes; write env.sh and pids.json.

    PostgreSQL: `initdb` (once) into <base>/postgres/data, listening on 127.0.0.1 only, on a free port, with
    no Unix socket; run as the `postgres` account when we are root. Redis: no persistence, 127.0.0.1, a free
    port. Workers: `python -m arrival_assets.cluster worker`, each in its own session, logs in <base>/logs.
    Every process is recorded in <base>/pids.json as soon as it starts; a failure stops what was started.
    """
    if workers < 0:
        raise ClusterError(f"--workers must be 0 or more, got {workers}")
    base = Path(base_dir).expanduser().resolve()
    _refuse_running(base)
    _check_requirements()
    info, password, pg_port, redis_port = _prepare(base, run_root)
    try:
        _start_servers(info, password, pg_port, redis_port, timeout, out)
        install_instance_config(info.env[DAGSTER_HOME_ENV], env={**os.environ, **info.env})
        write_private(info.env_file, env_file_text(info.env))
        start_workers(info, workers, concurrency, queue, timeout, out)
    except BaseException:
        cluster_down(base, out=lambda _line: None)
        raise
    out(f"environment: source {info.env_file}")
    return info


def _stop_order(processes: list[Process]) -> list[Process]:
    """Workers first (their steps finish while the servers still run), then Redis, then PostgreSQL."""
    order = [p for p in processes if p.name.startswith("worker")]
    return order + [p for p in processes if p.name == "redis"] + [p for p in processes if p.name == "postgres"]


def cluster_down(
    base_dir: str | os.PathLike = DEFAULT_CLUSTER_DIR, *, timeout: float = 60.0, out: Printer = print
) -> dict[str, str]:
    """Stop every recorded process by pid: workers first (SIGTERM: a warm shutdown), then Redis, then
    PostgreSQL (SIGINT: a fast shutdown). A process still running after `timeout` seconds is killed with
    its process group. Return name -> "stopped" | "killed" | "not running"."""
    base = Path(base_dir).expanduser().resolve()
    processes = read_pids(base)
    outcome: dict[str, str] = {}
    for proc in _stop_order(processes):
        started = time.monotonic()
        outcome[proc.name] = stop_process(proc, timeout)
        took = "" if outcome[proc.name] == "not running" else f" ({time.monotonic() - started:.1f} s)"
        out(f"{proc.name:<9} pid {proc.pid}  {outcome[proc.name]}{took}")
    if processes:
        (base / "pids.json").unlink(missing_ok=True)
    return outcome

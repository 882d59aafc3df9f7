"""`arrival worker`: a Celery worker of dagster-celery's app for this code location, in the foreground."""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Mapping

from ..executors import celery_settings
from .instance import install_instance_config
from .settings import (
    BROKER_ENV,
    DAGSTER_CELERY_PIN,
    DAGSTER_HOME_ENV,
    DEFAULT_QUEUE,
    VISIBILITY_TIMEOUT_ENV,
    ClusterError,
)

CELERY_APP = "arrival_assets.cluster.celery_app"  # dagster-celery's tasks, acknowledged when a step ends
DEFAULT_VISIBILITY_TIMEOUT = 6 * 3600  # seconds; above the longest step (see worker_celery_config)
RESTORE_INTERVAL = 10  # seconds between two looks of a live worker for messages of dead workers
CODE_LOCATION = "arrival_assets.definitions"  # what each step's pool process imports to rebuild the job


def visibility_timeout(env: Mapping[str, str] | None = None) -> int:
    """$ARRIVAL_CELERY_VISIBILITY_TIMEOUT in seconds (default 6 hours)."""
    env = os.environ if env is None else env
    text = (env.get(VISIBILITY_TIMEOUT_ENV) or "").strip()
    if not text:
        return DEFAULT_VISIBILITY_TIMEOUT
    if not text.isdigit() or int(text) < 1:
        raise ClusterError(f"{VISIBILITY_TIMEOUT_ENV} must be a whole number of seconds, got {text!r}")
    return int(text)


def worker_celery_config(
    transport_options: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """The worker's Celery settings on top of dagster-celery's.

    - `task_acks_late`: a step's message is acknowledged when the step ends, so a worker killed mid-step
      does not lose it: the broker hands it to a live worker `visibility_timeout` seconds after it was
      delivered (Redis checks every RESTORE_INTERVAL seconds). A step still running after that long is handed
      out twice (its outputs are published without clobbering, so the copies agree): keep the timeout
      above the longest step.
    - `task_reject_on_worker_lost` false: a pool process that dies under a live worker fails its step at
      once (WorkerLostError, the run fails) instead of requeueing a step that may kill its process again.
    """
    options = dict(transport_options or {})
    options.update(
        visibility_timeout=visibility_timeout(env),
        unacked_restore_interval=RESTORE_INTERVAL,
        unacked_restore_throttle=1,  # every look scans (kombu's default scans every tenth)
    )
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": options,
        # A pool process imports the code location before it reports itself up (celery_app); Celery's
        # default of 4 s would kill and restart it in the middle of that import.
        "worker_proc_alive_timeout": 300,
    }


def worker_command(
    concurrency: int = 1, queue: str = DEFAULT_QUEUE, name: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    """The Celery worker command line for this code location (same interpreter, dagster-celery's app).

    The broker and backend are not on the command line (a password would show in `ps`): they are passed in
    the environment of `worker_environment`.
    """
    if concurrency < 1:
        raise ClusterError(f"--concurrency must be at least 1, got {concurrency}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", queue):
        raise ClusterError(f"--queue must be a plain queue name, got {queue!r}")
    node = name or f"arrival-{uuid.uuid4().hex[:6]}"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",  # a step is long: a worker takes one task per free process
        "--queues",
        queue,
        "--hostname",
        f"{node}@%h",
        # No `--include` of the code location: the main process must not load it before it forks its pool.
        # Building the definitions runs polars (its thread pool starts), and a process forked after that
        # hangs on its first polars query. Each pool process imports it as it starts (celery_app).
    ]


def worker_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: this one, with Celery's broker and backend from the ARRIVAL_CELERY_* variables."""
    env = dict(os.environ if env is None else env)
    settings = celery_settings(env)
    if settings is None:
        raise ClusterError(
            f"{BROKER_ENV} is not set: a worker needs a broker (e.g. redis://127.0.0.1:6379/0)"
        )
    env["CELERY_BROKER_URL"] = settings["broker"]
    env["CELERY_RESULT_BACKEND"] = settings["backend"]
    return env


def run_worker(concurrency: int = 1, queue: str = DEFAULT_QUEUE, name: str | None = None) -> int:
    """Run a worker in the foreground; it never returns on success.

    The process becomes the Celery worker (exec), so its pid is the worker's and signals reach Celery as
    they are: SIGTERM (or one Ctrl-C) is a warm shutdown that lets running steps finish, a second Ctrl-C or
    SIGQUIT a cold one. $DAGSTER_HOME gets the instance config of the environment first.
    """
    import importlib.util

    env = worker_environment()
    if importlib.util.find_spec("dagster_celery") is None:
        raise ClusterError(
            f"dagster-celery is not installed: pip install 'dagster-celery[redis]=={DAGSTER_CELERY_PIN}'"
        )
    env[DAGSTER_HOME_ENV] = str(install_instance_config(env=env))
    command = worker_command(concurrency, queue, name)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
    return 0  # not reached

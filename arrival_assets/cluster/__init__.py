"""Beyond one machine: a Postgres-backed instance, the Celery executor, workers and a local cluster.

Three environment variables switch the project from one process to many, each read when a function
here is called (never at import):

- ``ARRIVAL_PG_URL`` (``postgresql://user:password@host:port/db``): the Dagster instance keeps runs,
  events and schedules in that database (dagster-postgres). Unset, the shipped SQLite config stays.
- ``ARRIVAL_CELERY_BROKER`` (e.g. ``redis://127.0.0.1:6379/0``) and ``ARRIVAL_CELERY_BACKEND``
  (default: the broker): the graph's executor is dagster-celery's, so every step (the sealed inputs, each
  state with its checks) is a Celery task run by a worker (``arrival worker``).
- ``ARRIVAL_RUN_ROOT`` and ``DAGSTER_HOME``: one run root and one instance folder shared by every
  process (the coordinator, the workers, the webserver).

Modules: ``settings`` (the variables, defaults, ClusterError), ``executor`` (the cluster job, one partition run
through it; the executor of the environment is ``arrival_assets.executors``), ``celery_executor`` (dagster-celery's
executor polling at ``celery_poll_seconds``), ``connections`` (database connections kept open), ``instance`` (the
Postgres instance config),
``worker`` (``arrival worker``), ``celery_app`` (the worker's Celery app), ``processes`` (pids,
readiness, stopping by pid), ``servers`` (a local PostgreSQL and Redis), ``local`` (``cluster up|down``)
and ``commands`` (the argument parsers).

The package imports only the standard library and PyYAML at import time; Dagster, dagster-celery and
psycopg2 are imported by the functions that need them.
"""

from .commands import add_cluster_parser, add_instance_parser, add_worker_parser, main
from .executor import (
    celery_settings,
    cluster_job,
    executor_from_env,
    launch_partition_run,
    partition_run_tags,
    store_run_config,
)
from .instance import (
    GENERATED_MARK,
    MAX_RUNS_LINE,
    STORAGE_KEYS,
    install_instance_config,
    instance_config,
    instance_config_text,
    postgres_db_config,
    psycopg2_url,
    with_machine_concurrency,
)
from .local import cluster_down, cluster_up, restart_worker, start_worker
from .processes import ClusterInfo, Process, env_file_text, free_port, pid_alive, read_env_file, read_pids
from .servers import find_postgres_bin, find_redis_server
from .settings import (
    BACKEND_ENV,
    BROKER_ENV,
    DAGSTER_HOME_ENV,
    DEFAULT_CLUSTER_DIR,
    DEFAULT_DAGSTER_HOME,
    DEFAULT_QUEUE,
    PG_URL_ENV,
    RUN_ROOT_ENV,
    SHIPPED_INSTANCE_CONFIG,
    VISIBILITY_TIMEOUT_ENV,
    ClusterError,
)
from .worker import (
    run_worker,
    visibility_timeout,
    worker_celery_config,
    worker_command,
    worker_environment,
)

__all__ = [
    "BACKEND_ENV",
    "BROKER_ENV",
    "DAGSTER_HOME_ENV",
    "DEFAULT_CLUSTER_DIR",
    "DEFAULT_DAGSTER_HOME",
    "DEFAULT_QUEUE",
    "GENERATED_MARK",
    "MAX_RUNS_LINE",
    "PG_URL_ENV",
    "RUN_ROOT_ENV",
    "SHIPPED_INSTANCE_CONFIG",
    "STORAGE_KEYS",
    "VISIBILITY_TIMEOUT_ENV",
    "ClusterError",
    "ClusterInfo",
    "Process",
    "add_cluster_parser",
    "add_instance_parser",
    "add_worker_parser",
    "celery_settings",
    "cluster_down",
    "cluster_job",
    "cluster_up",
    "env_file_text",
    "executor_from_env",
    "find_postgres_bin",
    "find_redis_server",
    "free_port",
    "install_instance_config",
    "instance_config",
    "instance_config_text",
    "launch_partition_run",
    "main",
    "partition_run_tags",
    "pid_alive",
    "postgres_db_config",
    "psycopg2_url",
    "read_env_file",
    "read_pids",
    "restart_worker",
    "run_worker",
    "start_worker",
    "store_run_config",
    "visibility_timeout",
    "with_machine_concurrency",
    "worker_celery_config",
    "worker_command",
    "worker_environment",
]

"""The `arrival_5b` job with the executor of the environment (`executors`) and one partition run launched through
it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..executors import celery_settings, executor_from_env

__all__ = ["celery_settings", "cluster_job", "executor_from_env", "launch_partition_run", "partition_run_tags",
           "store_run_config"]


def cluster_job():
    """The `arrival_5b` job with the executor of the environment.

    Module-scoped and argument-free so that ``dagster.reconstructable(cluster_job)`` gives a pointer a
    worker can load: a Celery worker imports this module (``arrival_assets.cluster.executor``) and calls it
    to rebuild the job for each step.
    """
    from ..definitions import build_definitions
    from ..jobs import JOB_NAME

    return build_definitions().resolve_job_def(JOB_NAME)


def partition_run_tags(job, key: str) -> dict[str, str]:
    """The tags of a partition run: `dagster/partition` and one `dagster/partition/<dimension>` per dimension."""
    return dict(job.get_tags_for_partition_key(str(key), None))


def store_run_config(run_root: str | os.PathLike, run_config: Mapping[str, Any] | None = None) -> dict:
    """Run config that pins the store's run root, so that every worker opens the same folder."""
    config = dict(run_config or {})
    resources = dict(config.get("resources") or {})
    store = dict(resources.get("store") or {})
    store["config"] = {**(store.get("config") or {}), "run_root": str(Path(run_root).resolve())}
    resources["store"] = store
    config["resources"] = resources
    return config


def launch_partition_run(
    instance, key: str, run_root: str | os.PathLike, run_config: Mapping[str, Any] | None = None
):
    """Run the job for one partition with the executor of the environment; return when it has finished.

    The coordinator runs in this process (``dagster.execute_job``); with the Celery executor every step is
    sent to the workers and this process only orchestrates. The instance must be persistent (a DAGSTER_HOME).
    The run carries this process's host and pid, so that the next `arrival run` marks it failed if this
    process dies before the run ends (`liveness.fail_dead_runs`).
    """
    import importlib

    import dagster as dg

    from ..liveness import process_tags
    from .connections import keep_connections_open

    keep_connections_open(instance)  # the run's planned materialisations and checks are events written from here
    # Reach the function through its module name (not `__main__`), so the pointer sent to workers imports.
    target = importlib.import_module(__name__).cluster_job
    job = target()
    with warnings.catch_warnings():
        # dagster-celery registers its step task again for each submission; Celery warns every time.
        warnings.filterwarnings("ignore", message=r"Task name 'execute_plan' is already registered")
        return dg.execute_job(
            dg.reconstructable(target),
            instance=instance,
            run_config=store_run_config(run_root, run_config),
            tags={**partition_run_tags(job, key), **process_tags()},
            raise_on_error=False,
        )

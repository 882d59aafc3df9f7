"""The executor of the environment, read when the definitions are built: dagster-celery's (as the project runs it,
`cluster/celery_executor.py`) when ARRIVAL_CELERY_BROKER is set, else in process. Imports only the standard library
at import time."""

from __future__ import annotations

import os
from collections.abc import Mapping

BROKER_ENV = "ARRIVAL_CELERY_BROKER"
BACKEND_ENV = "ARRIVAL_CELERY_BACKEND"


def celery_settings(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The Celery broker and result backend of the environment, or None when ARRIVAL_CELERY_BROKER is unset."""
    env = os.environ if env is None else env
    broker = (env.get(BROKER_ENV) or "").strip()
    if not broker:
        return None
    backend = (env.get(BACKEND_ENV) or "").strip() or broker
    return {"broker": broker, "backend": backend}


def executor_from_env(env: Mapping[str, str] | None = None):
    """The project's Celery executor (dagster-celery's, polling at `celery_poll_seconds`) bound to
    ARRIVAL_CELERY_BROKER/BACKEND, else Dagster's in-process executor."""
    import dagster as dg

    env = os.environ if env is None else env
    if celery_settings(env) is None:
        return dg.in_process_executor
    from .cluster.celery_executor import polling_celery_executor as celery_executor

    # Environment references, not values: a password in a URL never shows in the UI, and the coordinator of
    # each run reads the variables when the run starts.
    backend_env = BACKEND_ENV if (env.get(BACKEND_ENV) or "").strip() else BROKER_ENV
    return celery_executor.configured({"broker": {"env": BROKER_ENV}, "backend": {"env": backend_env}})

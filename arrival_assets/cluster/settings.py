"""The names every part of the cluster package shares: environment variables, defaults and the error type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..executors import BACKEND_ENV, BROKER_ENV  # noqa: F401 - the executor's variables, shared with the cluster

PG_URL_ENV = "ARRIVAL_PG_URL"
RUN_ROOT_ENV = "ARRIVAL_RUN_ROOT"
VISIBILITY_TIMEOUT_ENV = "ARRIVAL_CELERY_VISIBILITY_TIMEOUT"  # seconds before a lost step is handed out again
DAGSTER_HOME_ENV = "DAGSTER_HOME"
DEFAULT_DAGSTER_HOME = Path(".arrival") / "dagster_home"
DEFAULT_CLUSTER_DIR = Path(".arrival") / "cluster"
DEFAULT_QUEUE = "dagster"  # dagster-celery's default queue: steps without a queue tag go there
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # arrival_assets/
SHIPPED_INSTANCE_CONFIG = PACKAGE_DIR / "dagster_home" / "dagster.yaml"
DAGSTER_CELERY_PIN = "0.29.27"  # dagster-celery and dagster-postgres, matching dagster 1.13.27

Printer = Callable[[str], None]


class ClusterError(RuntimeError):
    """A cluster, worker or instance-config problem with a message meant for the person at the terminal."""

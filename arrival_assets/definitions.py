"""The code location: composes assets, checks, the job, the sensor and the store resource."""

from __future__ import annotations

import dagster as dg

from .assets import build_assets
from .checks import build_checks
from .executors import executor_from_env
from .jobs import arrival_5b
from .progress import step_progress
from .resources import StoreResource
from .sensors import register_partitions


def build_definitions(store: StoreResource | None = None) -> dg.Definitions:
    """The whole graph bound to a store (default: the run root of $ARRIVAL_RUN_ROOT or ./.arrival/demo); its
    executor is dagster-celery's when ARRIVAL_CELERY_BROKER is set, else in process."""
    return dg.Definitions(
        assets=build_assets(),
        asset_checks=build_checks(),
        jobs=[arrival_5b],
        sensors=[register_partitions],
        resources={"store": store or StoreResource()},
        executor=executor_from_env(),
        loggers={**dg.default_loggers(), "progress": step_progress},
    )


defs = build_definitions()

"""The Celery executor of the project: dagster-celery's, with the coordinator looking for its steps' results every
`celery_poll_seconds` (config/runtime.yaml) instead of every second, and holding its database connections open.

dagster-celery's `core_celery_execution_loop` sleeps `TICK_SECONDS` (1 s) between two looks at its steps: a step
that ends waits for the next look before the coordinator sees it and submits the steps that follow, and the run's
end waits for one too. In a chain of steps of a few seconds each (one partition) that is about 0.6 s a step.
The loop reads `TICK_SECONDS` from its module at each sleep and has no other setting for it, so the executor sets it
there as a run starts; every run of a process reads the same value from config/runtime.yaml.

Imported only where the executor is built (`executors.executor_from_env`): it imports Dagster and dagster-celery.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.retries import RetryMode
from dagster_celery import core_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

from arrival_core import contracts

from .connections import keep_connections_open


def poll_seconds() -> float:
    """Seconds between two looks of a run's coordinator at its Celery steps (config/runtime.yaml)."""
    return float(contracts.runtime_settings()["celery_poll_seconds"])


class PollingCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor looking at its steps every `poll_seconds`, on an instance whose database
    connections stay open for the run (`keep_connections_open`)."""

    def __init__(self, retries: RetryMode, poll_seconds: float, **celery_args) -> None:
        super().__init__(retries, **celery_args)
        self.poll_seconds = poll_seconds

    def execute(self, plan_context, execution_plan):
        keep_connections_open(plan_context.instance)
        core_execution_loop.TICK_SECONDS = self.poll_seconds
        return core_execution_loop.core_celery_execution_loop(
            plan_context, execution_plan, step_execution_fn=_submit_task
        )


@dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=dg.multiple_process_executor_requirements())
def polling_celery_executor(init_context) -> PollingCeleryExecutor:
    """dagster-celery's `celery_executor` (same name and config) polling every `celery_poll_seconds`."""
    config = init_context.executor_config
    return PollingCeleryExecutor(
        retries=RetryMode.from_config(config["retries"]),
        poll_seconds=poll_seconds(),
        broker=config.get("broker"),
        backend=config.get("backend"),
        include=config.get("include"),
        config_source=config.get("config_source"),
    )

"""The Celery app `arrival worker` runs (``celery -A arrival_assets.cluster.celery_app``): dagster-celery's
tasks, acknowledged when a step ends rather than when it starts, and the code location loaded by each pool
process as it starts.

Celery acknowledges a task as a worker starts it by default: a worker killed mid-step (SIGKILL, the OOM
killer, a lost machine) takes the step with it and the run's coordinator waits for its result forever. Here
(`worker_celery_config`) the broker keeps the message of a step in flight until the step ends; when its
worker dies, a live worker hands it out again once `visibility_timeout` seconds have passed since it was
delivered, and the run completes. A pool process that dies under a live worker fails its step at once
instead (a step that kills its process is not retried forever).

The main process never imports the code location (see `worker.worker_command`): each pool process does,
right after it is forked, so the first step does not pay for it; one that cannot stops the worker.
"""

import importlib
import logging
import os
import signal

from celery import signals
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from .worker import CODE_LOCATION, worker_celery_config

app = make_app()
app.conf.update(worker_celery_config(dict(app.conf.broker_transport_options or {})))

execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)


@signals.worker_process_init.connect
def load_code_location(**_kwargs) -> None:
    """Import the code location in a pool process as it starts; if it cannot, stop the whole worker (a warm
    shutdown of the main process) with the error in its log, rather than fail every step it would take."""
    try:
        importlib.import_module(CODE_LOCATION)
    except BaseException:
        logging.getLogger(__name__).exception("this worker cannot load %s: stopping it", CODE_LOCATION)
        os.kill(os.getppid(), signal.SIGTERM)
        raise

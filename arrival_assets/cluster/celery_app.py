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

A step is dagster-celery's `execute_plan` task with one change: a pool process opens the instance of a run once
and keeps it, with its database connections open (`keep_connections_open`), for every later step of any run on
that instance, where dagster-celery's task opens an instance per step and the instance a connection per event.
"""

import importlib
import logging
import os
import signal

import dagster._check as check
from celery import signals
from dagster import DagsterInstance
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.events import EngineEventData
from dagster._core.execution.api import create_execution_plan, execute_plan_iterator
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import serialize_value, unpack_value
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.core_execution_loop import DELEGATE_MARKER
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from .connections import keep_connections_open
from .worker import CODE_LOCATION, worker_celery_config

app = make_app()
app.conf.update(worker_celery_config(dict(app.conf.broker_transport_options or {})))

_instances: dict[str, DagsterInstance] = {}  # this pool process's open instances, by their serialised reference


def open_instance(ref) -> DagsterInstance:
    """The instance of `ref`, opened by the first step of this pool process that names it and kept open."""
    key = serialize_value(ref)
    if key not in _instances:
        instance = DagsterInstance.from_ref(ref)
        keep_connections_open(instance)
        _instances[key] = instance
    return _instances[key]


@app.task(bind=True, name=TASK_EXECUTE_PLAN_NAME)
def execute_plan(self, execute_step_args_packed, executable_dict):
    """Run the steps of `execute_step_args_packed` and return their events serialised (dagster-celery's task,
    on an instance kept open by this pool process)."""
    packed = check.dict_param(execute_step_args_packed, "execute_step_args_packed")
    args = unpack_value(packed, as_type=ExecuteStepArgs)
    instance = open_instance(args.instance_ref)
    recon_job = ReconstructableJob.from_dict(check.dict_param(executable_dict, "executable_dict"))
    run = instance.get_run_by_id(args.run_id)
    check.invariant(run, f"Could not load run {args.run_id}")
    plan = create_execution_plan(recon_job, run.run_config, step_keys_to_execute=args.step_keys_to_execute,
                                 known_state=args.known_state)
    step_keys = ", ".join(args.step_keys_to_execute or [])
    events = [instance.report_engine_event(
        f"Executing steps {step_keys} in celery worker", run,
        EngineEventData({"step_keys": step_keys, "Celery worker": self.request.hostname}, marker_end=DELEGATE_MARKER),
        CeleryExecutor, step_key=plan.step_handle_for_single_step_plans().to_key(),
    )]
    events += execute_plan_iterator(execution_plan=plan, job=recon_job, dagster_run=run, instance=instance,
                                    retry_mode=args.retry_mode, run_config=run.run_config)
    return [serialize_value(event) for event in events]


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

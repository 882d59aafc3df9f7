"""Runs whose process died: `arrival run` tags each run with its host and pid, and marks a STARTED run whose
process is gone as failed (the daemon's run monitoring does the same for runs it launched)."""
from __future__ import annotations

import os
import socket

import dagster as dg

HOST_TAG = "arrival/host"
PID_TAG = "arrival/pid"


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run in process."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every STARTED run of this host whose tagged process no longer exists as FAILURE; return their ids."""
    host = socket.gethostname()
    started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                                      tags={HOST_TAG: host}))
    failed = []
    for run in started:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            instance.report_run_failed(run, f"the process {pid} executing this run on {host} is gone")
            failed.append(run.run_id)
    return failed

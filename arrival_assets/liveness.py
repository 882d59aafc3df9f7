"""Runs whose process died: `arrival run` tags each run with the process that executes it, and marks a STARTED
run whose process is gone as failed (the daemon's run monitoring does the same for runs it launched).

A pid alone names a process only within one PID namespace and until it is reused, and a host name is shared by
containers on one machine. So a run also carries a process token: the kernel's boot id, the PID namespace and
the process's start time (in clock ticks since boot, from /proc/<pid>/stat). A run is judged only when its
token names this boot and this PID namespace, the only case where this process can see whether the other one
lives: it is gone when its pid is absent or now belongs to a process that started at another time. A run of
another namespace (another container, `unshare`), of another boot or machine, or without a token (an older
`arrival`) is never marked: a live run there must not be failed from here.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

HOST_TAG = "arrival/host"
PID_TAG = "arrival/pid"
PROCESS_TAG = "arrival/process"  # "<boot id>/<pid namespace>/<start time>" of the executing process
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROC = Path("/proc")


def _boot_and_namespace() -> str | None:
    """This kernel boot's id and this process's PID namespace, as `<boot id>/<namespace>`; None without /proc."""
    try:
        boot = BOOT_ID.read_text().strip()
        namespace = os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def start_time(pid: int) -> str | None:
    """The start time of a process of this namespace in clock ticks since boot (field 22 of /proc/<pid>/stat,
    read after the command name, which may hold spaces); None when there is no such process."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def process_token(pid: int | None = None) -> str | None:
    """The token of a process of this namespace (default: this one), or None without /proc."""
    pid = os.getpid() if pid is None else pid
    where, started = _boot_and_namespace(), start_time(pid)
    return None if where is None or started is None else f"{where}/{started}"


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run in process."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    token = process_token()
    if token is not None:
        tags[PROCESS_TAG] = token
    return tags


def is_gone(tags: dict[str, str]) -> bool:
    """Whether the process a run's tags name is certainly gone: its token names this boot and PID namespace,
    and its pid is absent or belongs to a process that started at another time. Anything this process cannot
    see (another namespace or boot, no token) is not gone."""
    pid, token, here = tags.get(PID_TAG, ""), tags.get(PROCESS_TAG, ""), _boot_and_namespace()
    if not pid.isdigit() or int(pid) == os.getpid() or here is None:
        return False
    where, _, started = token.rpartition("/")
    if where != here:
        return False
    return start_time(int(pid)) != started


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every STARTED run of this host whose tagged process is gone (`is_gone`) as FAILURE; return their ids."""
    host = socket.gethostname()
    started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                                      tags={HOST_TAG: host}))
    failed = []
    for run in started:
        if is_gone(dict(run.tags)):
            pid = run.tags.get(PID_TAG)
            instance.report_run_failed(run, f"the process {pid} executing this run on {host} is gone")
            failed.append(run.run_id)
    return failed

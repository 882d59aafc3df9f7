"""Which STARTED runs `arrival run` marks failed: only those whose process it can see is gone (liveness)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from arrival_assets import liveness

ANOTHER_NAMESPACE = "pid:[1]"  # no PID namespace has inode 1: a namespace this process is not in


def _pid_not_in_use() -> int:
    """A pid no process of this namespace has (the largest pid below the kernel's limit that is free)."""
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(limit - 1, 1, -1) if not os.path.exists(f"/proc/{p}"))


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run_id = uuid.uuid4().hex
    instance.add_run(DagsterRun(job_name="arrival_5b", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                tags={liveness.HOST_TAG: socket.gethostname(), **tags}))
    return run_id


def _token(pid: int, *, namespace: str | None = None, started: str | None = None) -> dict[str, str]:
    boot, here = Path("/proc/sys/kernel/random/boot_id").read_text().strip(), os.readlink("/proc/self/ns/pid")
    return {liveness.PID_TAG: str(pid),
            liveness.PROCESS_TAG: f"{boot}/{namespace or here}/{started or liveness.start_time(pid) or '1'}"}


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_only_runs_whose_process_is_seen_gone_are_marked_failed(sleeper):
    if liveness.process_token() is None:
        pytest.skip("no /proc: no process token")
    gone = _pid_not_in_use()
    with dg.DagsterInstance.ephemeral() as instance:
        dead = _started_run(instance, _token(gone))
        reused = _started_run(instance, _token(sleeper.pid, started="1"))  # the pid now names a later process
        live = _started_run(instance, _token(sleeper.pid))
        other_namespace = _started_run(instance, _token(gone, namespace=ANOTHER_NAMESPACE))
        untagged = _started_run(instance, {liveness.PID_TAG: str(gone)})  # an older arrival's run: no token
        assert sorted(liveness.fail_dead_runs(instance)) == sorted([dead, reused])
        status = {run.run_id: run.status for run in instance.get_runs()}
    assert status[live] == status[other_namespace] == status[untagged] == dg.DagsterRunStatus.STARTED
    assert status[dead] == status[reused] == dg.DagsterRunStatus.FAILURE


def test_a_run_carries_the_token_of_its_process():
    tags = liveness.process_tags()
    if liveness.process_token() is None:
        pytest.skip("no /proc: no process token")
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert tags[liveness.PROCESS_TAG] == f"{boot}/{os.readlink('/proc/self/ns/pid')}/{liveness.start_time(os.getpid())}"
    assert tags[liveness.PID_TAG] == str(os.getpid())


def test_a_live_run_in_another_pid_namespace_is_not_marked_failed(tmp_path):
    """A real second PID namespace (`unshare`, root only): its run's pid names no process here, yet it lives."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root")
    free = _pid_not_in_use()  # the process in the namespace gets this pid there, and no process has it here
    child = (f"echo {free - 1} > /proc/sys/kernel/ns_last_pid; {sys.executable} -c "
             "'import json, time; from arrival_assets import liveness; "
             "print(json.dumps(liveness.process_tags()), flush=True); time.sleep(120)'; exit $?")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", child],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            pytest.skip(f"unshare failed: {proc.stderr.read()[-500:]}")
        tags = json.loads(line)
        assert tags[liveness.PID_TAG] == str(free) and not os.path.exists(f"/proc/{free}")
        with dg.DagsterInstance.ephemeral() as instance:
            run_id = _started_run(instance, tags)
            assert liveness.fail_dead_runs(instance) == []
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        proc.kill()
        proc.wait()

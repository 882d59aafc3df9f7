"""What the cluster tests need from the machine, how they skip or fail without it, and how they look at a run.

Tests that need PostgreSQL, Redis, dagster-celery or dagster-postgres skip with the reason when one is
missing, unless ARRIVAL_CLUSTER_TESTS=required (CI sets it after installing them): then they fail, so a
missing install step cannot pass unnoticed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REQUIRED_ENV = "ARRIVAL_CLUSTER_TESTS"
REPO = Path(__file__).resolve().parents[2]  # workspace.yaml is here
CLUSTER_VARIABLES = ("ARRIVAL_PG_URL", "ARRIVAL_CELERY_BROKER", "ARRIVAL_CELERY_BACKEND", "ARRIVAL_RUN_ROOT")
STEP_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE")
RUN_LINE = re.compile(r"^== (\S+)\s+(PASS|FAIL)\s+(.*)$", re.MULTILINE)
RUN_ID = re.compile(r"\brun ([0-9a-f-]{36})\)")
TEMP_FILE = re.compile(r".*\.tmp-[0-9a-f]{32}")  # a file the store stages before publishing it


def need(missing: list[str]) -> None:
    """Skip (or, when the cluster tests are required, fail) naming whatever is missing."""
    if not missing:
        return
    reason = "missing: " + "; ".join(missing)
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{REQUIRED_ENV}=required and {reason}")
    pytest.skip(reason)


def missing_modules(*modules: str) -> list[str]:
    return [f"python module {m}" for m in modules if importlib.util.find_spec(m) is None]


def missing_servers() -> list[str]:
    from arrival_assets.cluster import ClusterError, find_postgres_bin

    missing = []
    for name in ("initdb", "postgres"):
        try:
            find_postgres_bin(name)
        except ClusterError:
            missing.append(f"{name} (Debian package postgresql)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Debian package redis-server)")
    return missing


# ---- processes -------------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A console script of this virtual environment (arrival, dagster, dagster-daemon)."""
    return str(Path(sys.executable).parent / name)


def in_process_env(home: Path) -> dict[str, str]:
    """This environment without any cluster variable, with its own DAGSTER_HOME: `arrival run` in process."""
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
    env["DAGSTER_HOME"] = str(home)
    return env


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def stop_by_pid(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """SIGTERM a process we started, wait; SIGKILL its group if it is still there. Return what it took."""
    if proc.poll() is not None:
        return "not running"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return "stopped"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return "killed"


def run_lines(stdout: str) -> dict[str, tuple[str, str | None]]:
    """partition key -> (PASS | FAIL, run id) from the summary `arrival run` prints; no run id when the
    partition was verified as already materialised and no run was launched."""
    found = {}
    for key, status, rest in RUN_LINE.findall(stdout):
        run_id = RUN_ID.search(rest)
        found[key] = (status, run_id.group(1) if run_id else None)
    return found


# ---- files -----------------------------------------------------------------------------------------------------


def output_digests(root: Path, keep: Callable[[str], bool] = lambda _: True) -> dict[str, str]:
    """sha256 of every file under data/layer2/5B whose relative path `keep` accepts, run reports left out."""
    top = root / "data" / "layer2" / "5B"
    return {
        rel: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(top.rglob("*"))
        if path.is_file()
        and "run_report" not in path.relative_to(top).parts
        and keep(rel := str(path.relative_to(top)))
    }


def of_seed(seed: int, scenario: str | None = None) -> Callable[[str], bool]:
    """Files of one seed (and scenario) plus the seed-invariant ones (no seed in their path)."""

    def keep(rel: str) -> bool:
        if "/seed=" not in f"/{rel}":
            return scenario is None or f"scenario_id={scenario}" in rel or "scenario_id=" not in rel
        return f"seed={seed}/" in rel and (scenario is None or f"scenario_id={scenario}" in rel)

    return keep


def temp_files(root: Path) -> list[str]:
    """Files the store staged and never published or swept, anywhere under the run root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMP_FILE.fullmatch(p.name))


# ---- the instance in Postgres ----------------------------------------------------------------------------------


def pg_query(env: Mapping[str, str], sql: str, *args) -> list[tuple]:
    import psycopg2

    url = urlsplit(env["ARRIVAL_PG_URL"])
    conn = psycopg2.connect(
        host=url.hostname, port=url.port, user=url.username, password=url.password, dbname=url.path[1:]
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def last_event_id(env: Mapping[str, str]) -> int:
    return pg_query(env, "SELECT coalesce(max(id), 0) FROM event_logs")[0][0]


def step_pids(env: Mapping[str, str], run_id: str) -> dict[str, set[int]]:
    """step key -> the pids its STEP_START / STEP_SUCCESS / STEP_FAILURE events were written from."""
    from dagster import deserialize_value

    rows = pg_query(
        env,
        "SELECT step_key, event FROM event_logs WHERE run_id = %s AND dagster_event_type = ANY(%s)",
        run_id,
        list(STEP_EVENTS),
    )
    pids: dict[str, set[int]] = {}
    for step, text in rows:
        pids.setdefault(step, set()).add(deserialize_value(text).dagster_event.pid)
    return pids


def celery_hosts(env: Mapping[str, str], run_id: str | None = None, after: int = 0) -> list[tuple[str, str]]:
    """(step key, Celery worker) of each "Executing steps ... in celery worker" event, in the order written."""
    rows = pg_query(
        env,
        "SELECT step_key, event FROM event_logs WHERE dagster_event_type = 'ENGINE_EVENT' AND id > %s "
        "AND (%s IS NULL OR run_id = %s) AND event LIKE '%%in celery worker%%' ORDER BY id",
        after,
        run_id,
        run_id,
    )
    from dagster import deserialize_value

    found = []
    for step, text in rows:
        metadata = deserialize_value(text).dagster_event.event_specific_data.metadata
        found.append((step, metadata["Celery worker"].value))
    return found


def wait_for_step_on_a_worker(
    env: Mapping[str, str], after: int, step: str, proc: subprocess.Popen, timeout: float = 300.0
) -> str:
    """The Celery worker (`arrival-N@host`) that starts `step` in an event written after id `after`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        started = [host for key, host in celery_hosts(env, after=after) if key == step]
        if started:
            return started[0]
        time.sleep(0.1)
    raise AssertionError(f"{step} never started on a worker (coordinator exit {proc.poll()})")

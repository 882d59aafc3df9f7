"""Helpers for tests that start a Dagster webserver by pid: a free port, GraphQL, waiting until it serves."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

STARTUP_SECONDS = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST a GraphQL query or mutation (with its variables) to the webserver on `port`."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_until_serving(port: int, proc: subprocess.Popen) -> None:
    """Poll /server_info until the webserver answers; fail if it exits or takes over STARTUP_SECONDS."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster-webserver exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"dagster-webserver did not serve within {STARTUP_SECONDS} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a webserver this test started, by its PID: SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

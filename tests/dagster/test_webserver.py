"""The code location loads in dagster-webserver: its GraphQL asset graph has every asset, group and check."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from graph_helpers import graph_for

from arrival_core.contracts import PROJECT_ROOT

STARTUP_SECONDS = 120
ASSET_GRAPH_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_until_serving(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster-webserver exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"dagster-webserver did not serve within {STARTUP_SECONDS} s")


def test_webserver_serves_the_whole_asset_graph(tiny_world, tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "ARRIVAL_RUN_ROOT": str(tiny_world.root)}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_serving(port, proc)
        nodes = _graphql(port, ASSET_GRAPH_QUERY)["data"]["assetNodes"]
    finally:
        proc.terminate()  # our own child, by its PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    served = {
        "/".join(n["assetKey"]["path"]): (
            n["groupName"],
            n["isPartitioned"],
            {(c["name"], c["blocking"]) for c in n["assetChecksOrError"]["checks"]},
        )
        for n in nodes
    }
    graph = graph_for(tiny_world.root).resolve_asset_graph()
    expected = {
        key.to_user_string(): (
            graph.get(key).group_name,
            True,
            {(ck.name, graph.get_check_spec(ck).blocking) for ck in graph.get_check_keys_for_assets([key])},
        )
        for key in graph.get_all_asset_keys()
    }
    assert served == expected

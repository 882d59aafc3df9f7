"""The code location loads in dagster-webserver: its GraphQL asset graph has every asset, group and check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from graph_helpers import graph_for
from webserver_lib import free_port, graphql, stop_server, wait_until_serving

from arrival_core.contracts import PROJECT_ROOT

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


def test_webserver_serves_the_whole_asset_graph(tiny_world, tmp_path):
    port = free_port()
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
        wait_until_serving(port, proc)
        nodes = graphql(port, ASSET_GRAPH_QUERY)["data"]["assetNodes"]
    finally:
        stop_server(proc)  # our own child, by its PID
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

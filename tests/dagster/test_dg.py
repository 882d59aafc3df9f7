"""The `dg` CLI on this project: `[tool.dg]` names the code location of workspace.yaml, `dg list defs` loads
every asset and check of it, and `dg launch` materialises one partition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from graph_helpers import graph_for

from arrival_core import pipeline
from arrival_core.contracts import PROJECT_ROOT
from arrival_core.identity import PartitionKey
from arrival_core.store import Store

DG = Path(sys.executable).with_name("dg")
TIMEOUT = 300


def _dg(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(DG), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def _env(root: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ARRIVAL_RUN_ROOT": str(root), "DAGSTER_HOME": str(home)}


def test_tool_dg_names_the_code_location_of_the_workspace():
    dg_config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["dg"]
    (entry,) = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"]
    assert dg_config["directory_type"] == "project"
    project = dg_config["project"]
    assert project["root_module"] == "arrival_assets"
    assert project["code_location_target_module"] == entry["python_module"]["module_name"]
    assert project["code_location_name"] == entry["python_module"]["location_name"]


def test_dg_list_defs_loads_every_asset_and_check(tiny_world, tmp_path):
    result = _dg(["list", "defs", "--json"], _env(tiny_world.root, tmp_path / "home"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    listed = json.loads(result.stdout)
    graph = graph_for(tiny_world.root).resolve_asset_graph()
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert "s3_bucket_counts_5B" in assets
    checks = {(c["asset_key"], c["name"]) for c in listed["asset_checks"]}
    expected_checks = {
        (ck.asset_key.to_user_string(), ck.name) for ck in graph.get_check_keys_for_assets(graph.get_all_asset_keys())
    }
    assert checks == expected_checks
    assert ("s3_bucket_counts_5B", "primary_key_unique") in checks
    assert {j["name"] for j in listed["jobs"]} >= {"arrival_5b"}
    assert {s["name"] for s in listed["sensors"]} == {"register_partitions"}


@pytest.mark.slow
def test_dg_launch_materialises_one_partition(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    env = _env(root, tmp_path / "home")
    added = subprocess.run([str(Path(sys.executable).with_name("arrival")), "partitions", "add", "--seed", "42"],
                           cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert added.returncode == 0, added.stderr
    result = _dg(["launch", "--assets", "*", "--partition", "baseline_v1|42"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    store = Store(run_root=root)
    tokens = pipeline.resolve_identity(store, PartitionKey(42, "baseline_v1"), state="S2").tokens()
    for dataset in ("s2_realised_intensity_5B", "s3_bucket_counts_5B", "rng_audit_log_5B"):
        assert store.path(dataset, **tokens).is_file(), dataset

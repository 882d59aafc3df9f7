"""The store resource: run root from the environment at initialisation, the demo world on first use."""

from __future__ import annotations

import json

import dagster as dg

from arrival_assets.resources import StoreResource
from arrival_assets.run_roots import RUN_ROOT_ENV, ensure_world, resolve_run_root
from arrival_core import pipeline


def test_run_root_is_read_when_resolved_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "a"))
    assert resolve_run_root() == (tmp_path / "a").resolve()
    monkeypatch.delenv(RUN_ROOT_ENV)
    monkeypatch.chdir(tmp_path)
    assert resolve_run_root() == (tmp_path / ".arrival" / "demo").resolve()
    assert resolve_run_root(tmp_path / "b") == (tmp_path / "b").resolve()


def test_resource_resolves_its_root_at_initialisation(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_ROOT_ENV, str(tmp_path / "from_env"))
    with dg.build_resources({"store": StoreResource()}) as resources:
        assert resources.store.root == (tmp_path / "from_env").resolve()


def test_empty_root_gets_the_demo_world_on_first_use(tmp_path):
    root = tmp_path / "fresh"
    store = ensure_world(root)
    receipt = json.loads(store.path("run_receipt").read_text())
    assert (receipt["synthetic"], receipt["profile"]) == (True, "demo")
    assert pipeline.world_scenarios(store) == ["baseline_v1", "stress_v1"]


def test_a_root_holding_something_else_is_never_made_a_world(tmp_path):
    (tmp_path / "notes.txt").write_text("not a world")
    store = ensure_world(tmp_path, seed=7)
    assert not store.path("run_receipt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

"""Fixtures of the Dagster tests: tiny worlds to run the graph in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def world_root(tiny_world_copy) -> Path:
    """A fresh tiny world to run the graph in."""
    return tiny_world_copy.root


@pytest.fixture(scope="module")
def shared_world_root(tiny_world, tmp_path_factory) -> Path:
    """A tiny world copy shared by one test module's runs."""
    root = tmp_path_factory.mktemp("graph") / "world"
    shutil.copytree(tiny_world.root, root)
    return root.resolve()

"""Shared fixtures: the tiny and demo synthetic worlds, made once per session, and copies to tamper with."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from arrival_core.world import WorldInfo, create_world

TINY_SEEDS = (1, 42)
DEMO_SEEDS = (42,)


def _copy(world: WorldInfo, root: Path) -> WorldInfo:
    shutil.copytree(world.root, root)
    return replace(world, root=root.resolve())


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> WorldInfo:
    """The tiny world (default world_seed, 3B files for seeds 1 and 42); read-only, see `tiny_world_copy`."""
    return create_world("tiny", tmp_path_factory.mktemp("tiny_world"), seeds=TINY_SEEDS)


@pytest.fixture
def tiny_world_copy(tiny_world: WorldInfo, tmp_path: Path) -> WorldInfo:
    """A fresh copy of the tiny world's tree for a test that changes or breaks files."""
    return _copy(tiny_world, tmp_path / "tiny_world")


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> WorldInfo:
    """The demo world (default world_seed, 3B file for seed 42); read-only, see `demo_world_copy`."""
    return create_world("demo", tmp_path_factory.mktemp("demo_world"), seeds=DEMO_SEEDS)


@pytest.fixture
def demo_world_copy(demo_world: WorldInfo, tmp_path: Path) -> WorldInfo:
    """A fresh copy of the demo world's tree for a test that changes or breaks files."""
    return _copy(demo_world, tmp_path / "demo_world")

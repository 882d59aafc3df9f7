"""Threads are a setting, bytes are not: every output is the same file at 1, 2, 3 and 8 worker threads and at odd
chunk sizes, for both count laws and both latent models (OU and a stationary kernel), with row groups small enough
that every big output has many of them in flight at once."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from s2s3lib import edited_config, outputs, run_all, store

from arrival_core import parallel, sink
from arrival_core.world import WorldInfo


@pytest.fixture
def threads():
    """Set the worker threads for one test and restore the default afterwards."""
    yield parallel.set_threads
    parallel.set_threads(None)


def _stationary_nb2(tmp_path: Path) -> Path:
    edited_config(tmp_path, "arrival_count_config_5B", lambda d: d.update(count_law_id="nb2"), name="nb2")

    def stationary(doc: dict) -> None:
        doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", "matern32_v1"

    return edited_config(tmp_path, "arrival_lgcp_config_5B", stationary, name="nb2")


def _outputs_at(world: WorldInfo, root: Path, config: Path | None, scenario: str, count: int,
                chunk: int | None, set_threads) -> dict[str, bytes]:
    set_threads(count)
    shutil.copytree(world.root, root)
    run_all(store(root, config), scenario_id=scenario, chunk_entities=chunk)
    got = outputs(root)
    assert len(got) == 12, sorted(got)  # S0 2, S1 2, S2 4, S3 3 and the audit
    return got


@pytest.mark.parametrize("variant", ["poisson-ou", "nb2-stationary"])
def test_tiny_outputs_do_not_depend_on_threads_or_chunks(variant, tiny_world: WorldInfo, tmp_path: Path, threads,
                                                         monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 2_053)  # a prime: row groups cut entities and chunks anywhere
    config = None if variant == "poisson-ou" else _stationary_nb2(tmp_path)
    reference = _outputs_at(tiny_world, tmp_path / "t1", config, "stress_v1", 1, None, threads)
    for count, chunk in ((2, 1), (3, 7), (8, 3), (8, None)):
        got = _outputs_at(tiny_world, tmp_path / f"t{count}-{chunk}", config, "stress_v1", count, chunk, threads)
        assert got.keys() == reference.keys()
        assert [k for k in got if got[k] != reference[k]] == [], (variant, count, chunk)


def test_demo_outputs_do_not_depend_on_threads_or_chunks(demo_world: WorldInfo, tmp_path: Path, threads,
                                                         monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 65_537)
    reference = _outputs_at(demo_world, tmp_path / "t1", None, "baseline_v1", 1, None, threads)
    got = _outputs_at(demo_world, tmp_path / "t8", None, "baseline_v1", 8, 11, threads)
    assert [k for k in got if got[k] != reference[k]] == [] and got.keys() == reference.keys()


@pytest.mark.parametrize("count, chunk", [(2, 1), (3, 7)])
def test_demo_nb2_stationary_outputs_do_not_depend_on_threads_or_chunks(count, chunk, demo_world: WorldInfo,
                                                                       tmp_path: Path, threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 100_003)
    config = _stationary_nb2(tmp_path)
    reference = _outputs_at(demo_world, tmp_path / "t1", config, "stress_v1", 1, None, threads)
    got = _outputs_at(demo_world, tmp_path / "tn", config, "stress_v1", count, chunk, threads)
    assert [k for k in got if got[k] != reference[k]] == [] and got.keys() == reference.keys()

"""Hostile and careless use of the commands and the graph: each is refused with its code and exit status, and
leaves nothing behind but what it must (the run reports and the instance's own records)."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy.exc
import yaml
from faultlib import arrival, mount, revalidate_5a, umount
from graph_helpers import failures, graph_for, materialized, run_partition

from arrival_assets import cli
from arrival_assets.assets.sealed_inputs import verify_sealed_input
from arrival_assets.partitions import SCENARIO_DIMENSION, SEED_DIMENSION
from arrival_assets.resources import StoreResource
from arrival_assets.sensors import register_partitions as partition_sensor
from arrival_core import contracts, pipeline
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.pipeline import records
from arrival_core.store import Store
from arrival_core.world import WorldInfo

HOME_CODE = "5B.DAGSTER_HOME_INVALID"


# ---- a λ the picture cannot draw -------------------------------------------------------------------------------

def test_a_lambda_near_the_float_maximum_fails_s3_with_its_code_not_the_picture(
        tiny_world_copy: WorldInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """λ = 1.7e308 in one row with ξ ≤ 1 (clipping.max_factor 1): S2 commits; its picture cannot be drawn, which
    must neither fail nor uncode the run: S3 refuses the λ with COUNTS_NUMERIC_INVALID."""
    root = tiny_world_copy.root
    store = Store(run_root=root)
    surface = store.path("merchant_zone_scenario_local_5A", manifest_fingerprint=tiny_world_copy.manifest_fingerprint,
                         scenario_id="baseline_v1")
    frame = pl.read_parquet(surface)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(1.7e308).otherwise(pl.col("lambda_local_scenario"))
                       .alias("lambda_local_scenario")).write_parquet(surface)
    revalidate_5a(root)
    config = tmp_path / "config"
    shutil.copytree(contracts.DEFAULT_CONFIG_DIR, config)
    policy = config / "arrival_lgcp_config_5B.yaml"
    doc = yaml.safe_load(policy.read_text())
    doc["clipping"]["max_factor"] = 1.0
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("ARRIVAL_CONFIG_DIR", str(config))
    result = arrival(["run", "--seed", "42", "--scenario", "baseline_v1", "--root", str(root), "--quiet"],
                     tmp_path / "home")
    assert result.returncode == 2, result.stderr
    assert "error: baseline_v1|42: 5B.S3.COUNTS_NUMERIC_INVALID" in result.stderr, result.stderr
    assert "without a code" not in result.stdout + result.stderr
    identity = pipeline.resolve_identity(Store(run_root=root, config_dir=config), PartitionKey(42, "baseline_v1"),
                                         state="S2")
    assert records.commit_path(store, "S2", identity).is_file()
    assert not records.commit_path(store, "S3", identity).exists()


# ---- the per-seed 3B file of a synthetic world -----------------------------------------------------------------

def test_a_rewritten_seed_file_of_a_synthetic_world_is_refused(tiny_world_copy: WorldInfo):
    store = Store(run_root=tiny_world_copy.root)
    entry = store.entry("virtual_classification_3B")
    path = store.path(entry.id, seed=42, manifest_fingerprint=tiny_world_copy.manifest_fingerprint)
    assert verify_sealed_input(store, entry, seed=42, scenario_id="baseline_v1").sha256 is not None
    frame = pl.read_parquet(path)
    modes = ["VIRTUAL_ONLY" if m == "NON_VIRTUAL" else "NON_VIRTUAL" for m in frame["virtual_mode"].to_list()]
    frame.with_columns(pl.Series("virtual_mode", modes, dtype=frame["virtual_mode"].dtype)).write_parquet(path)
    with pytest.raises(ArrivalError) as err:
        verify_sealed_input(store, entry, seed=42, scenario_id="baseline_v1")
    assert err.value.code == "5B.S0.UPSTREAM_NOT_PASS"
    assert str(path) in err.value.message and "generator gives sha256" in err.value.message


# ---- DAGSTER_HOME that cannot be used ---------------------------------------------------------------------------

def _initialised_home(home: Path, root: Path) -> None:
    done = arrival(["partitions", "add", "--seed", "42", "--root", str(root)], home)
    assert done.returncode == 0, done.stderr


def test_a_locked_instance_database_is_coded_naming_the_home(tiny_world: WorldInfo, tmp_path: Path):
    home = tmp_path / "home"
    _initialised_home(home, tiny_world.root)
    lock = sqlite3.connect(home / "history" / "runs" / "index.db", isolation_level=None)  # the partitions table
    try:
        lock.execute("BEGIN EXCLUSIVE")
        done = arrival(["partitions", "add", "--seed", "7", "--root", str(tiny_world.root)], home)
    finally:
        lock.close()
    assert done.returncode == 2, done.stderr
    assert f"error: {HOME_CODE}: the Dagster instance at {home.resolve()}" in done.stderr
    assert "database is locked" in done.stderr and "internal error" not in done.stderr


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_a_read_only_or_full_home_is_coded_naming_the_home(tiny_world: WorldInfo, tmp_path: Path, request, how):
    home = tmp_path / "home"
    home.mkdir()
    if how == "read-only":
        why = mount("--bind", str(home), str(home)) or mount("-o", "remount,ro,bind", str(home))
    else:
        why = mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(home))
    request.addfinalizer(lambda: umount(home))
    if why:
        pytest.skip(why)
    done = arrival(["run", "--seed", "42", "--scenario", "baseline_v1", "--root", str(tiny_world.root)], home)
    assert done.returncode == 2, done.stderr
    assert f"error: {HOME_CODE}: the Dagster instance" in done.stderr and str(home.resolve()) in done.stderr
    assert "internal error" not in done.stderr


def test_storage_failures_are_coded_only_under_the_home(tmp_path: Path):
    from arrival_assets.instance_storage import storage_failure

    home = tmp_path / "home"
    inner = OSError(errno.EROFS, os.strerror(errno.EROFS), str(home / "history" / "runs.db"))
    assert storage_failure(inner, home).code == HOME_CODE
    database = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    wrapped = RuntimeError("event write failed")
    wrapped.__cause__ = database
    assert "database is locked" in storage_failure(wrapped, home).message
    assert storage_failure(OSError(errno.EROFS, "x", str(tmp_path / "elsewhere")), home) is None
    assert storage_failure(ValueError("a bug"), home) is None


# ---- empty option values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["run", "--seed", "42", "--root", ""],
                                  ["run", "--seed", "42", "--scenario", ""],
                                  ["partitions", "add", "--seed", "42", "--root", ""],
                                  ["verify", "--seed", "42", "--scenario", "", "--root", "x"],
                                  ["world", "create", "--profile", "tiny", "--root", ""]])
def test_an_empty_root_or_scenario_is_refused_not_taken_for_the_default(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARRIVAL_RUN_ROOT", raising=False)
    assert cli.main(args) == 2
    assert "error: 5B.IDENTITY_INVALID: --" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no demo world, no instance, no world in the working directory


# ---- a scenario partition the world does not have --------------------------------------------------------------

def test_a_scenario_added_by_hand_is_refused_at_launch_and_can_be_removed(
        tiny_world: WorldInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    home = tmp_path / "home"
    _initialised_home(home, tiny_world.root)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(SCENARIO_DIMENSION, ["bogus_v1"])  # as the UI's "Add partition" does
        result = run_partition(graph_for(tiny_world.root), instance, "bogus_v1|42")
        assert not result.success
        failed = failures(result)
        assert set(failed) == {"sealed_inputs"}
        assert failed["sealed_inputs"]["error_code"] == "5B.IDENTITY_INVALID"
        assert "'bogus_v1'" in failed["sealed_inputs"]["error_message"]
        assert "['baseline_v1', 'stress_v1']" in failed["sealed_inputs"]["error_message"]
        assert materialized(result) == {}  # no sealed input is recorded for it
        with dg.build_sensor_context(instance=instance,
                                     resources={"store": StoreResource(run_root=str(tiny_world.root))}) as context:
            found = partition_sensor(context)
        message = found.skip_message if isinstance(found, dg.SkipReason) else ""
        assert "bogus_v1" in message and "partitions remove" in message
    assert cli.main(["partitions", "remove", "--scenario", "bogus_v1"]) == 0
    assert cli.main(["partitions", "remove", "--scenario", "bogus_v1"]) == 2
    assert "not registered" in capsys.readouterr().err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(SCENARIO_DIMENSION) == ["baseline_v1", "stress_v1"]
        assert instance.get_dynamic_partitions(SEED_DIMENSION) == ["42"]

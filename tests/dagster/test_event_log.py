"""The kept-open SQLite event log: Dagster's own files and answers, with one connection per file, not per event."""

from __future__ import annotations

import dagster as dg
import pytest

from arrival_assets import event_log
from arrival_assets.cluster import install_instance_config

SEEDS = dg.DynamicPartitionsDefinition(name="seed")


@dg.asset(partitions_def=SEEDS)
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset_check(asset=numbers)
def numbers_positive() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("ARRIVAL_PG_URL", raising=False)
    return install_instance_config(tmp_path / "home", env={})


def _plain_instance(home):
    """Stock Dagster on the same folder: its default SQLite storages, no config of ours."""
    plain = home.parent / "plain"
    plain.mkdir(exist_ok=True)
    (plain / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {home}\n")
    return dg.DagsterInstance.from_config(str(plain))


def _materialise(instance, seed: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("seed", [seed])
    return dg.materialize([numbers, numbers_positive], instance=instance, partition_key=seed)


def test_the_installed_instance_uses_it_and_stock_dagster_reads_what_it_wrote(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage) is event_log.KeptOpenSqliteEventLogStorage
        result = _materialise(instance, "7")
        assert result.success
    with _plain_instance(home) as plain:
        assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
        record = plain.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("numbers"), asset_partitions=["7"]), limit=1
        ).records[0]
        assert record.run_id == result.run_id
        assert record.asset_materialization.metadata["rows"].value == 3
        assert plain.has_dynamic_partition("seed", "7")
        assert plain.all_logs(result.run_id)[-1].dagster_event_type == dg.DagsterEventType.RUN_SUCCESS


def test_it_opens_one_engine_per_file_and_never_holds_a_lock_between_statements(home, monkeypatch):
    made = []
    real = event_log.create_engine
    monkeypatch.setattr(event_log, "create_engine", lambda *a, **k: made.append(a[0]) or real(*a, **k))
    with dg.DagsterInstance.from_config(str(home)) as instance, _plain_instance(home) as plain:
        runs = [_materialise(instance, str(seed)) for seed in (1, 2)]
        assert all(r.success for r in runs)
        # ~40 events and many partition lookups per run: one engine for the index, one per run's file
        assert len(made) == len(set(made)) == 1 + len(runs)
        plain.add_dynamic_partitions("seed", ["99"])  # another writer between two of ours: nothing is locked
        assert instance.has_dynamic_partition("seed", "99")  # and nothing is cached that it changed
        assert _materialise(instance, "99").success


def test_it_closes_the_least_recently_used_engines(home, monkeypatch):
    monkeypatch.setattr(event_log, "open_engines", lambda: 2)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        runs = [_materialise(instance, str(seed)) for seed in (1, 2, 3)]
        assert len(storage._engines) == 2 and runs[0].run_id not in storage._engines
        assert instance.all_logs(runs[0].run_id)[-1].dagster_event_type == dg.DagsterEventType.RUN_SUCCESS


def test_its_connections_commit_without_a_sync_each_and_the_files_stay_in_wal(home):
    """synchronous=NORMAL (1) on the storage's own connections, as config/runtime.yaml says; the files keep the
    WAL journal Dagster gives them, and stock Dagster's connections keep their FULL (2)."""
    import sqlite3

    from arrival_core import contracts

    assert contracts.runtime_settings()["event_log_synchronous"] == "NORMAL"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = _materialise(instance, "5")
        storage = instance.event_log_storage
        with storage._connect(run.run_id) as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with storage._connect("index") as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    files = sorted(home.rglob(f"{run.run_id}.db"))
    assert files and sqlite3.connect(files[0]).execute("PRAGMA synchronous").fetchone()[0] == 2
    assert sqlite3.connect(files[0]).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_partition_found_is_not_asked_about_again_for_its_seen_seconds(home, monkeypatch):
    """A run asks about its own partition at nearly every event: within `dynamic_partition_seen_seconds` the index
    is asked once. A partition not found is never remembered (another writer's addition is seen at once), one this
    process deletes is forgotten at once, and one another process deletes is seen once the seconds have passed."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    asked = []
    real = SqliteEventLogStorage.has_dynamic_partition
    monkeypatch.setattr(SqliteEventLogStorage, "has_dynamic_partition",
                        lambda self, name, key: asked.append(key) or real(self, name, key))
    clock = [1000.0]
    monkeypatch.setattr(event_log.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(event_log, "partition_seen_seconds", lambda: 2.0)
    with dg.DagsterInstance.from_config(str(home)) as instance, _plain_instance(home) as plain:
        assert not instance.has_dynamic_partition("seed", "4") and not instance.has_dynamic_partition("seed", "4")
        assert asked == ["4", "4"]  # not found: asked every time
        plain.add_dynamic_partitions("seed", ["4"])  # another writer adds it: seen at the next question
        assert instance.has_dynamic_partition("seed", "4")
        asked.clear()
        assert _materialise(instance, "4").success
        assert len(asked) == 0  # the whole run, within the seconds: not one question to the index
        plain.delete_dynamic_partition("seed", "4")  # another writer deletes it: still taken as there ...
        clock[0] += 1.9
        assert instance.has_dynamic_partition("seed", "4") and asked == []
        clock[0] += 0.2  # ... until the seconds have passed
        assert not instance.has_dynamic_partition("seed", "4") and asked == ["4"]
        instance.add_dynamic_partitions("seed", ["4"])
        assert instance.has_dynamic_partition("seed", "4")
        instance.delete_dynamic_partition("seed", "4")  # this process deletes it: forgotten at once
        assert not instance.has_dynamic_partition("seed", "4")

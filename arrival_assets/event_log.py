"""Dagster's SQLite event log with its database connections kept open between statements.

Dagster's `SqliteEventLogStorage` creates and disposes a SQLAlchemy engine (and a new SQLite connection) for
every event it stores, and opens yet another engine to check that the partitions table exists before every
partition lookup. A partition's run stores ~250 events and looks partitions up ~300 times: seconds of every
run. This subclass keeps one engine per database file open (the few most recently used) and remembers the
tables it has seen, and the partitions it has found for a few seconds (a run asks about its own partition at
nearly every event), and its connections commit with SQLite's `synchronous` of config/runtime.yaml (NORMAL: WAL
commits not synced one by one). Files, journaling, locking, tables and rows are exactly Dagster's: `dagster
dev`, the daemon and any process reading the instance see no difference.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from arrival_core import contracts


def open_engines() -> int:
    """How many files' engines stay open (`event_log_open_engines` of config/runtime.yaml): the index and the runs
    in progress; older runs' files are reopened when read again."""
    return contracts.runtime_settings()["event_log_open_engines"]


def partition_seen_seconds() -> float:
    """How long a dynamic partition found in the index is taken as there without asking again
    (`dynamic_partition_seen_seconds` of config/runtime.yaml)."""
    return contracts.runtime_settings()["dynamic_partition_seen_seconds"]


def _commit_as_configured(connection, _record) -> None:
    """Set a new connection's `synchronous` (a setting of the connection, not of the file)."""
    mode = contracts.runtime_settings()["event_log_synchronous"]
    connection.execute(f"PRAGMA synchronous={mode}")  # one of the schema's enum, never user text


class KeptOpenSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log storage, reusing one open connection per database file."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables: set[str] = set()
        self._partitions_seen: dict[tuple[str, str], float] = {}  # (definition, key) → when it was last found
        self._partitions_lock = threading.Lock()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> KeptOpenSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine: one connection (StaticPool), used only under the storage's lock."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            poolclass=StaticPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(engine, "connect", _commit_as_configured)
        self._engines[shard] = engine
        while len(self._engines) > open_engines():
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Asked inside open transactions, so it keeps Dagster's own throwaway engine; a table once there stays.
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        # Only a partition found is remembered: one added by another process is asked about, and one this process
        # deletes is forgotten; one another process deletes is still taken as there for at most the seen seconds.
        key, now = (partitions_def_name, partition_key), time.monotonic()
        with self._partitions_lock:
            seen = self._partitions_seen.get(key)
        if seen is not None and now - seen < partition_seen_seconds():
            return True
        found = super().has_dynamic_partition(partitions_def_name, partition_key)
        with self._partitions_lock:
            if found:
                self._partitions_seen[key] = now
            else:
                self._partitions_seen.pop(key, None)
        return found

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        with self._partitions_lock:
            self._partitions_seen.pop((partitions_def_name, partition_key), None)
        super().delete_dynamic_partition(partitions_def_name, partition_key)

    def dispose(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()

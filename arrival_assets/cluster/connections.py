"""The database connections of a long-lived cluster process (a run's coordinator, a worker's pool process): kept
open on a Postgres instance rather than opened for every query. A leaf: it imports only the standard library at
import time, and arrival_core's contracts when called."""

from __future__ import annotations

import weakref

_KEPT_OPEN: weakref.WeakSet = weakref.WeakSet()  # instances `keep_connections_open` has set up


def keep_connections_open(instance) -> None:
    """Have a Postgres instance keep a connection per storage open (`db_pool` of config/runtime.yaml) instead of
    opening one for every query: dagster-postgres's default, so that short-lived processes hold none, makes each
    event of a run pay a TCP handshake and a password exchange. A no-op on SQLite (whose event log `arrival`
    keeps open itself) and on an instance already set up.

    It is Dagster's own setting for its long-lived webserver (`optimize_for_webserver`), without a statement
    timeout (none is set otherwise either)."""
    if instance in _KEPT_OPEN:
        return
    from arrival_core import contracts

    pool = contracts.runtime_settings()["db_pool"]
    instance.optimize_for_webserver(
        statement_timeout=0, pool_recycle=pool["recycle_seconds"], max_overflow=pool["max_overflow"]
    )
    _KEPT_OPEN.add(instance)

"""What the cluster tests need from the machine, and how they skip or fail without it.

Tests that need PostgreSQL, Redis, dagster-celery or dagster-postgres skip with the reason when one is
missing, unless ARRIVAL_CLUSTER_TESTS=required (CI sets it after installing them): then they fail, so a
missing install step cannot pass unnoticed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

REQUIRED_ENV = "ARRIVAL_CLUSTER_TESTS"


def need(missing: list[str]) -> None:
    """Skip (or, when the cluster tests are required, fail) naming whatever is missing."""
    if not missing:
        return
    reason = "missing: " + "; ".join(missing)
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{REQUIRED_ENV}=required and {reason}")
    pytest.skip(reason)


def missing_modules(*modules: str) -> list[str]:
    return [f"python module {m}" for m in modules if importlib.util.find_spec(m) is None]


def missing_servers() -> list[str]:
    from arrival_assets.cluster import ClusterError, find_postgres_bin

    missing = []
    for name in ("initdb", "postgres"):
        try:
            find_postgres_bin(name)
        except ClusterError:
            missing.append(f"{name} (Debian package postgresql)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Debian package redis-server)")
    return missing

"""The `cluster` marker: tests that start real PostgreSQL, Redis and Celery workers on this machine."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts real PostgreSQL, Redis and Celery workers on this machine"
    )

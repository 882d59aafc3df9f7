"""Failures of the Dagster instance's own storage (its folder and SQLite files under DAGSTER_HOME, or its
database) as `5B.DAGSTER_HOME_INVALID` naming the home: a read-only or full folder, a locked or damaged SQLite
file, a database that cannot be reached. Every command that opens the instance reports them this way."""

from __future__ import annotations

import os
from pathlib import Path

from arrival_core.errors import DAGSTER_HOME_INVALID, ArrivalError

from .cluster.settings import DAGSTER_HOME_ENV, DEFAULT_DAGSTER_HOME, PG_URL_ENV


def dagster_home() -> Path:
    """The instance folder the commands use: $DAGSTER_HOME, else ./.arrival/dagster_home (absolute)."""
    return Path(os.environ.get(DAGSTER_HOME_ENV) or DEFAULT_DAGSTER_HOME).expanduser().resolve()


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its causes and contexts, outermost first (each once)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def storage_failure(exc: BaseException, home: Path | None = None) -> ArrivalError | None:
    """The coded failure when `exc` (or its cause) is the instance's storage failing: any SQLAlchemy error (the
    instance is arrival's only database), or an OSError on a path under the home; else None."""
    import sqlalchemy.exc

    home = dagster_home() if home is None else home
    for cause in _causes(exc):
        if isinstance(cause, sqlalchemy.exc.SQLAlchemyError):
            where = "its database (ARRIVAL_PG_URL)" if os.environ.get(PG_URL_ENV) else "its SQLite files"
            reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
            return ArrivalError(DAGSTER_HOME_INVALID, f"the Dagster instance at {home} cannot use {where}: "
                                f"{type(cause).__name__}: {reason} (a read-only or full folder, or a file "
                                f"locked by another process)", file=str(home))
        filename = getattr(cause, "filename", None) if isinstance(cause, OSError) else None
        if filename is not None and _under(Path(os.fsdecode(filename)), home):
            return ArrivalError(DAGSTER_HOME_INVALID, f"the Dagster instance folder {home} cannot be written or "
                                f"read: {cause.strerror or cause} ({filename})", file=str(filename))
    return None


def _under(path: Path, home: Path) -> bool:
    try:
        resolved = path.expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == home or home in resolved.parents

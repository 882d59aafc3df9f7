"""The local cluster's servers: a PostgreSQL (initdb once, then `postgres` on the loopback) and a Redis,
each found on this machine, started as its own process and waited for until it answers."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .processes import ClusterInfo, spawn_logged, tail, wait_for, write_private
from .settings import ClusterError

PG_USER = "arrival"
PG_DATABASE = "arrival"
PG_PACKAGE = "postgresql"
REDIS_PACKAGE = "redis-server"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")  # who runs PostgreSQL when `cluster up` runs as root


# ---- finding the binaries and the account ----------------------------------------------------------------------


def find_postgres_bin(name: str, search_root: Path = DEBIAN_PG_ROOT) -> Path:
    """A PostgreSQL server binary: on PATH, else the newest <search_root>/<version>/bin (Debian keeps them
    under /usr/lib/postgresql/<version>/bin, off PATH)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(
        Path(search_root).glob(f"*/bin/{name}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
        reverse=True,
    )
    if candidates:
        return candidates[0]
    raise ClusterError(
        f"`{name}` not found (neither on PATH nor under /usr/lib/postgresql/<version>/bin): "
        f"install the Debian package `{PG_PACKAGE}` (apt-get install -y {PG_PACKAGE})"
    )


def find_postgres_server() -> tuple[Path, Path]:
    """`initdb` and the `postgres` server of the same version (the one that made the data folder)."""
    initdb = find_postgres_bin("initdb")
    server = initdb.parent / "postgres"
    return initdb, server if server.exists() else find_postgres_bin("postgres")


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ClusterError(
        f"`redis-server` not found on PATH: install the Debian package `{REDIS_PACKAGE}` "
        f"(apt-get install -y {REDIS_PACKAGE})"
    )


def pg_account() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root (it refuses to run as root), else None."""
    if os.geteuid() != 0:
        return None
    for account in UNPRIVILEGED_ACCOUNTS:
        try:
            return pwd.getpwnam(account)
        except KeyError:
            continue
    raise ClusterError(
        "running as root, and no unprivileged account to run PostgreSQL as "
        f"(tried {', '.join(UNPRIVILEGED_ACCOUNTS)}); the Debian package `{PG_PACKAGE}` creates `postgres`"
    )


def check_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Raise unless `account` can reach `path` (each folder above it searchable by that account)."""
    gids = {account.pw_gid, *(g.gr_gid for g in _groups_of(account.pw_name))}
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            break
        st = folder.stat()
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise ClusterError(
                f"PostgreSQL runs as `{account.pw_name}` (it refuses root) and cannot enter {folder}: "
                f"choose a cluster folder outside it, or allow it with `chmod o+x {folder}`"
            )


def _groups_of(user: str):
    import grp

    return [g for g in grp.getgrall() if user in g.gr_mem]


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


# ---- PostgreSQL ------------------------------------------------------------------------------------------------


def _initdb_command(initdb: Path, data: Path, pwfile: Path) -> list[str]:
    return [
        str(initdb),
        "-D",
        str(data),
        "-U",
        PG_USER,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
    ]


def init_postgres(
    initdb: Path, pg_dir: Path, data: Path, password: str, account: pwd.struct_passwd | None, log: Path
) -> None:
    """initdb the data folder (once): superuser `arrival` with a password, scram on 127.0.0.1."""
    pg_dir.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(pg_dir, account.pw_uid, account.pw_gid)
        check_traversable(pg_dir, account)
    os.chmod(pg_dir, 0o700)
    if (data / "PG_VERSION").is_file():
        return
    pwfile = pg_dir / "initdb.pw"
    write_private(pwfile, password + "\n")
    if account is not None:
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    try:
        with open(log, "ab") as out:
            done = subprocess.run(
                _initdb_command(initdb, data, pwfile),
                check=False,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=pg_dir,
                **_as_account(account),
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ClusterError(f"initdb failed (exit {done.returncode}); log {log}:\n{tail(log)}")


def pg_connect(port: int, password: str, dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1", port=port, user=PG_USER, password=password, dbname=dbname, connect_timeout=2
    )


def pg_ready(port: int, password: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            pg_connect(port, password).close()
            return True
        except Exception:  # noqa: BLE001 - any connection failure means "not yet"
            return False

    return ready


def create_database(port: int, password: str) -> None:
    conn = pg_connect(port, password)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        conn.close()


def start_postgres(info: ClusterInfo, port: int, password: str, timeout: float) -> subprocess.Popen:
    """initdb (once) into <base>/postgres/data, then `postgres` on 127.0.0.1:port without a Unix socket and
    without waiting for the disk at each commit, as the `postgres` account when we are root; wait until it
    accepts a login and create the database."""
    initdb, server = find_postgres_server()
    account = pg_account()
    pg_dir, log_path = info.base / "postgres", info.base / "logs" / "postgres.log"
    init_postgres(initdb, pg_dir, pg_dir / "data", password, account, log_path)
    command = [str(server), "-D", str(pg_dir / "data"), "-p", str(port)]
    command += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
    # A commit returns before its WAL reaches the disk (Postgres flushes it within a fraction of a second): a
    # run writes an event per commit, and this machine's disk takes milliseconds per flush. A crash of the server
    # (not of a client) may lose the last events written; the database stays consistent.
    command += ["-c", "synchronous_commit=off"]
    proc = spawn_logged(command, log_path, cwd=pg_dir, **_as_account(account))
    info.record(proc, "postgres", "SIGINT", "postgres", log_path)
    wait_for(pg_ready(port, password), proc, "PostgreSQL", log_path, timeout)
    create_database(port, password)
    return proc


# ---- Redis -----------------------------------------------------------------------------------------------------


def redis_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return ready


def start_redis(info: ClusterInfo, port: int, timeout: float) -> subprocess.Popen:
    """`redis-server` on 127.0.0.1:port without persistence, in the foreground; wait until it answers PING."""
    redis_dir, log_path = info.base / "redis", info.base / "logs" / "redis.log"
    redis_dir.mkdir(exist_ok=True)
    command = [str(find_redis_server()), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(redis_dir)]
    proc = spawn_logged(command, log_path)
    info.record(proc, "redis", "SIGTERM", "redis-server", log_path)
    wait_for(redis_ready(port), proc, "Redis", log_path, timeout)
    return proc

"""Bookkeeping of the local cluster's processes: what was started (pids.json), whether a pid still runs,
waiting for a process to be ready, stopping one by pid, and the private files of the cluster folder."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .settings import DEFAULT_CLUSTER_DIR, ClusterError


@dataclass
class Process:
    """One process of the cluster: what it is, its pid, how to stop it and a word its command line holds."""

    name: str
    pid: int
    stop_signal: str  # SIGTERM, or SIGINT for PostgreSQL's fast shutdown
    match: str  # checked in /proc/<pid>/cmdline before any signal (a pid can be reused)
    log: str = ""


@dataclass
class ClusterInfo:
    """What `cluster_up` started and the environment it wrote to `env_file`."""

    base: Path
    env_file: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.name.startswith("worker")]

    def record(self, proc: subprocess.Popen, name: str, stop: str, match: str, log: Path) -> None:
        """Add a process just started and rewrite pids.json at once (a later failure can still stop it)."""
        self.processes.append(Process(name, proc.pid, stop, match, str(log)))
        write_pids(self.base, self.processes)


def spawn_logged(command: list[str], log_path: Path, **popen: object) -> subprocess.Popen:
    """Start a server or worker in its own session, its output appended to `log_path`, no standard input."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **popen)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def read_state(base: Path) -> dict:
    path = base / "cluster.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600 from its creation), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_pids(base: Path, processes: list[Process]) -> None:
    write_private(base / "pids.json", json.dumps([asdict(p) for p in processes], indent=2) + "\n")


def read_pids(base_dir: str | os.PathLike = DEFAULT_CLUSTER_DIR) -> list[Process]:
    """The processes recorded by the last `cluster_up` in `base_dir` (empty if none)."""
    path = Path(base_dir) / "pids.json"
    if not path.is_file():
        return []
    return [Process(**p) for p in json.loads(path.read_text())]


def env_file_text(env: Mapping[str, str]) -> str:
    lines = [
        "# The environment of the local arrival cluster: `source` this file in every shell that uses it."
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables an env.sh of `env_file_text` exports."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def pid_alive(pid: int, match: str = "") -> bool:
    """Whether `pid` runs (not a zombie) and, when `match` is given, its command line contains it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that has exited
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and (not match or match in cmdline)


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    """Wait until `ready()`; raise with the log's last lines if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(
                f"{what} exited with code {proc.returncode} while starting; log {log}:\n{tail(log)}"
            )
        if ready():
            return
        time.sleep(0.2)
    raise ClusterError(f"{what} was not ready after {timeout:.0f} s; log {log}:\n{tail(log)}")


def log_ready(log: Path, pattern: str, offset: int = 0) -> Callable[[], bool]:
    """A readiness probe: the log file holds a line matching `pattern` after byte `offset` (the logs are
    appended to across restarts, so an earlier run's line must not count)."""
    import re

    regex = re.compile(pattern.encode())

    def ready() -> bool:
        try:
            with open(log, "rb") as handle:
                handle.seek(offset)
                return bool(regex.search(handle.read()))
        except OSError:
            return False

    return ready


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def stop_process(proc: Process, timeout: float) -> str:
    """Send the process its stop signal and wait; kill its process group after `timeout` seconds.

    Return "stopped", "killed" or "not running" (also when the pid now belongs to another command)."""
    if not pid_alive(proc.pid, proc.match):
        return "not running"
    started = time.monotonic()
    try:
        os.kill(proc.pid, signal.Signals[proc.stop_signal])
    except ProcessLookupError:
        return "not running"
    while pid_alive(proc.pid) and time.monotonic() - started < timeout:
        time.sleep(0.1)
    if not pid_alive(proc.pid):
        return "stopped"
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # each process leads its own session and group
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return "killed"

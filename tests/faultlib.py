"""Fault-injection helpers: a listing of every file under a run root, the store's temp files, the run reports a
failure leaves, injected OS errors, mounts, and `arrival` commands in subprocesses."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from arrival_core.contracts import PROJECT_ROOT

TEMP_FILE = re.compile(r".*\.tmp-[0-9a-f]{32}")  # the store's temp files (`.<name>.tmp-<uuid hex>`)
REPORTS = "data/layer2/5B/run_report/"
RECORDS = "records/5B/"  # commit and check records: caches beside the outputs
OUTPUTS = "data/layer2/5B/"
BIN = Path(sys.executable).parent
TIMEOUT = 300


# ---- listings ------------------------------------------------------------------------------------------------

def listing(root: Path) -> dict[str, str]:
    """Every file under a root (relative path -> sha256)."""
    root = Path(root)
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def temp_files(root: Path) -> list[str]:
    """Every file under a root whose name is of the store's temp pattern."""
    return sorted(str(Path(folder) / n) for folder, _, names in os.walk(root) for n in names if TEMP_FILE.fullmatch(n))


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths added, removed or rewritten between two listings."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def assert_nothing_written(root: Path, before: dict[str, str], *, fail_code: str | None = None,
                           records_for: tuple[str, ...] = ()) -> list[dict]:
    """No temp file anywhere, and no file appeared or changed under the root, except:
    - new run reports when a FAIL report is expected: exactly one FAIL carrying `fail_code`, the others PASS;
    - new commit or check records (caches of passing states and check steps) of the states or datasets named
      in `records_for`.
    Returns the new run reports."""
    root = Path(root)
    left = temp_files(root)
    assert left == [], f"temp files left: {left}"
    diff = changed(before, listing(root))
    allowed = tuple(f"/state={n}/" for n in records_for) + tuple(f"/dataset={n}/" for n in records_for)
    records = [p for p in diff if p.startswith(RECORDS)]
    assert [p for p in records if p in before or not any(a in p for a in allowed)] == [], \
        f"records appeared or changed: {records}"
    diff = [p for p in diff if p not in records]
    if fail_code is None:
        assert diff == [], f"files appeared or changed: {diff}"
        return []
    outside = [p for p in diff if not p.startswith(REPORTS)]
    assert outside == [], f"files appeared or changed outside the run reports: {outside}"
    assert [p for p in diff if p in before] == [], "an existing run report was rewritten or removed"
    reports = [json.loads((root / p).read_bytes()) for p in diff]
    failed = [r for r in reports if r["status"] == "FAIL"]
    codes = [(r["error_code"], r["error"]["error_code"]) for r in failed]
    assert codes == [(fail_code, fail_code)], f"FAIL reports {codes}, expected one with {fail_code}"
    assert all(r["status"] == "PASS" for r in reports if r not in failed), reports
    return reports


def outputs_5b(root: Path) -> dict[str, str]:
    """Every 5B output file under a root (run reports excluded) -> sha256."""
    return {p: d for p, d in listing(root).items() if p.startswith(OUTPUTS) and not p.startswith(REPORTS)}


def records_5b(root: Path) -> dict[str, str]:
    """Every commit and check record under a root -> sha256 (identity-deterministic: no run id, no time)."""
    return {p: d for p, d in listing(root).items() if p.startswith(RECORDS)}


# ---- broken upstream data ------------------------------------------------------------------------------------

def corrupt_first_key_page(path: Path) -> None:
    """Overwrite 16 bytes in the middle of the first data page of `merchant_id` in a λ surface (the first column
    chunk S1 decodes; the zstd frame of the page no longer decompresses)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "merchant_id")
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    middle = (chunk.data_page_offset + end) // 2
    data = bytearray(Path(path).read_bytes())
    data[middle: middle + 16] = b"\xa5" * 16
    Path(path).write_bytes(bytes(data))


def revalidate_5a(root: Path) -> None:
    """`s2s3lib.revalidate_5a` (tests/integration), for modules outside that folder."""
    module = sys.modules.get("s2s3lib")
    if module is None:
        spec = importlib.util.spec_from_file_location("s2s3lib", Path(__file__).parent / "integration" / "s2s3lib.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["s2s3lib"] = module
        spec.loader.exec_module(module)
    module.revalidate_5a(root)


# ---- injected OS errors --------------------------------------------------------------------------------------

def os_error(code: int, path: object = None) -> OSError:
    """An OSError as the kernel reports it (ENOSPC: `No space left on device`)."""
    return OSError(code, os.strerror(code), None if path is None else str(path))


def fd_name(fd: int) -> str:
    """The file name an open descriptor refers to (Linux), or '' when unknown."""
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return ""


def is_state_temp(name: str) -> bool:
    """A temp file of a state's outputs (not of a run report, which must still record the failure)."""
    return bool(TEMP_FILE.fullmatch(name)) and not name.startswith(".run_report_5B.")


# ---- mounts (root only) --------------------------------------------------------------------------------------

def mount(*args: str) -> str | None:
    """Run `mount`; return None on success, else why it is not possible here."""
    if os.geteuid() != 0:
        return "mounting needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else f"mount {' '.join(args)} failed: {done.stderr.strip()}"


def umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


# ---- `arrival` in a subprocess ---------------------------------------------------------------------------------

def cli_env(home: Path) -> dict[str, str]:
    """The environment of a command: DAGSTER_HOME in a temp folder, no run root but the one given by --root."""
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("ARRIVAL_RUN_ROOT", None)
    return env


def arrival(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """Run `arrival <args>` to completion."""
    return subprocess.run([str(BIN / "arrival"), *args], cwd=PROJECT_ROOT, env=cli_env(home), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


# `arrival` itself, with an fsync of the watched temp files held back for FAULTS_FSYNC_DELAY seconds, so that a
# signal sent when such a temp file appears lands while it is still staged however busy the machine is.
SLOW_FSYNC_BOOT = r"""
import os, re, sys, time
_fsync, _temp = os.fsync, re.compile(r".*\.tmp-[0-9a-f]{32}")
_prefix, _delay = os.environ["FAULTS_FSYNC_PREFIX"], float(os.environ["FAULTS_FSYNC_DELAY"])
def _held_fsync(fd):
    try:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        name = ""
    if name.startswith(_prefix) and _temp.fullmatch(name):
        time.sleep(_delay)
    return _fsync(fd)
os.fsync = _held_fsync
sys.argv[0] = "arrival"
from arrival_assets.cli import main
sys.exit(main())
"""


def spawn_arrival(args: list[str], home: Path, *, hold_fsync_of: str, delay: float) -> subprocess.Popen:
    """Start `arrival <args>` whose fsyncs of temp files named `hold_fsync_of*` each take `delay` seconds."""
    env = {**cli_env(home), "FAULTS_FSYNC_PREFIX": hold_fsync_of, "FAULTS_FSYNC_DELAY": str(delay)}
    return subprocess.Popen([sys.executable, "-c", SLOW_FSYNC_BOOT, *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def find_temp(base: Path, prefix: str, under: str = "") -> Path | None:
    """The first temp file named `prefix*` under `base` (in a folder whose path contains `under`)."""
    for folder, _, names in os.walk(base):
        if under in folder:
            for name in names:
                if name.startswith(prefix) and TEMP_FILE.fullmatch(name):
                    return Path(folder) / name
    return None


def signal_on_temp(proc: subprocess.Popen, base: Path, prefix: str, signum: int, *, under: str = "",
                   poll: float = 0.005, timeout: float = TIMEOUT) -> tuple[Path, str, str]:
    """Poll for a temp file named `prefix*` and send `signum` the moment it appears; wait for the process.
    Fails the test when the process finished (or the timeout passed) before the file was seen.
    Returns the temp file seen and the process's stdout and stderr."""
    deadline = time.monotonic() + timeout
    while (found := find_temp(base, prefix, under)) is None:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command finished (exit {proc.returncode}) before a temp file {prefix}* appeared under "
                        f"{base}; nothing was interrupted\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no temp file {prefix}* appeared under {base} within {timeout} s")
        time.sleep(poll)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    return found, out, err


def kill9_on_temp(proc: subprocess.Popen, base: Path, prefix: str) -> tuple[Path, str, str]:
    """`kill -9` the process when a temp file named `prefix*` first appears."""
    return signal_on_temp(proc, base, prefix, signal.SIGKILL)

"""Injected faults in the state runners: a full disk, an interrupt as a temp file is created, a corrupt λ page,
a directory in an output's place, a read-only tree, an edited λ. Each fails with its exact code, names the file, and leaves the run root as it was
(only the FAIL run report of the state is new) with no temp file of the store anywhere."""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from faultlib import (
    assert_nothing_written,
    corrupt_first_key_page,
    fd_name,
    is_state_temp,
    listing,
    mount,
    os_error,
    temp_files,
    umount,
)
from s2s3lib import revalidate_5a, store

from arrival_assets import interrupts
from arrival_core import pipeline
from arrival_core import store as store_module
from arrival_core.encoding import sha256_file
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo

RUNNERS = {"S0": pipeline.run_s0, "S1": pipeline.run_s1, "S2": pipeline.run_s2, "S3": pipeline.run_s3}
ORDER = ("S0", "S1", "S2", "S3")
SURFACE = "merchant_zone_scenario_local_5A"


def _run_until(st: Store, state: str) -> None:
    """Run every state before `state` for baseline_v1|42."""
    for name in ORDER[: ORDER.index(state)]:
        RUNNERS[name](st, PartitionKey(42, "baseline_v1"))


def _fails(st: Store, state: str, code: str) -> ArrivalError:
    """Run a state that must fail with `code`; nothing but its FAIL run report may appear under the root."""
    before = listing(st.run_root)
    with pytest.raises(ArrivalError) as err:
        RUNNERS[state](st, PartitionKey(42, "baseline_v1"))
    assert err.value.code == code, err.value.message
    assert_nothing_written(st.run_root, before, fail_code=code)
    return err.value


def _surface(world: WorldInfo, scenario_id: str = "baseline_v1") -> Path:
    return store(world).path(SURFACE, manifest_fingerprint=world.manifest_fingerprint, scenario_id=scenario_id)


# ---- a full disk ---------------------------------------------------------------------------------------------

def _fail_writes(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every write of a state's temp file raises `code`: JSON through the store's `open`, parquet at the
    descriptor the sink writes to."""
    real_open, real_write = open, os.write

    class FullFile(io.FileIO):
        def write(self, data: bytes) -> int:
            raise os_error(code, self.name)

    def store_open(file, mode="r", *args, **kwargs):
        if "w" in mode and is_state_temp(os.path.basename(file)):
            return FullFile(file, "w")
        return real_open(file, mode, *args, **kwargs)

    def write(fd: int, data) -> int:
        if is_state_temp(fd_name(fd)):
            raise os_error(code, fd_name(fd))
        return real_write(fd, data)

    monkeypatch.setattr(store_module, "open", store_open, raising=False)
    monkeypatch.setattr(os, "write", write)


def _fail_fsyncs(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every fsync of a state's temp file raises `code` (a full disk reported at fsync, as on delayed allocation)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if is_state_temp(fd_name(fd)):
            raise os_error(code, fd_name(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


INJECT = {"write": _fail_writes, "fsync": _fail_fsyncs}


@pytest.mark.parametrize("where", list(INJECT))
@pytest.mark.parametrize("state", ["S0", "S2", "S3"])
def test_enospc_is_io_write_failed_and_leaves_nothing(tiny_world_copy: WorldInfo, monkeypatch, state, where):
    st = store(tiny_world_copy)
    _run_until(st, state)
    INJECT[where](monkeypatch, errno.ENOSPC)
    err = _fails(st, state, f"5B.{state}.IO_WRITE_FAILED")
    assert "No space left on device" in err.message
    assert str(tiny_world_copy.root) in err.context["file"]


@pytest.fixture
def small_tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A tmpfs on a temp folder (root only), unmounted at the end; skipped where mounting is not possible."""
    target = tmp_path / "tmpfs"
    target.mkdir()
    why = mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target))
    if why:
        pytest.skip(f"no tmpfs for a real full disk: {why}")
    request.addfinalizer(lambda: umount(target))
    return target


def test_s2_outputs_that_do_not_fit_on_a_full_tmpfs_are_io_write_failed(tiny_world: WorldInfo, small_tmpfs: Path):
    root = small_tmpfs / "world"
    shutil.copytree(tiny_world.root, root)
    st = store(root)
    _run_until(st, "S2")
    used = os.statvfs(small_tmpfs)
    used_kib = (used.f_blocks - used.f_bfree) * used.f_frsize // 1024
    why = mount("-o", f"remount,size={used_kib + 192}k", str(small_tmpfs))  # S2 writes ~700 KiB
    assert why is None, why
    err = _fails(st, "S2", "5B.S2.IO_WRITE_FAILED")
    assert "No space left on device" in err.message or "[Errno 28]" in err.message, err.message


# ---- an interrupt the moment a temp file is created -------------------------------------------------------------

@pytest.mark.parametrize("state, temp", [("S0", ".sealed_inputs_5B."), ("S3", ".rng_event_arrival_bucket_count.")])
def test_interrupt_as_a_temp_file_is_created_leaves_no_temp_file(tiny_world_copy: WorldInfo, monkeypatch, state, temp):
    """SIGTERM delivered while the store creates a temp file: the handler of `arrival` raises as the creating call
    returns, the state stops, and neither that temp file nor any other is left."""
    st = store(tiny_world_copy)
    _run_until(st, state)
    before = listing(st.run_root)
    real_open = os.open

    def open_then_sigterm(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and os.path.basename(str(path)).startswith(temp):
            os.kill(os.getpid(), signal.SIGTERM)  # handled as this call returns, as a signal arriving during it
        return fd

    monkeypatch.setattr(os, "open", open_then_sigterm)
    with pytest.raises(interrupts.Interrupted), interrupts.stopping_on_signals():
        RUNNERS[state](st, PartitionKey(42, "baseline_v1"))
    monkeypatch.undo()
    assert_nothing_written(st.run_root, before)


# ---- a corrupt page in the λ surface -----------------------------------------------------------------------------

def test_corrupt_page_in_the_lambda_surface_fails_s1_naming_the_file(tiny_world_copy: WorldInfo):
    surface = _surface(tiny_world_copy)
    corrupt_first_key_page(surface)
    revalidate_5a(tiny_world_copy.root)  # an upstream that sealed the corrupt bytes: S0 hashes, it does not decode
    st = store(tiny_world_copy)
    pipeline.run_s0(st, PartitionKey(42, "baseline_v1"))
    err = _fails(st, "S1", "5B.S1.IO_READ_FAILED")
    assert str(surface) in err.message and err.context["file"] == str(surface)


# ---- a directory where an output file goes ------------------------------------------------------------------------

def test_directory_at_an_s2_output_path_is_io_write_failed_and_left_untouched(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    _run_until(st, "S2")
    ident = pipeline.resolve_identity(st, PartitionKey(42, "baseline_v1"), state="S2")
    target = st.path("s2_realised_intensity_5B", **ident.tokens())
    target.mkdir(parents=True)
    (target / "kept.txt").write_text("not the store's\n")
    err = _fails(st, "S2", "5B.S2.IO_WRITE_FAILED")
    assert str(target) in err.message and err.context["file"] == str(target)
    assert target.is_dir() and (target / "kept.txt").read_text() == "not the store's\n"


# ---- a read-only tree -----------------------------------------------------------------------------------------

def test_read_only_outputs_folder_is_io_write_failed(tiny_world_copy: WorldInfo, monkeypatch):
    """A folder the store may not create entries in (EROFS on create and link under the 5B tree)."""
    st = store(tiny_world_copy)
    _run_until(st, "S2")
    base = str(tiny_world_copy.root / "data" / "layer2" / "5B")
    real_open, real_link = os.open, os.link

    def ro_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(base) and "run_report" not in str(path):
            raise os_error(errno.EROFS, path)
        return real_open(path, flags, *args, **kwargs)

    def ro_link(src, dst, *args, **kwargs):
        if str(dst).startswith(base) and "run_report" not in str(dst):
            raise os_error(errno.EROFS, dst)
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "link", ro_link)
    err = _fails(st, "S2", "5B.S2.IO_WRITE_FAILED")
    assert "Read-only file system" in err.message


# ---- a plausible λ edit the upstream bundle did not validate -----------------------------------------------------

def _edit_rows(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


def test_lambda_edit_without_a_revalidated_bundle_is_upstream_not_pass(tiny_world_copy: WorldInfo):
    surface = _surface(tiny_world_copy)
    sealed = sha256_file(surface)
    _edit_rows(surface, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("lambda_local_scenario") * 1.5)
        .otherwise(pl.col("lambda_local_scenario")).alias("lambda_local_scenario")))
    edited = sha256_file(surface)
    assert edited != sealed
    err = _fails(store(tiny_world_copy), "S0", "5B.S0.UPSTREAM_NOT_PASS")
    assert SURFACE in err.message and sealed in err.message and edited in err.message


def test_fault_helpers_see_a_temp_file(tmp_path: Path):
    """The listing and the temp pattern used above find the store's temp files (a guard on the guards)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f".x.parquet.tmp-{'0' * 32}").write_bytes(b"")
    (tmp_path / "a" / "x.parquet.tmp").write_bytes(b"")
    assert temp_files(tmp_path) == [str(tmp_path / "a" / f".x.parquet.tmp-{'0' * 32}")]
    assert set(listing(tmp_path)) == {f"a/.x.parquet.tmp-{'0' * 32}", "a/x.parquet.tmp"}

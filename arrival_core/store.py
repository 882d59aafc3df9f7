"""The store: dictionary-resolved paths, reading inputs, and atomic no-clobber publishing of output sets."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from . import contracts
from .encoding import canonical_json, sha256_file
from .errors import ArrivalError, error_code
from .sink import DigestingFile, ParquetSink


@dataclass(frozen=True)
class Published:
    """One published file: where it is, its sha256, its row count (tables) and whether this run created it."""

    dataset_id: str
    path: Path
    sha256: str
    rows: int | None
    created: bool


@dataclass(frozen=True)
class Store:
    """Paths through the dataset dictionary under one run root, and the publishing of outputs."""

    run_root: Path
    contracts_dir: Path = contracts.DEFAULT_CONTRACTS_DIR
    config_dir: Path = contracts.DEFAULT_CONFIG_DIR

    def entry(self, dataset_id: str) -> contracts.DatasetEntry:
        """Return the dictionary entry of a dataset."""
        return contracts.dataset(dataset_id, self.contracts_dir)

    def path(self, dataset_id: str, **tokens: object) -> Path:
        """Resolve a dataset's path from validated tokens; never leaves its root."""
        roots = {"run": Path(self.run_root), "config": Path(self.config_dir)}
        return contracts.resolve_path(self.entry(dataset_id), roots, tokens)

    @contextmanager
    def transaction(self, state: str) -> Iterator[Transaction]:
        """Stage a state's output files, then publish all of them or none (no temp file survives)."""
        tx = Transaction(self, state)
        try:
            yield tx
        except BaseException:
            tx.abort()
            raise
        tx.commit()


REPLACEABLE = frozenset({"commit_record_5B", "check_record_5B"})  # records: caches, a damaged one is replaced
TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")  # the store's own temp files, and nothing else


@contextmanager
def reading(state: str, path: Path, what: str = "") -> Iterator[None]:
    """Map a read or decode failure of `path` to the state's IO_READ_FAILED naming the file."""
    try:
        yield
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise ArrivalError(error_code(state, "IO_READ_FAILED"),
                           f"cannot read {what + ' ' if what else ''}{path}: {exc}", file=str(path)) from exc


def sweep_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files a dead writer left in a folder: only names of the store's temp pattern whose
    writer no longer holds their lock (a live writer keeps an exclusive flock until it publishes or aborts)."""
    removed = []
    try:
        names = [n for n in os.listdir(folder) if TEMP_NAME.match(n)]
    except FileNotFoundError:
        return removed
    for name in names:
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
            removed.append(path)
        except BlockingIOError:
            continue  # a live writer holds it
        finally:
            os.close(fd)
    return removed


def sweep_stale_subfolders(folder: Path) -> list[Path]:
    """Sweep dead writers' temp files in each subfolder of `folder` (one per run, e.g. run reports) and remove
    the subfolders that held nothing else."""
    removed = []
    try:
        children = [folder / n for n in os.listdir(folder)]
    except FileNotFoundError:
        return removed
    for child in children:
        if child.is_dir() and sweep_stale_temps(child):
            removed.append(child)
            with contextlib.suppress(OSError):  # not empty: it holds a published report
                child.rmdir()
    return removed


def fsync_folder(folder: Path) -> None:
    """Make a folder's new entries durable (after a link or unlink in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_locked(staged: _Staged) -> None:
    """Create the staged temp file under a fresh name and hold an exclusive lock on it. A sweeper that saw the
    file before the lock was taken may have removed it; then the path no longer names the locked file, and
    another name is tried. The name is on the staged entry before the file exists, so an abort removes it."""
    while True:
        staged.tmp = staged.target.parent / f".{staged.target.name}.tmp-{uuid.uuid4().hex}"
        staged.lock_fd = os.open(staged.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(staged.lock_fd, fcntl.LOCK_EX)
        try:
            if os.stat(staged.tmp).st_ino == os.fstat(staged.lock_fd).st_ino:
                return
        except FileNotFoundError:
            pass
        os.close(staged.lock_fd)
        staged.lock_fd = -1


@dataclass
class _Staged:
    dataset_id: str
    target: Path
    tmp: Path
    rows: int | None
    lock_fd: int
    sink: ParquetSink | None = None
    replaces: bool = False  # a record that takes the place of a damaged one (an atomic rename, not a link)


@dataclass
class Transaction:
    """A set of staged files for one state execution; see `Store.transaction`."""

    store: Store
    state: str
    _staged: list[_Staged] = field(default_factory=list)
    _made_dirs: list[Path] = field(default_factory=list)
    _swept: set[Path] = field(default_factory=set)

    def _stage(self, dataset_id: str, target: Path, rows: int | None) -> _Staged:
        """Create the target's folder and a locked temp file beside it, sweeping what dead writers left there."""
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.extend(missing)
            if target.parent not in self._swept:
                sweep_stale_temps(target.parent)
                self._swept.add(target.parent)
            staged = _Staged(dataset_id, target, target.parent / f".{target.name}.tmp-", rows, -1)
            self._staged.append(staged)  # known to the transaction before its file exists: an interrupt anywhere
            _create_locked(staged)       # below still finds the temp file to remove
        except OSError as exc:
            raise self._io_failed(target, exc) from exc
        return staged

    def _io_failed(self, target: Path, exc: BaseException) -> ArrivalError:
        return ArrivalError(error_code(self.state, "IO_WRITE_FAILED"), f"cannot write {target}: {exc}", file=str(target))

    def write_bytes(self, dataset_id: str, target: Path, data: bytes, rows: int | None = None) -> None:
        """Stage raw bytes for a target file."""
        tmp = self._stage(dataset_id, target, rows).tmp
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise self._io_failed(target, exc) from exc

    def write_json(self, dataset_id: str, target: Path, obj: object, rows: int | None = None) -> None:
        """Stage a JSON document in canonical form (sorted keys, no spaces) plus a newline."""
        self.write_bytes(dataset_id, target, canonical_json(obj) + b"\n", rows)

    def replace_record(self, dataset_id: str, target: Path, obj: object) -> None:
        """Stage a commit or check record that replaces whatever record is at the target (one that failed its
        schema or lied about its files): published by an atomic rename after the no-clobber links, so a
        reader sees the old record or the new one, never a part. Outputs are never replaced."""
        if dataset_id not in REPLACEABLE:
            raise ValueError(f"{dataset_id} is not a record; only {sorted(REPLACEABLE)} are ever replaced")
        self.write_json(dataset_id, target, obj)
        self._staged[-1].replaces = True

    def parquet(self, dataset_id: str, target: Path, schema: pa.Schema) -> ParquetSink:
        """Open a staged parquet sink for a target file; it is closed and published at commit."""
        staged = self._stage(dataset_id, target, None)
        staged.sink = ParquetSink(DigestingFile(staged.lock_fd), schema, lambda exc: self._io_failed(target, exc))
        return staged.sink

    def write_parquet(self, dataset_id: str, target: Path, frame: pl.DataFrame, schema: pa.Schema | None = None) -> None:
        """Stage a whole frame as parquet."""
        arrow = frame.to_arrow()
        sink = self.parquet(dataset_id, target, schema or arrow.schema)
        sink.write(arrow)

    def commit(self) -> None:
        """Publish every staged file with a no-clobber link; identical existing files are a no-op."""
        self.published: list[Published] = []
        created: list[Path] = []
        try:
            for st in self._staged:
                if st.sink is not None:
                    st.sink.close()
                    st.rows = st.sink.rows
                try:
                    os.fsync(st.lock_fd)
                except OSError as exc:
                    raise self._io_failed(st.target, exc) from exc
            digests = [self._digest(st) for st in self._staged]
            for st, digest in zip(self._staged, digests):  # refuse before publishing anything
                if not st.replaces and st.target.exists() and sha256_file(st.target) != digest:
                    raise ArrivalError(
                        error_code(self.state, "IO_WRITE_CONFLICT"),
                        f"{st.target} exists with different content; it is left untouched "
                        f"(a changed input or policy should give a new parameter_hash or fingerprint)",
                        file=str(st.target),
                        dataset=st.dataset_id,
                    )
            for st, digest in zip(self._staged, digests):
                if st.replaces:
                    continue
                try:
                    os.link(st.tmp, st.target)
                    created.append(st.target)
                    made = True
                except FileExistsError:
                    if sha256_file(st.target) != digest:
                        raise ArrivalError(
                            error_code(self.state, "IO_WRITE_CONFLICT"),
                            f"{st.target} appeared with different content during publish; left untouched",
                            file=str(st.target),
                            dataset=st.dataset_id,
                        )
                    made = False
                except OSError as exc:
                    raise self._io_failed(st.target, exc) from exc
                self.published.append(Published(st.dataset_id, st.target, digest, st.rows, made))
            for st, digest in zip(self._staged, digests):
                if st.replaces:
                    try:
                        os.replace(st.tmp, st.target)
                    except OSError as exc:
                        raise self._io_failed(st.target, exc) from exc
                    self.published.append(Published(st.dataset_id, st.target, digest, st.rows, True))
            for folder in dict.fromkeys(st.target.parent for st in self._staged):
                try:
                    fsync_folder(folder)
                except OSError as exc:
                    raise self._io_failed(folder, exc) from exc
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            self.abort()
            raise
        self._remove_temps()

    def abort(self) -> None:
        """Remove every staged temp file and any folder this transaction created that is still empty."""
        for st in self._staged:
            if st.sink is not None:
                with contextlib.suppress(Exception):  # already closed or half-written: removal below is what matters
                    st.sink.close_quietly()
        self._remove_temps()
        for d in sorted(set(self._made_dirs), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass

    def _digest(self, st: _Staged) -> str:
        if st.sink is not None and st.sink.sha256 is not None:
            return st.sink.sha256
        try:
            return sha256_file(st.tmp)
        except OSError as exc:
            raise self._io_failed(st.target, exc) from exc

    def _remove_temps(self) -> None:
        """Unlink every temp file, then release its lock (a sweeper never sees an unlocked temp of a live run)."""
        for st in self._staged:
            st.tmp.unlink(missing_ok=True)
            if st.lock_fd >= 0:
                os.close(st.lock_fd)
                st.lock_fd = -1


def read_json(path: Path) -> object:
    """A JSON document (the one reader of every published or sealed JSON file), parsed within the document
    limits (a DocumentLimitError, a ValueError, past them)."""
    return contracts.parse_json(Path(path).read_bytes())

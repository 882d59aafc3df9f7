"""The store: dictionary-resolved paths, reading inputs, and atomic no-clobber publishing of output sets."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import contracts
from .encoding import canonical_json, sha256_file
from .errors import ArrivalError, error_code

ROW_GROUP_ROWS = 1 << 20  # fixed so file bytes never depend on how a writer was fed


def parquet_options(schema: pa.Schema) -> dict:
    """The 5B file format, by column type: strings in dictionary pages (dictionary-coded arrays are written as their
    codes), integers delta-packed (bucket indexes and RNG counters shrink to almost nothing), floats plain (a
    dictionary of continuous values rarely pays for its hashing); statistics on the non-string columns, which
    readers prune by; zstd level 1. No Arrow schema is embedded, so readers see plain strings."""
    strings = [f.name for f in schema if _is_string(f.type)]
    encodings = {f.name: "DELTA_BINARY_PACKED" if pa.types.is_integer(f.type) else "PLAIN"
                 for f in schema if not _is_string(f.type) and not pa.types.is_boolean(f.type)}
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": strings,
            "write_statistics": [f.name for f in schema if f.name not in strings], "column_encoding": encodings,
            "store_schema": False}


def _is_string(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


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


class DigestingFile:
    """A write-only file over an open descriptor that hashes every byte it writes, so a staged file's sha256 is
    known when it is closed, without reading it back."""

    def __init__(self, fd: int) -> None:
        self._fd, self._sha = fd, hashlib.sha256()
        self.position, self.closed = 0, False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.position += done
        return done

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered here; durability is the transaction's fsync."""

    def close(self) -> None:
        self.closed = True

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class ParquetSink:
    """Streams frames into a staged parquet file in fixed-size row groups (bytes independent of chunking)."""

    def __init__(self, tmp: Path | pa.NativeFile | DigestingFile, schema: pa.Schema,
                 fail: Callable[[BaseException], Exception] | None = None, options: dict | None = None) -> None:
        self._fail = fail
        self._file = tmp
        try:
            self._writer = pq.ParquetWriter(tmp, schema, **(options or parquet_options(schema)))
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)
        self._schema = schema
        self._required = [f.name for f in schema if not f.nullable]
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    @property
    def sha256(self) -> str | None:
        """The written file's sha256 once closed, when it was written through a DigestingFile."""
        return self._file.hexdigest() if isinstance(self._file, DigestingFile) and self._file.closed else None

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        """Append rows (already in writer order) to the staged file."""
        try:
            self._write(frame)
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _write(self, frame: pl.DataFrame | pa.Table) -> None:
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if table.num_rows == 0:
            return
        table = table.select(self._schema.names)
        for name in self._required:
            if table[name].null_count:
                raise pa.ArrowInvalid(f"column {name} holds {table[name].null_count} null(s) but is not nullable")
        table = table.cast(self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        full = (table.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        cut = table.num_rows if final else full
        for start in range(0, cut, ROW_GROUP_ROWS):
            self._writer.write_table(table.slice(start, min(ROW_GROUP_ROWS, cut - start)), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(cut)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close_quietly(self) -> None:
        """Close the file without writing what is buffered (the transaction is aborting)."""
        self._writer.close()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        try:
            self._flush(final=True)
            self._writer.close()
            if isinstance(self._file, DigestingFile):
                self._file.close()
        except (OSError, pa.ArrowException) as exc:
            self._reraise(exc)

    def _reraise(self, exc: BaseException) -> None:
        """Raise the owner's coded failure for a write error (or the error itself for an in-memory sink)."""
        if self._fail is None:
            raise exc
        raise self._fail(exc) from exc


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
                if st.target.exists() and sha256_file(st.target) != digest:
                    raise ArrivalError(
                        error_code(self.state, "IO_WRITE_CONFLICT"),
                        f"{st.target} exists with different content; it is left untouched "
                        f"(a changed input or policy should give a new parameter_hash or fingerprint)",
                        file=str(st.target),
                        dataset=st.dataset_id,
                    )
            for st, digest in zip(self._staged, digests):
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
    """A JSON document (the one reader of every published or sealed JSON file)."""
    return json.loads(Path(path).read_bytes())

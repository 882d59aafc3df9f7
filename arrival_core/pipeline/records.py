"""Commit and check records: what a state published (written last), so a materialised partition is verified by
re-hashing its files instead of recomputed, and what a check step found, re-recorded while its basis holds.

Both are identity-deterministic JSON (no run id, no time): re-writing the same record is a no-op publish.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from .. import contracts
from ..encoding import canonical_json, sha256_file, sha256_hex
from ..errors import CONTRACT_INVALID, ArrivalError
from ..identity import Identity
from ..store import Published, Store, read_json
from ..version import code_version

STATES = ("S0", "S1", "S2", "S3", "AUDIT")


def commit_path(store: Store, state: str, identity: Identity) -> Path:
    """Where a state's commit record for a partition lives."""
    return store.path("commit_record_5B", code_version=code_version(), state=state, **identity.tokens())


def commit_record(state: str, identity: Identity, published: Sequence[Published], root: Path) -> dict:
    """The commit record of a state's published files (paths relative to the run root)."""
    return {
        "state_id": f"5B.{state}", "code_version": code_version(), **identity.columns(),
        "files": [{"dataset_id": p.dataset_id, "path": p.path.relative_to(root).as_posix(), "sha256": p.sha256,
                   "rows": p.rows} for p in published],
    }


def read_record(store: Store, dataset_id: str, path: Path) -> dict | None:
    """A commit or check record validated against its schema; None when it is absent, unreadable, past the
    document limits or invalid (a damaged record: whoever computes again replaces it, `replace_record`)."""
    try:
        record = read_json(path)
        contracts.validate_document(record, store.entry(dataset_id).schema_ref, code=CONTRACT_INVALID,
                                    where=str(path), contracts_dir=store.contracts_dir)
    except (OSError, ValueError, ArrivalError):
        return None
    return record  # type: ignore[return-value]  # the schema makes it an object


def verified_outputs(store: Store, state: str, identity: Identity) -> tuple[Published, ...] | None:
    """The state's files as its commit record lists them, when the record is there for this identity and code
    version and every file still has its sha256; else None (the state must compute, and its new record then
    replaces a damaged or lying one)."""
    path = commit_path(store, state, identity)
    record = read_record(store, "commit_record_5B", path)
    if record is None or record["state_id"] != f"5B.{state}" or record["code_version"] != code_version() \
            or {k: record[k] for k in identity.columns()} != identity.columns():
        return None
    files = []
    for entry in record["files"]:
        file = store.run_root / entry["path"]
        try:
            if sha256_file(file) != entry["sha256"]:
                return None
        except OSError:
            return None
        files.append(Published(entry["dataset_id"], file, entry["sha256"], entry["rows"], False))
    return tuple(files)


def proves(store: Store, identity: Identity, path: Path, states: Sequence[str]) -> bool:
    """Whether the commit records of `states` all still match their files and the last one published `path`:
    then the file is exactly what this engine wrote on those states' outputs, and a reader need not re-check
    what its writer built (keys, identity columns, alignment)."""
    found = [verified_outputs(store, state, identity) for state in states]
    return all(f is not None for f in found) and any(p.path == path for p in found[-1])


def check_basis(store: Store, identity: Identity, upto: str) -> str | None:
    """The sha256 over the partition's commit records of the states up to `upto`, in state order (None unless
    each has one): the outputs a check step of that state's data reads are exactly these files."""
    parts = []
    for state in STATES[: STATES.index(upto) + 1]:
        path = commit_path(store, state, identity)
        if not path.is_file():
            return None
        parts.append(path.read_bytes())
    return sha256_hex(canonical_json([sha256_hex(p) for p in parts]))


def check_record_path(store: Store, dataset_id: str, identity: Identity, basis: str) -> Path:
    """Where a dataset's check record for a partition and basis lives: a new basis is a new record, so a record
    of files since replaced never stands in the way of the current one."""
    return store.path("check_record_5B", code_version=code_version(), checked=dataset_id, basis=basis,
                      **identity.tokens())


def recorded_outcomes(store: Store, dataset_id: str, identity: Identity, basis: str,
                      names: Collection[str]) -> list[dict] | None:
    """The outcomes a check step recorded on this basis with this code version, one for each check of `names`
    and no other; else None (absent, invalid, or not this step's checks: the step evaluates again)."""
    path = check_record_path(store, dataset_id, identity, basis)
    record = read_record(store, "check_record_5B", path)
    if record is None or (record["dataset_id"], record["basis"], record["code_version"]) != \
            (dataset_id, basis, code_version()):
        return None
    outcomes = list(record["outcomes"])
    found = [o["name"] for o in outcomes]
    if len(found) != len(set(found)) or set(found) != set(names) or any(o["dataset_id"] != dataset_id
                                                                        for o in outcomes):
        return None
    return outcomes


def write_check_record(store: Store, dataset_id: str, identity: Identity, basis: str, outcomes: list[dict],
                       state: str) -> None:
    """Record a check step's outcomes on their basis: a record already there with these bytes is left as it is
    (a cache); any other (damaged, or of outcomes since re-evaluated) is replaced atomically."""
    path = check_record_path(store, dataset_id, identity, basis)
    record = {"dataset_id": dataset_id, "code_version": code_version(), "basis": basis, "outcomes": outcomes}
    contracts.validate_document(record, store.entry("check_record_5B").schema_ref, code=CONTRACT_INVALID,
                                where=str(path), contracts_dir=store.contracts_dir)
    _publish_record(store, state, "check_record_5B", path, record)


def write_commit_record(store: Store, state: str, identity: Identity, published: Sequence[Published]) -> None:
    """Write the state's commit record last. Its files were just published, so each one's sha256 was computed
    again (a no-op publish compares it with the file there): a record already there with these bytes is left
    as it is, and any other (truncated, invalid, or naming other digests) is replaced atomically."""
    path = commit_path(store, state, identity)
    _publish_record(store, state, "commit_record_5B", path, commit_record(state, identity, published,
                                                                            store.run_root))


def _publish_record(store: Store, state: str, dataset_id: str, path: Path, record: dict) -> None:
    try:
        same = path.read_bytes() == canonical_json(record) + b"\n"
    except FileNotFoundError:
        with store.transaction(state) as tx:
            tx.write_json(dataset_id, path, record)
        return
    except OSError:
        same = False
    if not same:
        with store.transaction(state) as tx:
            tx.replace_record(dataset_id, path, record)


def partition_verified(store: Store, identity: Identity, checked: Sequence[tuple[str, str]],
                       names: Mapping[str, Collection[str]]) -> dict[str, str] | None:
    """When every state's commit record still matches its files and every checked dataset (dataset, state) has
    a valid check record of its checks (`names`) on the current basis, the sha256 of each published dataset;
    else None."""
    digests: dict[str, str] = {}
    for state in STATES:
        found = verified_outputs(store, state, identity)
        if found is None:
            return None
        digests |= {p.dataset_id: p.sha256 for p in found}
    for dataset_id, state in checked:
        basis = check_basis(store, identity, upto=state)
        if basis is None or recorded_outcomes(store, dataset_id, identity, basis, names[dataset_id]) is None:
            return None
    return digests

"""HashGate bundles (DESIGN §3.1): members, an index of their sha256 by path, a PASS flag over their bytes."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ..contracts import DatasetEntry
from ..encoding import canonical_json, sha256_hex

JSON_FLAG_SCHEMA = "hashgate_flag_json"


def bundle_digest(members: Mapping[str, bytes]) -> str:
    """Return sha256 of the members' bytes concatenated in index order (sorted by path)."""
    h = hashlib.sha256()
    for path in sorted(members):
        h.update(members[path])
    return h.hexdigest()


def bundle_files(
    entry: DatasetEntry, manifest_fingerprint: str, members: Mapping[str, bytes]
) -> dict[str, bytes]:
    """Return {file name: bytes} of a passing bundle: its members, index and flag (names from the dictionary).

    The flag is text (`sha256_hex = <hex>`) or JSON (`{"bundle_digest_sha256": ...}`) as its schema says.
    """
    reserved = {entry.raw["index_file"], entry.raw["flag_file"]} & set(members)
    if reserved:
        raise ValueError(f"bundle {entry.id}: member names {sorted(reserved)} are the index and flag names")
    index = {
        "segment": entry.owner_segment,
        "manifest_fingerprint": manifest_fingerprint,
        "entries": [{"path": path, "sha256_hex": sha256_hex(members[path])} for path in sorted(members)],
    }
    digest = bundle_digest(members)
    if entry.raw["flag_schema_ref"].endswith(JSON_FLAG_SCHEMA):
        flag = canonical_json({"bundle_digest_sha256": digest}) + b"\n"
    else:
        flag = f"sha256_hex = {digest}\n".encode("ascii")
    files = dict(members)
    files[entry.raw["index_file"]] = canonical_json(index) + b"\n"
    files[entry.raw["flag_file"]] = flag
    return files

"""Byte encodings shared by every hashing law: UER, LE64/BE64, canonical JSON, sha256 of bytes and files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_FILE_CHUNK = 1 << 20


def uer(value: str | bytes) -> bytes:
    """Encode a string (UTF-8) or bytes as u32 big-endian length followed by the bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) >= 1 << 32:
        raise ValueError("UER payload longer than 2**32-1 bytes")
    return len(data).to_bytes(4, "big") + data


def le64(n: int) -> bytes:
    """Encode an unsigned 64-bit integer as 8 little-endian bytes."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"le64: {n} is not an unsigned 64-bit integer")
    return n.to_bytes(8, "little")


def be64(b: bytes) -> int:
    """Decode exactly 8 bytes as a big-endian unsigned 64-bit integer."""
    if len(b) != 8:
        raise ValueError(f"be64 needs 8 bytes, got {len(b)}")
    return int.from_bytes(b, "big")


def canonical_json(obj: Any) -> bytes:
    """Serialise to the canonical JSON bytes used by every digest (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Return the lowercase hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_FILE_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """Return the sha256 of the concatenated bytes of several files, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_FILE_CHUNK):
                h.update(chunk)
    return h.hexdigest()

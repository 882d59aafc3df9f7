"""Byte encodings shared by every hashing law: UER, LE64/BE64, canonical JSON, sha256 of bytes and files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

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


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it: ~10x faster


def load_yaml(data: str | bytes) -> Any:
    """Parse a YAML document safely (the C loader when available; the same documents as yaml.safe_load)."""
    return yaml.load(data, Loader=_YAML_LOADER)


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a value: mappings and sequences recursed, NumPy scalars as Python numbers, anything
    else non-scalar as its text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        return value.item()
    return str(value)


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, *, also: Any = None) -> str:
    """Return the lowercase hex sha256 of a file, streamed in 1 MiB chunks; `also` (a hashlib object) is fed the
    same bytes, so a bundle digest over several files needs one read of each."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_FILE_CHUNK):
            h.update(chunk)
            if also is not None:
                also.update(chunk)
    return h.hexdigest()

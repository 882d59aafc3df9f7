"""Byte encodings shared by every hashing law: UER, LE64/BE64, canonical JSON, sha256 of bytes and files."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DocumentLimits:
    """How large a document from outside may be: its bytes, its nesting, and its size with every YAML alias
    expanded (containers, scalars and string characters each count one), so a small file cannot stand for a
    huge value that a validator or `repr` would walk."""

    max_bytes: int
    max_depth: int
    max_expanded_size: int


class DocumentLimitError(yaml.YAMLError, ValueError):
    """A document past its limits (too many bytes, too deep, too large expanded, or referring to itself); a
    ValueError and a YAMLError, so every reader that codes a malformed document codes this one too."""


def load_yaml(data: str | bytes, limits: DocumentLimits | None = None) -> Any:
    """Parse a YAML document safely (the C loader when available; the same documents as yaml.safe_load); with
    `limits`, refuse one past them (DocumentLimitError) before anything walks it."""
    _check_length(data, limits)
    try:
        doc = yaml.load(data, Loader=_YAML_LOADER)
    except RecursionError as exc:
        raise DocumentLimitError(f"the document nests too deeply to parse: {exc}") from None
    if limits is not None:
        check_bounds(doc, limits)
    return doc


def load_json(data: str | bytes, limits: DocumentLimits | None = None) -> Any:
    """Parse a JSON document; with `limits`, refuse one past them (DocumentLimitError) before anything walks it."""
    _check_length(data, limits)
    try:
        doc = json.loads(data)
    except RecursionError as exc:
        raise DocumentLimitError(f"the document nests too deeply to parse: {exc}") from None
    if limits is not None:
        check_bounds(doc, limits)
    return doc


def _check_length(data: str | bytes, limits: DocumentLimits | None) -> None:
    if limits is not None and len(data) > limits.max_bytes:
        raise DocumentLimitError(f"the document has {len(data):,} bytes, more than the limit of {limits.max_bytes:,}")


_CONTAINERS = (dict, list, tuple, set, frozenset)  # what a safe YAML loader builds (tuples: !!omap, sets: !!set)


def _weight(value: Any) -> int:
    return 1 + (len(value) if isinstance(value, (str, bytes)) else 0)


def check_bounds(doc: Any, limits: DocumentLimits) -> None:
    """Refuse a parsed document deeper than `max_depth`, larger than `max_expanded_size` with every shared value
    (a YAML alias) counted where it is used, or holding itself. Each distinct container is visited once, so
    the cost is that of the parsed objects, not of their expansion."""
    done: dict[int, tuple[int, int]] = {}  # id of a container -> (expanded size, height)
    started: set[int] = set()
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:  # depth-first, post-order, over distinct containers
        node, closing = stack.pop()
        if not isinstance(node, _CONTAINERS):
            continue
        key = id(node)
        children = [v for kv in node.items() for v in kv] if isinstance(node, dict) else list(node)
        if closing:
            size, height = 1, 0
            for child in children:
                child_size, child_height = done.get(id(child), (_weight(child), 0)) \
                    if isinstance(child, _CONTAINERS) else (_weight(child), 0)
                size += child_size
                height = max(height, child_height)
            height += 1
            if size > limits.max_expanded_size:
                raise DocumentLimitError(f"the document expands to more than {limits.max_expanded_size:,} values "
                                         f"(YAML aliases counted where they are used)")
            if height > limits.max_depth:
                raise DocumentLimitError(f"the document nests deeper than {limits.max_depth} levels")
            done[key] = (size, height)
            continue
        if key in done:
            continue
        if key in started:
            raise DocumentLimitError("the document refers to itself (a recursive YAML alias)")
        started.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children
                     if isinstance(child, _CONTAINERS) and id(child) not in done)
        if len(stack) > limits.max_expanded_size:
            raise DocumentLimitError(f"the document expands to more than {limits.max_expanded_size:,} values")


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

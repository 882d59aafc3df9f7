"""Contracts: the dataset dictionary (every path and key), the JSON-Schema packs, and validation of documents.

Tables are validated against the same schemas by the compiled, vectorised rules of `tables`.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .encoding import DocumentLimits, load_json, load_yaml
from .errors import CONTRACT_INVALID, IDENTITY_INVALID, ArrivalError
from .identity import validate_hex64, validate_scenario_id, validate_seed

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONTRACTS_DIR = PROJECT_ROOT / "contracts"
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"
DICTIONARY_FILE = "dataset_dictionary.layer2.5B.yaml"

_TOKEN_RE = re.compile(r"\{([a-z_]+)\}")
_STATE_RE = re.compile(r"^(S0|S1|S2|S3|AUDIT)$")
_RUN_ID_RE = re.compile(r"^[0-9a-zA-Z][0-9a-zA-Z_-]{0,63}$")
_CODE_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_DATASET_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}(5A|5B|3B)?$")


def _validate_token(name: str, value: object) -> str:
    """Validate one path token by its identity rule; anything else is IDENTITY_INVALID (no path is built)."""
    if name == "seed":
        return str(validate_seed(value))
    if name == "scenario_id":
        return validate_scenario_id(value)
    if name in ("parameter_hash", "manifest_fingerprint", "basis"):
        return validate_hex64(value, name)
    if name == "state" and isinstance(value, str) and _STATE_RE.fullmatch(value):
        return value
    if name == "run_id" and isinstance(value, str) and _RUN_ID_RE.fullmatch(value):
        return value
    if name == "checked" and isinstance(value, str) and _DATASET_ID_RE.fullmatch(value):
        return value
    if name == "code_version" and isinstance(value, str) and _CODE_VERSION_RE.fullmatch(value):
        return value
    raise ArrivalError(IDENTITY_INVALID, f"path token {name}={value!r} is not valid", field=name, value=repr(value))


@dataclass(frozen=True)
class DatasetEntry:
    """One dictionary entry: where a dataset lives, its schema, keys and sealing attributes."""

    id: str
    owner_segment: str
    kind: str
    root: str
    format: str
    schema_ref: str
    path: str
    partition_keys: tuple[str, ...]
    status: str
    raw: Mapping[str, Any]

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(self.raw.get("primary_key") or ())

    @property
    def writer_sort(self) -> tuple[str, ...]:
        return tuple(self.raw.get("writer_sort") or ())

    @property
    def read_scope(self) -> str | None:
        return self.raw.get("read_scope")

    @property
    def sealed(self) -> bool:
        return bool(self.raw.get("sealed", False))

    @property
    def seed_scoped(self) -> bool:
        return bool(self.raw.get("seed_scoped", False))

    @property
    def state(self) -> str | None:
        """The state that publishes this output (S0…S3, AUDIT); None for an input."""
        return self.raw.get("state")

    @property
    def companion_of(self) -> str | None:
        """The output this one is published beside and reported with (an RNG trace beside its events)."""
        return self.raw.get("companion_of")

    @property
    def optional(self) -> bool:
        """Whether the dataset may be absent (an input not supplied, an output a policy switched off)."""
        return self.status == "OPTIONAL"

    def tokens_needed(self) -> tuple[str, ...]:
        """Return the tokens the path template uses, in order of appearance."""
        return tuple(_TOKEN_RE.findall(self.path))


@functools.lru_cache(maxsize=8)
def _load_dictionary(contracts_dir: Path) -> dict[str, DatasetEntry]:
    path = contracts_dir / DICTIONARY_FILE
    try:
        doc = load_yaml(path.read_text())
        entries = {}
        for raw in doc["datasets"]:
            entries[raw["id"]] = DatasetEntry(
                id=raw["id"],
                owner_segment=str(raw["owner_segment"]),
                kind=raw["kind"],
                root=raw["root"],
                format=raw["format"],
                schema_ref=raw["schema_ref"],
                path=raw["path"],
                partition_keys=tuple(raw.get("partition_keys") or ()),
                status=raw["status"],
                raw=raw,
            )
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ArrivalError(CONTRACT_INVALID, f"dataset dictionary {path} cannot be read: {exc}", file=str(path))
    return entries


def load_dictionary(contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict[str, DatasetEntry]:
    """Return the dataset dictionary as {dataset id: entry} (cached per contracts dir)."""
    return _load_dictionary(Path(contracts_dir).resolve())


def outputs_of(state: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> tuple[str, ...]:
    """The outputs a state publishes as its own (companions excluded), in dictionary order."""
    return tuple(e.id for e in load_dictionary(contracts_dir).values() if e.state == state and e.companion_of is None)


def companions(dataset_id: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> tuple[str, ...]:
    """The outputs published beside `dataset_id` (its RNG trace), in dictionary order."""
    return tuple(e.id for e in load_dictionary(contracts_dir).values() if e.companion_of == dataset_id)


def dataset(dataset_id: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> DatasetEntry:
    """Return one dictionary entry, or CONTRACT_INVALID naming the unknown id."""
    entries = load_dictionary(contracts_dir)
    if dataset_id not in entries:
        raise ArrivalError(CONTRACT_INVALID, f"dataset {dataset_id!r} is not in {DICTIONARY_FILE}", dataset=dataset_id)
    return entries[dataset_id]


def resolve_path(
    entry: DatasetEntry,
    roots: Mapping[str, Path],
    tokens: Mapping[str, object],
) -> Path:
    """Fill the entry's path template from validated tokens under its root; refuse a path that leaves the root."""
    values = {name: _validate_token(name, tokens.get(name)) for name in entry.tokens_needed()}
    relative = entry.path.format(**values)
    root = Path(roots[entry.root]).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ArrivalError(
            IDENTITY_INVALID, f"{entry.id} resolves to {path}, outside its root {root}", dataset=entry.id
        )
    return path


# ---- schema packs ----------------------------------------------------------------------------------------

SCHEMA_PACK_GLOB = "schemas.*.yaml"


@functools.lru_cache(maxsize=8)
def _load_packs(contracts_dir: Path) -> dict[str, dict]:
    packs = {}
    for path in sorted(contracts_dir.glob(SCHEMA_PACK_GLOB)):
        try:
            doc = load_yaml(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ArrivalError(CONTRACT_INVALID, f"schema pack {path} cannot be read: {exc}",
                               file=str(path))
        if not isinstance(doc, dict):
            raise ArrivalError(CONTRACT_INVALID, f"schema pack {path} is not a mapping", file=str(path))
        packs[path.name] = doc
    return packs


def schema_packs(contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict[str, dict]:
    """Return every schema pack as {file name: parsed YAML}; the file name is the pack's URI in `$ref`s."""
    return _load_packs(Path(contracts_dir).resolve())


@functools.lru_cache(maxsize=8)
def _registry(contracts_dir: Path) -> Registry:
    resources = [
        (name, Resource.from_contents(doc, default_specification=DRAFT202012))
        for name, doc in _load_packs(contracts_dir).items()
    ]
    return Registry().with_resources(resources)


def schema_registry(contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> Registry:
    """Return the `referencing` registry of all packs, so `schemas.layer1.yaml#/$defs/hex64` resolves."""
    return _registry(Path(contracts_dir).resolve())


def resolve_schema(contracts_dir: Path, schema_ref: str) -> Any:
    """Return the `referencing` resolution of a `pack#/pointer` reference, or CONTRACT_INVALID naming it."""
    pack = schema_ref.partition("#")[0]
    try:
        return _registry(contracts_dir).resolver(base_uri=pack).lookup(schema_ref)
    except referencing.exceptions.Unresolvable as exc:
        raise ArrivalError(CONTRACT_INVALID, f"schema_ref {schema_ref!r} does not resolve: {exc}",
                           schema_ref=schema_ref)


def load_schema(schema_ref: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict:
    """Return the sub-schema a reference such as `schemas.5B.yaml#/model/s1_time_grid_5B` points at."""
    return resolve_schema(Path(contracts_dir).resolve(), schema_ref).contents


_PASSED: dict[tuple[Path, str, str], None] = {}  # documents known to satisfy a schema, by (contracts, schema, repr)
_PASSED_KEPT = 512


@functools.lru_cache(maxsize=256)
def _validator(contracts_dir: Path, schema_ref: str) -> jsonschema.Draft202012Validator:
    resolve_schema(contracts_dir, schema_ref)  # fail early, naming the reference
    return jsonschema.Draft202012Validator({"$ref": schema_ref}, registry=_registry(contracts_dir))


def validate_document(
    doc: Any, schema_ref: str, *, code: str, where: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR
) -> None:
    """Validate a JSON/YAML document against its schema; raise `code` naming the file, JSON path, reason.

    A document that passed is remembered by its `repr` (exact for the plain values YAML and JSON give: 1, 1.0,
    True and "1" all differ), so the gate's receipt and policies, re-read by every check step of a run, are
    validated once per process; a failing document is validated, and reported, every time."""
    contracts_dir = Path(contracts_dir).resolve()
    key = (contracts_dir, schema_ref, repr(doc))
    if key in _PASSED:
        return
    validator = _validator(contracts_dir, schema_ref)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise ArrivalError(
            code,
            f"{where}: {error.json_path}: {error.message}",
            file=where,
            json_path=error.json_path,
            schema_ref=schema_ref,
        )
    if len(_PASSED) >= _PASSED_KEPT:
        _PASSED.clear()
    _PASSED[key] = None


RUNTIME_CONFIG = "runtime"  # config/runtime.yaml: tunable numbers, read from the project's own config folder


def read_config_file(config_dir: Path, name: str, contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> dict[str, Any]:
    """A configuration file that is not a sealed policy (`<config_dir>/<name>.yaml`), validated by its schema
    `schemas.5B.yaml#/config/<name>`; CONTRACT_INVALID naming the file otherwise."""
    path = Path(config_dir) / f"{name}.yaml"
    try:
        doc = load_yaml(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise ArrivalError(CONTRACT_INVALID, f"{path} cannot be read: {exc}", file=str(path)) from exc
    validate_document(doc, f"schemas.5B.yaml#/config/{name}", code=CONTRACT_INVALID, where=str(path),
                      contracts_dir=contracts_dir)
    return doc


@functools.cache
def runtime_settings() -> dict[str, Any]:
    """config/runtime.yaml (how work is cut, paced and kept in memory), validated once per process."""
    return read_config_file(DEFAULT_CONFIG_DIR, RUNTIME_CONFIG)


def document_limits() -> DocumentLimits:
    """The limits every document from outside the project is parsed with (config/runtime.yaml `documents`)."""
    return DocumentLimits(**runtime_settings()["documents"])


def parse_json(data: str | bytes) -> Any:
    """A JSON document from a run root or a user's folder, parsed within `document_limits` (DocumentLimitError,
    a ValueError, past them)."""
    return load_json(data, document_limits())


def parse_yaml(data: str | bytes) -> Any:
    """A YAML document from a run root or a user's folder (a policy), parsed within `document_limits`
    (DocumentLimitError, a yaml.YAMLError, past them): an alias bomb is refused before anything expands it."""
    return load_yaml(data, document_limits())

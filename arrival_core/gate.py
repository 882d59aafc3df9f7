"""S0 gate: HashGate judgement, policy and manifest checks, sealed-input rows, their digest and the receipt.

Pure functions over what `pipeline` read; the `Gate` value is what every later state receives after the
receipt and the sealed-inputs digest have been re-validated.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from . import contracts, tables
from .contracts import DatasetEntry
from .encoding import canonical_json, sha256_hex
from .errors import CONTRACT_INVALID, IDENTITY_INVALID, ArrivalError, error_code
from .identity import Identity, compute_parameter_hash
from .store import Store

SEGMENT = "5B"
SPEC_VERSION = "5B-1.0"
UPSTREAM_SEGMENTS = ("1A", "1B", "2A", "2B", "3A", "3B", "5A")
SEALED_KINDS = ("bundle", "input", "policy")
REGISTRY_SCHEMA = "schemas.5B.yaml#/registry/artefact_registry_5B"
SEALED_INPUTS_SCHEMA = "schemas.5B.yaml#/model/sealed_inputs_5B"
RECEIPT_SCHEMA = "schemas.5B.yaml#/model/s0_gate_receipt_5B"


def sealed_entries(contracts_dir: Path = contracts.DEFAULT_CONTRACTS_DIR) -> tuple[DatasetEntry, ...]:
    """The dictionary entries S0 seals (bundles, inputs, policies marked `sealed: true`), in dictionary order."""
    return tuple(
        e for e in contracts.load_dictionary(contracts_dir).values() if e.kind in SEALED_KINDS and e.sealed
    )


def policy_entries(contracts_dir: Path = contracts.DEFAULT_CONTRACTS_DIR) -> tuple[DatasetEntry, ...]:
    """The six policy entries; their dataset id is the policy_id."""
    return tuple(e for e in sealed_entries(contracts_dir) if e.kind == "policy")


# ---- upstream HashGates (DESIGN §3.1) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentGate:
    """The verdict on one upstream segment's HashGate bundle."""

    segment: str
    status: str  # PASS | FAIL | MISSING
    bundle_digest_sha256: str | None
    reason: str | None = None


class BundleNotPass(Exception):
    """Raised inside bundle verification; the pipeline turns it into a FAIL or MISSING verdict."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class BundleMember:
    """One entry of a bundle index."""

    path: str
    sha256_hex: str


def parse_bundle_index(
    entry: DatasetEntry, raw: bytes, manifest_fingerprint: str, *, where: str, contracts_dir: Path
) -> tuple[BundleMember, ...]:
    """Validate a bundle index (shape, segment, fingerprint, sorted paths) and return its members in order."""
    try:
        index = contracts.parse_json(raw)
        contracts.validate_document(index, entry.schema_ref, code=error_code("S0", "UPSTREAM_NOT_PASS"), where=where,
                                    contracts_dir=contracts_dir)
    except ValueError as exc:
        raise BundleNotPass("FAIL", f"index {where} is not JSON: {exc}")
    except ArrivalError as err:
        raise BundleNotPass("FAIL", f"index {err.message}")
    if index["segment"] != entry.owner_segment:
        raise BundleNotPass("FAIL", f"index {where} names segment {index['segment']}, not {entry.owner_segment}")
    if index["manifest_fingerprint"] != manifest_fingerprint:
        raise BundleNotPass("FAIL", f"index {where} names manifest_fingerprint {index['manifest_fingerprint']}")
    paths = [e["path"] for e in index["entries"]]
    if paths != sorted(paths) or len(set(paths)) != len(paths):
        raise BundleNotPass("FAIL", f"index {where} entries are not sorted by unique path")
    return tuple(BundleMember(e["path"], e["sha256_hex"]) for e in index["entries"])


def check_members(members: Sequence[BundleMember], observed: Mapping[str, str | None], *, folder: str) -> None:
    """Every member must exist with the sha256 its index records."""
    for member in members:
        digest = observed.get(member.path)
        if digest is None:
            raise BundleNotPass("FAIL", f"member {member.path} is missing from {folder}")
        if digest != member.sha256_hex:
            raise BundleNotPass(
                "FAIL", f"member {member.path} has sha256 {digest}, the index records {member.sha256_hex}"
            )


def parse_flag(entry: DatasetEntry, raw: bytes, *, where: str, contracts_dir: Path) -> str:
    """Return the digest a `_passed.flag` claims (layer-1 text line or 5A JSON), validated against its schema."""
    schema_ref = entry.raw["flag_schema_ref"]
    try:
        text = raw.decode("utf-8")
        doc = contracts.parse_json(text) if contracts.load_schema(schema_ref, contracts_dir).get("type") == "object" else text
        contracts.validate_document(doc, schema_ref, code=error_code("S0", "UPSTREAM_NOT_PASS"), where=where,
                                    contracts_dir=contracts_dir)
    except ValueError as exc:
        raise BundleNotPass("FAIL", f"flag {where} cannot be read: {exc}")
    except ArrivalError as err:
        raise BundleNotPass("FAIL", f"flag {err.message}")
    if isinstance(doc, dict):
        return doc["bundle_digest_sha256"]
    return doc.strip().removeprefix("sha256_hex = ")


def check_flag(flag_digest: str, bundle_digest: str, *, where: str) -> None:
    """The flag must equal the recomputed bundle digest."""
    if flag_digest != bundle_digest:
        raise BundleNotPass("FAIL", f"flag {where} records {flag_digest}, the members hash to {bundle_digest}")


def require_all_pass(gates: Sequence[SegmentGate]) -> None:
    """Raise UPSTREAM_NOT_PASS naming every segment that is not PASS and why."""
    failing = [g for g in gates if g.status != "PASS"]
    if failing:
        raise ArrivalError(
            error_code("S0", "UPSTREAM_NOT_PASS"),
            "upstream segment(s) not PASS: " + "; ".join(f"{g.segment} {g.status}: {g.reason}" for g in failing),
            segments={g.segment: {"status": g.status, "reason": g.reason} for g in failing},
            segment=",".join(g.segment for g in failing),
        )


# ---- run receipt, policies and the scenario manifest ----------------------------------------------------------------

def parse_run_receipt(raw: bytes, *, where: str, code: str, contracts_dir: Path) -> dict:
    """Parse and validate run_receipt.json; `code` is RUN_RECEIPT_INVALID in S0 and S0_GATE_INVALID later."""
    try:
        doc = contracts.parse_json(raw)
    except ValueError as exc:
        raise ArrivalError(code, f"{where} is not JSON within the document limits: {exc}", file=where)
    contracts.validate_document(doc, "schemas.layer1.yaml#/$defs/run_receipt", code=code, where=where,
                                contracts_dir=contracts_dir)
    return doc


def check_scenario_manifest(manifest: pl.DataFrame, *, where: str, contracts_dir: Path) -> list[str]:
    """Validate the manifest in full (non-empty, unique valid ids, one band per scenario); return the sorted ids."""
    code = error_code("S0", "SCENARIO_MANIFEST_INVALID")
    if manifest.height == 0:
        raise ArrivalError(code, f"{where}: the scenario manifest has no rows", file=where)
    tables.validate_table(manifest, "schemas.5A.yaml#/model/scenario_manifest_5A", code=code, where=where,
                             primary_key=("scenario_id",), contracts_dir=contracts_dir)
    bad = manifest.filter(pl.col("is_baseline") == pl.col("is_stress"))
    if bad.height:
        sid = bad["scenario_id"].sort()[0]
        raise ArrivalError(
            code, f"{where}: scenario {sid} must be exactly one of is_baseline / is_stress",
            file=where, column="is_baseline", key={"scenario_id": sid},
        )
    return manifest["scenario_id"].sort().to_list()


# ---- sealed inputs (DESIGN §5) ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observed:
    """What S0 found for one artefact: its content digest (when complete), how many files exist, which are missing."""

    digest: str | None
    present: int = 1
    missing: tuple[str, ...] = ()


def scenario_surface_digest(file_digests: Sequence[tuple[str, str]]) -> str:
    """sha256 over the per-scenario file digests (hex text) in scenario_id order."""
    return sha256_hex("".join(d for _, d in sorted(file_digests)).encode("ascii"))


def structural_digest(entry: DatasetEntry) -> str:
    """sha256 of the canonical JSON of (artifact_id, schema_ref, path_template, partition_keys): seed-invariant."""
    return sha256_hex(canonical_json({
        "artifact_id": entry.id, "schema_ref": entry.schema_ref, "path_template": entry.path,
        "partition_keys": list(entry.partition_keys),
    }))


def check_registry(registry: Mapping, entries: Sequence[DatasetEntry], *, where: str, contracts_dir: Path) -> dict:
    """Validate the artefact registry and that it lists exactly the sealed dictionary entries; index it by id."""
    contracts.validate_document(registry, REGISTRY_SCHEMA, code=CONTRACT_INVALID, where=where,
                                contracts_dir=contracts_dir)
    by_id = {a["artifact_id"]: a for a in registry["artefacts"]}
    sealed = {e.id for e in entries}
    if set(by_id) != sealed or len(by_id) != len(registry["artefacts"]):
        raise ArrivalError(
            CONTRACT_INVALID,
            f"{where} and the dataset dictionary disagree on the sealed artefacts: only in the registry "
            f"{sorted(set(by_id) - sealed)}, only in the dictionary {sorted(sealed - set(by_id))}",
            file=where,
        )
    return by_id


def seal_inputs(
    entries: Sequence[DatasetEntry], registry: Mapping[str, Mapping], observed: Mapping[str, Observed]
) -> tuple[list[dict], list[str]]:
    """Build the sealed_inputs_5B rows sorted by (owner_segment, artifact_id) and the list of optional absentees."""
    rows, optional_missing = [], []
    for entry in entries:
        if entry.seed_scoped:
            digest, kind = structural_digest(entry), "structural"
        else:
            seen = observed[entry.id]
            if seen.missing and (entry.status == "REQUIRED" or seen.present):
                raise ArrivalError(
                    error_code("S0", "SEALED_INPUTS_INCOMPLETE"),
                    f"{entry.status.lower()} artefact {entry.id} is incomplete: missing {', '.join(seen.missing)}",
                    artifact_id=entry.id, missing=list(seen.missing),
                )
            if seen.missing:  # an optional artefact with none of its files: absent, not incomplete
                optional_missing.append(entry.id)
                continue
            digest, kind = seen.digest, "content"
        reg = registry[entry.id]
        rows.append({
            "owner_segment": entry.owner_segment,
            "artifact_id": entry.id,
            "manifest_key": reg["manifest_key"],
            "role": reg["role"],
            "status": entry.status,
            "read_scope": entry.read_scope,
            "schema_ref": entry.schema_ref,
            "path_template": entry.path,
            "partition_keys": list(entry.partition_keys),
            "digest_kind": kind,
            "sha256_hex": digest,
            "notes": reg["notes"],
        })
    rows.sort(key=lambda r: (r["owner_segment"], r["artifact_id"]))
    return rows, sorted(optional_missing)


def sealed_inputs_digest(rows: Sequence[Mapping]) -> str:
    """sha256 of the canonical JSON of the rows sorted by (owner_segment, artifact_id)."""
    return sha256_hex(canonical_json(sorted(rows, key=lambda r: (r["owner_segment"], r["artifact_id"]))))


def build_receipt(
    *,
    identity: Identity,
    upstream_parameter_hash: str,
    scenario_set: Sequence[str],
    gates: Sequence[SegmentGate],
    rows: Sequence[Mapping],
    optional_missing: Sequence[str],
) -> dict:
    """The S0 gate receipt (no wall-clock values)."""
    return {
        "segment": SEGMENT,
        "spec_version": SPEC_VERSION,
        "manifest_fingerprint": identity.manifest_fingerprint,
        "parameter_hash": identity.parameter_hash,
        "upstream_parameter_hash": upstream_parameter_hash,
        "scenario_set": sorted(scenario_set),
        "upstream_segments": {g.segment: {"status": g.status, "bundle_digest_sha256": g.bundle_digest_sha256}
                              for g in gates},
        "sealed_inputs_digest": sealed_inputs_digest(rows),
        "sealed_inputs_row_count": len(rows),
        "optional_missing": list(optional_missing),
    }


# ---- the gate every later state opens ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gate:
    """A re-validated S0 gate: the receipt, the sealed rows by artifact_id and the parsed policies.

    It hands out only artefacts S0 sealed, and row-level access only to ROW_LEVEL ones.
    """

    state: str
    identity: Identity
    receipt: Mapping
    rows: Mapping[str, Mapping]
    policies: Mapping[str, Mapping]
    store: Store

    @property
    def scenario_set(self) -> list[str]:
        return list(self.receipt["scenario_set"])

    def sealed(self, artifact_id: str, *, code: str | None = None) -> Mapping:
        """The sealed row of an artefact; an artefact S0 did not seal is refused."""
        row = self.rows.get(artifact_id)
        if row is None:
            raise ArrivalError(
                code or error_code(self.state, "S0_GATE_INVALID"),
                f"{artifact_id} is not in sealed_inputs_5B for parameter_hash={self.identity.parameter_hash} "
                f"fingerprint={self.identity.manifest_fingerprint}; a state reads only sealed artefacts",
                artifact_id=artifact_id,
            )
        return row

    def metadata_path(self, artifact_id: str, *, code: str | None = None, **tokens: object) -> Path:
        """Where a sealed artefact lives (existence and digests only), tokens defaulting to the identity's."""
        self.sealed(artifact_id, code=code)
        return self.store.path(artifact_id, **{**self.identity.tokens(), **tokens})

    def path(self, artifact_id: str, *, code: str | None = None, **tokens: object) -> Path:
        """Where a sealed ROW_LEVEL artefact lives; METADATA_ONLY artefacts are refused for row reads."""
        row = self.sealed(artifact_id, code=code)
        if row["read_scope"] != "ROW_LEVEL":
            raise ArrivalError(
                code or error_code(self.state, "S0_GATE_INVALID"),
                f"{artifact_id} is sealed {row['read_scope']}; its rows may not be read",
                artifact_id=artifact_id, read_scope=row["read_scope"],
            )
        return self.metadata_path(artifact_id, code=code, **tokens)

    def policy(self, policy_id: str) -> Mapping:
        """The parsed, schema-valid policy document (sealed ROW_LEVEL)."""
        self.path(policy_id)
        return self.policies[policy_id]


def check_gate(
    receipt: Mapping,
    rows: Sequence[Mapping],
    identity: Identity,
    *,
    state: str,
    policy_ids: Sequence[str],
    receipt_where: str,
    rows_where: str,
) -> dict[str, Mapping]:
    """Check a schema-valid receipt and sealed rows against the partition; return the rows by artifact_id.

    Identity tokens must match, the digest and row count must recompute, the sealed policy digests must give
    the partition's parameter_hash, every upstream segment must be PASS, and the scenario must be in the set.
    """
    code = error_code(state, "S0_GATE_INVALID")

    def invalid(why: str, where: str = receipt_where, **context: object) -> ArrivalError:
        return ArrivalError(code, f"{where}: {why}", file=where, **context)

    tokens = identity.tokens()
    for name in ("parameter_hash", "manifest_fingerprint"):
        if receipt[name] != tokens[name]:
            raise invalid(f"{name} {receipt[name]} differs from the partition's {tokens[name]}", column=name)
    by_id = {r["artifact_id"]: r for r in rows}
    if len(by_id) != len(rows):
        raise invalid("an artifact_id repeats", rows_where, column="artifact_id")
    digest = sealed_inputs_digest(rows)
    if digest != receipt["sealed_inputs_digest"] or len(rows) != receipt["sealed_inputs_row_count"]:
        raise invalid(
            f"sealed_inputs_digest {receipt['sealed_inputs_digest']} ({receipt['sealed_inputs_row_count']} rows) does "
            f"not match {rows_where}, which hashes to {digest} ({len(rows)} rows)", column="sealed_inputs_digest",
        )
    unsealed = [pid for pid in policy_ids if pid not in by_id]
    if unsealed:
        raise invalid(f"policies {unsealed} are not sealed", rows_where, column="artifact_id")
    recomputed = compute_parameter_hash(
        receipt["upstream_parameter_hash"], [(pid, by_id[pid]["sha256_hex"]) for pid in policy_ids]
    )
    if recomputed != identity.parameter_hash:
        raise invalid(f"the sealed policy digests give parameter_hash {recomputed}", column="parameter_hash")
    failing = sorted(s for s, v in receipt["upstream_segments"].items() if v["status"] != "PASS")
    if failing:
        raise ArrivalError(error_code(state, "UPSTREAM_NOT_PASS"),
                           f"{receipt_where}: upstream segment(s) {failing} are not PASS",
                           file=receipt_where, segment=",".join(failing))
    if identity.scenario_id not in receipt["scenario_set"]:
        raise scenario_not_in_set(identity.scenario_id, receipt["scenario_set"])
    return by_id


def scenario_not_in_set(scenario_id: str, scenario_set: Sequence[str]) -> ArrivalError:
    """The partition names a scenario the world's manifest does not have."""
    return ArrivalError(
        IDENTITY_INVALID,
        f"scenario_id {scenario_id!r} is not in the world's scenario manifest {list(scenario_set)}",
        field="scenario_id", value=scenario_id,
    )

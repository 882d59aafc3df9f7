"""Sealed-input assets: one per input, bundle and policy of the dataset dictionary, verified per partition."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from arrival_core import contracts, gate, pipeline
from arrival_core.contracts import DatasetEntry
from arrival_core.encoding import sha256_file
from arrival_core.errors import ArrivalError
from arrival_core.store import Store

from ..partitions import grid
from ..resources import StoreResource, manifest_fingerprint
from .outcomes import call_core, markdown_table, partition_of

GROUP = "sealed_inputs"


@dataclass(frozen=True)
class VerifiedInput:
    """What verifying one sealed artefact for a partition found."""

    path: Path
    present: bool
    sha256: str | None
    rows: int | None


def _verify_bundle(store: Store, entry: DatasetEntry, manifest_fingerprint: str) -> str:
    """Judge a HashGate bundle as S0 does and return its digest; anything but PASS is UPSTREAM_NOT_PASS."""
    verdict = pipeline.verify_bundle(store, entry, manifest_fingerprint)
    gate.require_all_pass([verdict])
    assert verdict.bundle_digest_sha256 is not None
    return verdict.bundle_digest_sha256


def _verify_table(store: Store, entry: DatasetEntry, path: Path) -> int:
    """Check a parquet input's columns and dtypes against its contract (footer only); return its row count."""
    expected = contracts.polars_schema(entry.schema_ref, store.contracts_dir)
    try:
        found = dict(pl.read_parquet_schema(path))
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several unrelated types for a corrupt file
        raise ArrivalError(
            "5B.S0.INPUT_SCHEMA_INVALID", f"{path} is not a readable parquet file: {exc}", file=str(path)
        ) from exc
    wrong = {c: (str(found.get(c)), str(t)) for c, t in expected.items() if found.get(c) != t}
    extra = sorted(set(found) - set(expected))
    if wrong or extra:
        raise ArrivalError(
            "5B.S0.INPUT_SCHEMA_INVALID",
            f"{path}: columns differ from {entry.schema_ref}: "
            + "; ".join(f"{c} is {got}, expected {want}" for c, (got, want) in sorted(wrong.items()))
            + (f"; unexpected columns {extra}" if extra else ""),
            file=str(path),
            column=(sorted(wrong) or extra)[0],
        )
    return int(rows)


def _verify_policy(store: Store, entry: DatasetEntry, path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ArrivalError("5B.S0.POLICY_INVALID", f"{path} is not YAML: {exc}", file=str(path)) from exc
    contracts.validate_document(
        doc, entry.schema_ref, code="5B.S0.POLICY_INVALID", where=str(path), contracts_dir=store.contracts_dir
    )


def verify_sealed_input(store: Store, entry: DatasetEntry, *, seed: int, scenario_id: str) -> VerifiedInput:
    """Resolve one sealed artefact for a partition and verify it exists, fits its schema, and digest it."""
    tokens = {"manifest_fingerprint": manifest_fingerprint(store), "seed": seed, "scenario_id": scenario_id}
    path = store.path(entry.id, **{k: tokens[k] for k in entry.tokens_needed()})
    if not path.exists():
        if entry.status == "OPTIONAL":
            return VerifiedInput(path, False, None, None)
        code = "5B.S0.UPSTREAM_NOT_PASS" if entry.kind == "bundle" else "5B.S0.SEALED_INPUTS_INCOMPLETE"
        raise ArrivalError(
            code, f"required {entry.kind} {entry.id} is missing at {path}", dataset=entry.id, file=str(path)
        )
    if entry.kind == "bundle":
        return VerifiedInput(path, True, _verify_bundle(store, entry, tokens["manifest_fingerprint"]), None)
    if entry.kind == "policy":
        _verify_policy(store, entry, path)
        return VerifiedInput(path, True, sha256_file(path), None)
    rows = _verify_table(store, entry, path)
    return VerifiedInput(path, True, sha256_file(path), rows)


def build_sealed_input_asset(entry: DatasetEntry) -> dg.AssetsDefinition:
    """Build the asset of one sealed artefact: materialising it verifies the artefact for the partition."""

    @dg.asset(
        name=entry.id,
        group_name=GROUP,
        partitions_def=grid,
        description=f"Sealed {entry.kind} of {entry.owner_segment} ({entry.status.lower()}): {entry.path}",
        kinds={entry.format if entry.format != "hashgate_bundle" else "hashgate"},
        metadata={
            "schema_ref": entry.schema_ref,
            "path_template": entry.path,
            "read_scope": entry.read_scope or "",
        },
    )
    def _sealed(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
        part = partition_of(context)
        st = call_core(context, store.open, part.seed if entry.seed_scoped else None)
        found = call_core(
            context, verify_sealed_input, st, entry, seed=part.seed, scenario_id=part.scenario_id
        )
        summary = [
            ("artefact", entry.id),
            ("present", found.present),
            ("sha256", found.sha256 or "—"),
            ("rows", found.rows if found.rows is not None else "—"),
            ("path", found.path),
        ]
        metadata: dict[str, object] = {
            "path": dg.MetadataValue.path(str(found.path)),
            "present": found.present,
            "digest": found.sha256 or "",
            "summary": dg.MetadataValue.md(markdown_table(summary)),
        }
        if found.rows is not None:
            metadata["rows"] = dg.MetadataValue.int(found.rows)
        version = found.sha256 or "absent"
        return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata)

    return _sealed


def build_sealed_input_assets() -> list[dg.AssetsDefinition]:
    """One asset per sealed artefact of the dataset dictionary."""
    return [build_sealed_input_asset(e) for e in gate.sealed_entries()]

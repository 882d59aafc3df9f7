"""Sealed-input assets: one per input, bundle and policy of the dataset dictionary, verified per partition."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from arrival_core import gate, pipeline, table_schema
from arrival_core.contracts import DatasetEntry
from arrival_core.encoding import sha256_file
from arrival_core.errors import ArrivalError, error_code
from arrival_core.reports import markdown_table
from arrival_core.store import Store
from arrival_core.version import code_version

from ..partitions import grid
from ..resources import StoreResource
from .columns import column_schema
from .outcomes import call_core, failure_from, partition_of, table_metadata

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
    expected = table_schema.polars_schema(entry.schema_ref, store.contracts_dir)
    try:
        found = dict(pl.read_parquet_schema(path))
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several unrelated types for a corrupt file
        raise ArrivalError(
            error_code("S0", "INPUT_SCHEMA_INVALID"), f"{path} is not a readable parquet file: {exc}", file=str(path)
        ) from exc
    wrong = {c: (str(found.get(c)), str(t)) for c, t in expected.items() if found.get(c) != t}
    extra = sorted(set(found) - set(expected))
    if wrong or extra:
        raise ArrivalError(
            error_code("S0", "INPUT_SCHEMA_INVALID"),
            f"{path}: columns differ from {entry.schema_ref}: "
            + "; ".join(f"{c} is {got}, expected {want}" for c, (got, want) in sorted(wrong.items()))
            + (f"; unexpected columns {extra}" if extra else ""),
            file=str(path),
            column=(sorted(wrong) or extra)[0],
        )
    return int(rows)


def _verify_policy(store: Store, entry: DatasetEntry, path: Path) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArrivalError(error_code("S0", "POLICY_INVALID"), f"{path} cannot be read: {exc}", file=str(path)) from exc
    pipeline.parse_policy(data, entry, path, code=error_code("S0", "POLICY_INVALID"), store=store)


def verify_sealed_input(store: Store, entry: DatasetEntry, *, seed: int, scenario_id: str) -> VerifiedInput:
    """Resolve one sealed artefact for a partition and verify it exists, fits its schema, and digest it."""
    tokens = {"manifest_fingerprint": pipeline.read_receipt(store)["manifest_fingerprint"], "seed": seed, "scenario_id": scenario_id}
    path = store.path(entry.id, **{k: tokens[k] for k in entry.tokens_needed()})
    if not path.exists():
        if entry.status == "OPTIONAL":
            return VerifiedInput(path, False, None, None)
        code = error_code("S0", "UPSTREAM_NOT_PASS") if entry.kind == "bundle" else error_code("S0", "SEALED_INPUTS_INCOMPLETE")
        raise ArrivalError(
            code, f"required {entry.kind} {entry.id} is missing at {path}", dataset=entry.id, file=str(path)
        )
    if entry.kind == "bundle":
        return VerifiedInput(path, True, _verify_bundle(store, entry, tokens["manifest_fingerprint"]), None)
    if entry.kind == "policy":
        _verify_policy(store, entry, path)
        return VerifiedInput(path, True, sha256_file(path), None)
    rows = _verify_table(store, entry, path)
    if entry.seed_scoped and pipeline.read_receipt(store).get("synthetic") is True:
        from arrival_core import world  # the generator, only for a synthetic world's seed-scoped file

        return VerifiedInput(path, True, world.verify_seed_file(store.run_root, seed), rows)
    return VerifiedInput(path, True, sha256_file(path), rows)


def sealed_input_spec(entry: DatasetEntry) -> dg.AssetSpec:
    """The asset of one sealed artefact."""
    return dg.AssetSpec(
        key=entry.id,
        group_name=GROUP,
        description=f"Sealed {entry.kind} of {entry.owner_segment} ({entry.status.lower()}): {entry.path}",
        kinds={entry.format if entry.format != "hashgate_bundle" else "hashgate"},
        metadata={
            "schema_ref": entry.schema_ref,
            "path_template": entry.path,
            "read_scope": entry.read_scope or "",
            **({"dagster/column_schema": schema} if (schema := column_schema(entry.id)) else {}),
        },
        code_version=code_version(),
    )


ABSENT = "absent"  # the data version and digest of an optional artefact this world does not provide


def absent_description(entry: DatasetEntry, found: VerifiedInput) -> str:
    """What the UI says of an optional artefact the world lacks: sealed as absent, no file behind it."""
    return (f"ABSENT: optional {entry.kind} {entry.id} is not in this world (no file at {found.path}); "
            "S0 seals it as absent and nothing reads it")


def sealed_input_result(entry: DatasetEntry, found: VerifiedInput) -> dg.MaterializeResult:
    """A verified artefact's materialisation; its digest is the data version (`absent`: a missing optional one,
    whose metadata leads with a `status` saying so and carries no path or URI of a file that is not there)."""
    summary = [
        ("artefact", entry.id),
        ("present", found.present),
        ("sha256", found.sha256 or ABSENT),
        ("rows", found.rows if found.rows is not None else "—"),
        ("path", found.path if found.present else f"{found.path} (absent)"),
    ]
    metadata: dict[str, object] = {}
    if found.present:
        metadata["path"] = dg.MetadataValue.path(str(found.path))
        metadata["dagster/uri"] = found.path.as_uri()
    else:
        metadata["status"] = absent_description(entry, found)
    metadata |= {
        "present": found.present,
        "digest": found.sha256 or ABSENT,
        "summary": dg.MetadataValue.md(markdown_table(summary)),
    }
    metadata |= table_metadata(entry.id, found.rows)
    return dg.MaterializeResult(
        asset_key=entry.id, data_version=dg.DataVersion(found.sha256 or ABSENT), metadata=metadata
    )


def absent_observation(entry: DatasetEntry, found: VerifiedInput, partition: str) -> dg.AssetObservation:
    """An observation whose description says the optional artefact is absent (shown in the asset's events)."""
    return dg.AssetObservation(asset_key=entry.id, partition=partition, description=absent_description(entry, found),
                               metadata={"present": False, "expected_path": str(found.path)})


def _combined(errors: list[ArrivalError]) -> ArrivalError:
    """One failure for several artefacts: the first one's code, every artefact's reason in the message."""
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    return ArrivalError(
        first.code,
        f"{len(errors)} sealed inputs failed: " + "; ".join(f"{e.code}: {e.message}" for e in errors),
        **first.context,
        failures=[e.to_dict() for e in errors],
    )


def build_sealed_inputs_asset() -> dg.AssetsDefinition:
    """One asset per sealed artefact of the dataset dictionary, verified together in one step per partition.

    Every artefact that verifies is materialised; the step then fails naming every one that did not.
    """
    entries = gate.sealed_entries()

    @dg.multi_asset(
        name=GROUP,
        specs=[sealed_input_spec(e) for e in entries],
        partitions_def=grid,
        can_subset=True,
        description="Resolve and verify every sealed input of the partition: exists, schema, digest.",
    )
    def _sealed(context: dg.AssetExecutionContext, store: StoreResource) -> Iterator[dg.MaterializeResult]:
        part = partition_of(context)
        chosen = [e for e in entries if dg.AssetKey(e.id) in context.selected_asset_keys]
        seed_file_needed = any(e.seed_scoped for e in chosen)
        st = call_core(context, store.open, part.seed if seed_file_needed else None)
        known = call_core(context, pipeline.world_scenarios, st)
        if part.scenario_id not in known:  # a partition added by hand (the UI's "Add partition"): nothing is sealed
            err = gate.scenario_not_in_set(part.scenario_id, known)
            raise failure_from(context, err) from err
        errors: list[ArrivalError] = []
        for entry in chosen:
            try:
                found = verify_sealed_input(st, entry, seed=part.seed, scenario_id=part.scenario_id)
            except ArrivalError as err:
                errors.append(err)
                continue
            if not found.present:
                yield absent_observation(entry, found, str(context.partition_key))
            yield sealed_input_result(entry, found)
        if errors:
            raise failure_from(context, _combined(errors)) from errors[0]

    return _sealed

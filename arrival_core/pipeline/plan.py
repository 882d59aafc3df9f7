"""S0 (gate and sealed inputs) and S1 (time grid and grouping): load, compute, validate, publish."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import yaml

from .. import bundle_tables, contracts, gate, grid, grouping, table_schema, tables
from ..encoding import jsonable, load_yaml, sha256_file, sha256_hex
from ..errors import CONTRACT_INVALID, ArrivalError, error_code
from ..gate import Gate, SegmentGate
from ..identity import Identity, PartitionKey
from ..rng import ledger
from ..store import Published, Store, read_json, reading
from .shell import (
    DEFAULT_OPTIONS,
    RunOptions,
    StateResult,
    StateRun,
    arrow_schema,
    conform,
    execute_state,
    parse_policy,
    read_sealed_table,
    read_world,
    validate_output,
)

# ---- S0: gate and sealed inputs -------------------------------------------------------------------------------

def _hash_members(folder: Path, paths: Sequence[str]) -> tuple[dict[str, str | None], str]:
    """Stream every member once: its own sha256 (None when missing) and the digest of all bytes in index order."""
    bundle = hashlib.sha256()
    digests: dict[str, str | None] = {}
    root = folder.resolve()
    for rel in paths:
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            digests[rel] = None
            continue
        digests[rel] = sha256_file(path, also=bundle)
    return digests, bundle.hexdigest()


def verify_bundle(store: Store, entry: contracts.DatasetEntry, mf: str) -> SegmentGate:
    """Verify one upstream HashGate bundle (§3.1): index, members, flag; MISSING when index or flag is absent."""
    folder = store.path(entry.id, manifest_fingerprint=mf)
    index_path, flag_path = folder / entry.raw["index_file"], folder / entry.raw["flag_file"]
    cd = store.contracts_dir
    try:
        for path, what in ((index_path, "index"), (flag_path, "flag")):
            if not path.is_file():
                raise gate.BundleNotPass("MISSING", f"{what} {path} is missing")
        members = gate.parse_bundle_index(entry, index_path.read_bytes(), mf, where=str(index_path), contracts_dir=cd)
        digests, bundle_digest = _hash_members(folder, [m.path for m in members])
        gate.check_members(members, digests, folder=str(folder))
        claimed = gate.parse_flag(entry, flag_path.read_bytes(), where=str(flag_path), contracts_dir=cd)
        gate.check_flag(claimed, bundle_digest, where=str(flag_path))
    except gate.BundleNotPass as verdict:
        return SegmentGate(entry.owner_segment, verdict.status, None, verdict.reason)
    return SegmentGate(entry.owner_segment, "PASS", bundle_digest)


def _observe_inputs(store: Store, mf: str, scenario_set: Sequence[str],
                    file_digests: dict[Path, str]) -> dict[str, gate.Observed]:
    """Content digests of the sealed data inputs (scenario-partitioned ones over their per-scenario files); the
    sha256 of every file read is recorded in `file_digests` by resolved path."""
    observed = {}
    for entry in gate.sealed_entries(store.contracts_dir):
        if entry.kind != "input" or entry.seed_scoped:
            continue
        scenarios = scenario_set if "scenario_id" in entry.partition_keys else [None]
        found, missing = [], []
        for sid in scenarios:
            path = store.path(entry.id, manifest_fingerprint=mf, scenario_id=sid)
            if path.is_file():
                file_digests[path.resolve()] = digest = sha256_file(path)
                found.append((sid, digest))
            else:
                missing.append(str(path))
        if missing:
            observed[entry.id] = gate.Observed(None, len(found), tuple(missing))
        elif scenarios == [None]:
            observed[entry.id] = gate.Observed(found[0][1])
        else:
            observed[entry.id] = gate.Observed(gate.scenario_surface_digest(found), len(found))
    return observed


def _check_bundle_tables(store: Store, mf: str, bundles: Sequence[contracts.DatasetEntry],
                         file_digests: dict[Path, str]) -> None:
    """Every sealed table a PASS bundle lists in its `tables.json` must still have the sha256 it records."""
    for entry in bundles:
        listing_path = store.path(entry.id, manifest_fingerprint=mf) / bundle_tables.BUNDLE_TABLES_FILE
        if not listing_path.is_file():
            continue
        with reading("S0", listing_path, "the bundle's table listing"):
            listing = read_json(listing_path)
        observed = {row_path: file_digests.get((store.run_root / row_path).resolve())
                    for row_path in bundle_tables.listed_table_paths(listing, entry.owner_segment, where=str(listing_path))}
        bundle_tables.check_table_digests(listing, observed, segment=entry.owner_segment, where=str(listing_path))


def _read_registry(store: Store) -> dict:
    path = store.contracts_dir / "artefact_registry_5B.yaml"
    try:
        doc = load_yaml(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise ArrivalError(CONTRACT_INVALID, f"artefact registry {path} cannot be read: {exc}", file=str(path))
    return gate.check_registry(doc, gate.sealed_entries(store.contracts_dir), where=str(path),
                               contracts_dir=store.contracts_dir)


def _s0_body(run: StateRun) -> Sequence[Published]:
    store, cd = run.store, run.store.contracts_dir
    with run.timed("load"):
        world = read_world(store, "S0")
        mf = world.manifest_fingerprint
        run.identity = identity = Identity(world.parameter_hash, mf, run.key.seed, run.key.scenario_id)
        bundles = [e for e in gate.sealed_entries(cd) if e.kind == "bundle"]
        gates = [verify_bundle(store, e, mf) for e in bundles]
        run.metrics["upstream_segments"] = {g.segment: g.status for g in gates}
        gate.require_all_pass(gates)
        for entry in gate.policy_entries(cd):
            parse_policy(world.policy_bytes[entry.id], entry, world.policy_paths[entry.id],
                          code=error_code("S0", "POLICY_INVALID"), store=store)
        manifest_path = store.path("scenario_manifest_5A", manifest_fingerprint=mf)
        try:
            manifest = pl.read_parquet(manifest_path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ArrivalError(error_code("S0", "SCENARIO_MANIFEST_INVALID"), f"{manifest_path} cannot be read: {exc}",
                               file=str(manifest_path))
        run.scenario_set = gate.check_scenario_manifest(manifest, where=str(manifest_path), contracts_dir=cd)
        if run.key.scenario_id not in run.scenario_set:
            raise gate.scenario_not_in_set(run.key.scenario_id, run.scenario_set)
        file_digests: dict[Path, str] = {}
        observed = _observe_inputs(store, mf, run.scenario_set, file_digests)
        _check_bundle_tables(store, mf, bundles, file_digests)
        observed |= {e.id: gate.Observed(g.bundle_digest_sha256) for e, g in zip(bundles, gates)}
        observed |= {pid: gate.Observed(sha256_hex(data)) for pid, data in world.policy_bytes.items()}
        registry = _read_registry(store)
    with run.timed("compute"):
        rows, optional_missing = gate.seal_inputs(gate.sealed_entries(cd), registry, observed)
        receipt = gate.build_receipt(identity=identity, upstream_parameter_hash=world.upstream_parameter_hash,
                                     scenario_set=run.scenario_set, gates=gates, rows=rows,
                                     optional_missing=optional_missing)
    sealed_path = store.path("sealed_inputs_5B", **identity.tokens())
    receipt_path = store.path("s0_gate_receipt_5B", **identity.tokens())
    with run.timed("validate"):
        code = error_code("S0", "OUTPUT_SCHEMA_INVALID")
        contracts.validate_document(rows, gate.SEALED_INPUTS_SCHEMA, code=code, where=str(sealed_path), contracts_dir=cd)
        contracts.validate_document(receipt, gate.RECEIPT_SCHEMA, code=code, where=str(receipt_path), contracts_dir=cd)
    run.metrics |= {
        "scenario_count": len(run.scenario_set),
        "sealed_inputs_row_count": len(rows),
        "sealed_inputs_digest": receipt["sealed_inputs_digest"],
        "optional_missing": optional_missing,
    }
    with run.timed("publish"), store.transaction("S0") as tx:
        tx.write_json("sealed_inputs_5B", sealed_path, rows, rows=len(rows))
        tx.write_json("s0_gate_receipt_5B", receipt_path, receipt)
    return tx.published


def run_s0(store: Store, key: PartitionKey, options: RunOptions = DEFAULT_OPTIONS) -> StateResult:
    """S0: verify the upstream HashGates and policies and seal every input (seed-invariant outputs per (ph, mf)).

    S0 always computes (it is what proves the inputs unchanged) from the live policies (it is the state that seals
    a parameter_hash): it ignores `reuse` and `parameter_hash`."""
    return execute_state(store, "S0", key, replace(options, parameter_hash=None, reuse=False), _s0_body)


# ---- S1: time grid and grouping ------------------------------------------------------------------------------

def read_domain(path: Path, *, code: str) -> pl.DataFrame:
    """The distinct entities of a scenario's λ surface, reading only the key columns, one row group at a time
    (memory bounded by a row group and the entities, at any surface size).

    Keeping only rows whose key differs from the previous row first is exact in any row order and, on a
    writer-sorted surface, leaves one row per entity for the final `unique` (3x faster than hashing every row);
    strings stay dictionary codes until then.
    """
    keys = list(grouping.ENTITY_KEYS)
    run_heads = ~pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys])
    with reading("S1", path, "the λ surface's entity keys"):
        schema = pl.read_parquet_schema(path)
        strings = [k for k in keys if schema.get(k) == pl.String]
        source = pq.ParquetFile(path, read_dictionary=strings)
        heads = [pl.from_arrow(source.read_row_group(g, columns=keys)).filter(run_heads)
                 .with_columns(pl.col(strings).cast(pl.String)) for g in range(source.num_row_groups)]
        domain = (pl.concat(heads) if heads else pl.DataFrame(schema={k: schema[k] for k in keys})).unique()
    _check_entity_keys(domain, schema, path)
    return domain


def _check_entity_keys(domain: pl.DataFrame, schema: dict, path: Path) -> None:
    """The λ surface's key columns have their contract dtypes and no nulls, before anything is grouped by them."""
    code = error_code("S1", "INPUT_SCHEMA_INVALID")
    contract = table_schema.polars_schema(contracts.dataset("merchant_zone_scenario_local_5A").schema_ref)
    for column in grouping.ENTITY_KEYS:
        if column not in schema or schema[column] != contract[column]:
            raise ArrivalError(code, f"{path}: key column {column} is {schema.get(column, 'missing')}, the contract "
                                     f"says {contract[column]}", file=str(path), column=column)
        nulls = domain.filter(pl.col(column).is_null())
        if nulls.height:
            key = {k: jsonable(v) for k, v in nulls.row(0, named=True).items()}
            raise ArrivalError(code, f"{path}: key column {column} is null for an entity ({key}); every λ row needs "
                                     f"a complete (merchant_id, legal_country_iso, tzid, channel_group)",
                               file=str(path), column=column, key=key)


def _read_virtual(g: Gate, identity: Identity) -> tuple[pl.DataFrame, Path]:
    """The seed's virtual classification: it must exist and carry this seed and fingerprint."""
    path = g.path("virtual_classification_3B", seed=identity.seed)
    if not path.is_file():
        raise ArrivalError(
            error_code("S1", "DOMAIN_INVALID"),
            f"virtual_classification_3B for seed {identity.seed} is missing at {path}; every entity needs a virtual mode",
            file=str(path), artifact_id="virtual_classification_3B", seed=identity.seed,
        )
    frame, path = read_sealed_table(g, "virtual_classification_3B", code=error_code("S1", "INPUT_SCHEMA_INVALID"),
                                    seed=identity.seed)
    return frame, path


def _check_input(store: Store, dataset_id: str, frame: pl.DataFrame, path: Path, identity: Identity) -> None:
    """Validate an input table in full and check its identity columns equal the partition's."""
    code = error_code("S1", "INPUT_SCHEMA_INVALID")
    entry = store.entry(dataset_id)
    tables.validate_table(frame, entry.schema_ref, code=code, where=str(path), primary_key=entry.primary_key,
                             contracts_dir=store.contracts_dir)
    for column, value in (("manifest_fingerprint", identity.manifest_fingerprint), ("seed", identity.seed)):
        if column in frame.columns:
            wrong = frame.filter(pl.col(column) != value)
            if wrong.height:
                raise ArrivalError(
                    code, f"{path}: {wrong.height} row(s) have {column} {wrong[column][0]!r}, expected {value!r}",
                    file=str(path), column=column, key={k: wrong[k][0] for k in entry.primary_key},
                )


def _s1_body(run: StateRun) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0}
    with run.timed("load"):
        identity, g = run.open_gate()
        grid_policy_path = g.path("time_grid_policy_5B")
        grouping_policy_path = g.path("grouping_policy_5B")
        grid_policy = grid.parse_time_grid_policy(g.policy("time_grid_policy_5B"), where=str(grid_policy_path))
        group_policy = grouping.parse_grouping_policy(g.policy("grouping_policy_5B"))
        manifest, manifest_path = read_sealed_table(g, "scenario_manifest_5A", code=error_code("S1", "INPUT_SCHEMA_INVALID"))
        _check_input(store, "scenario_manifest_5A", manifest, manifest_path, identity)
        if ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B")).coupled:
            grouping.check_coupled_scenarios(manifest, grid_policy.bucket_duration_seconds)
        scenario = manifest.filter(pl.col("scenario_id") == identity.scenario_id).row(0, named=True)
        profile, profile_path = read_sealed_table(g, "merchant_zone_profile_5A", code=error_code("S1", "INPUT_SCHEMA_INVALID"))
        _check_input(store, "merchant_zone_profile_5A", profile, profile_path, identity)
        virtual, virtual_path = _read_virtual(g, identity)
        _check_input(store, "virtual_classification_3B", virtual, virtual_path, identity)
        surface_path = g.path("merchant_zone_scenario_local_5A")
        domain = read_domain(surface_path, code=error_code("S1", "DOMAIN_INVALID"))
        run.diagnostics["surface_entities"] = domain  # its checks compare the grouping with them, unread again
        if domain.height == 0:
            raise ArrivalError(error_code("S1", "DOMAIN_INVALID"), f"{surface_path}: the λ surface has no entities",
                               file=str(surface_path))
    with run.timed("compute"):
        time_grid = conform(store, "s1_time_grid_5B", grid.build_grid(scenario, grid_policy,
                                                                       where=str(manifest_path)), identity)
        features = grouping.attach_features(domain, profile, virtual, policy=group_policy,
                                            where_profile=str(profile_path), where_virtual=str(virtual_path))
        groups = conform(store, "s1_grouping_5B", grouping.assign_groups(
            features, scenario_band=grid.scenario_band(scenario), policy=group_policy), identity)
        realism = grouping.measure_realism(groups, group_policy.realism)
    run.metrics |= {
        "bucket_count": time_grid.height,
        "bucket_duration_seconds": grid_policy.bucket_duration_seconds,
        **realism.metrics(),
    }
    grid_path = store.path("s1_time_grid_5B", **identity.tokens())
    grouping_path = store.path("s1_grouping_5B", **identity.tokens())
    with run.timed("validate"):
        validate_output(store, "s1_time_grid_5B", time_grid, code=error_code("S1", "TIME_GRID_SCHEMA_INVALID"), path=grid_path)
        validate_output(store, "s1_grouping_5B", groups, code=error_code("S1", "GROUPING_SCHEMA_INVALID"), path=grouping_path)
        grouping.enforce_realism(realism, scenario_id=identity.scenario_id, where=str(grouping_policy_path))
    with run.timed("publish"), store.transaction("S1") as tx:
        tx.write_parquet("s1_time_grid_5B", grid_path, time_grid, arrow_schema(store, "s1_time_grid_5B"))
        tx.write_parquet("s1_grouping_5B", grouping_path, groups, arrow_schema(store, "s1_grouping_5B"))
    run.metrics["scenario_count_succeeded"] = 1
    return tx.published


def run_s1(store: Store, key: PartitionKey, options: RunOptions = DEFAULT_OPTIONS) -> StateResult:
    """S1: build the scenario's time grid and pooling groups (seed-invariant outputs per (ph, mf, scenario))."""
    return execute_state(store, "S1", key, options, _s1_body)



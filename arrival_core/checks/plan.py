"""Checks of the S0 and S1 outputs (sealed inputs, receipt, time grid, grouping)."""
from __future__ import annotations

import numpy as np
import polars as pl

from .. import pipeline
from ..errors import ArrivalError, error_code
from ..grouping import ENTITY_KEYS
from .context import CheckContext, CheckResult, document_schema, require_file, scan_table
from .specs import DOMAIN_COMPLETE, GATE_CONSISTENT, PRIMARY_KEY_UNIQUE, SCHEMA_VALID

# ---- S0 and S1 -----------------------------------------------------------------------------------------------------

def check_sealed_inputs(ctx: CheckContext) -> dict[str, CheckResult]:
    path = ctx.path("sealed_inputs_5B")
    require_file(path)
    rows = pipeline.read_json(path)
    key, consistent = CheckResult(), CheckResult()
    if isinstance(rows, list):
        keys = [(r.get("owner_segment"), r.get("artifact_id")) for r in rows if isinstance(r, dict)]
        if len(set(keys)) != len(keys):
            key.fail("(owner_segment, artifact_id) repeats")
        if keys != sorted(keys, key=str):
            key.fail("rows are not sorted by (owner_segment, artifact_id)")
        key.facts["rows"] = len(rows)
    try:
        _ = ctx.gate  # loading the gate recomputes the digest and re-checks every sealed policy
    except ArrivalError as err:
        consistent.fail(f"{err.code}: {err.message}")
    return {SCHEMA_VALID: document_schema(ctx, "sealed_inputs_5B", rows), PRIMARY_KEY_UNIQUE: key,
            GATE_CONSISTENT: consistent}


def check_receipt(ctx: CheckContext) -> dict[str, CheckResult]:
    path = ctx.path("s0_gate_receipt_5B")
    require_file(path)
    receipt = pipeline.read_json(path)
    consistent = CheckResult()
    try:
        g = ctx.gate
        statuses = {seg: v["status"] for seg, v in g.receipt["upstream_segments"].items()}
        consistent.facts |= {f"upstream {seg}": status for seg, status in sorted(statuses.items())}
        if any(status != "PASS" for status in statuses.values()):
            consistent.fail(f"upstream segments not PASS: {statuses}")
        if ctx.identity.scenario_id not in g.scenario_set:
            consistent.fail(f"scenario {ctx.identity.scenario_id} is not in the receipt's scenario_set")
    except ArrivalError as err:
        consistent.fail(f"{err.code}: {err.message}")
    return {SCHEMA_VALID: document_schema(ctx, "s0_gate_receipt_5B", receipt), GATE_CONSISTENT: consistent}


def check_time_grid(ctx: CheckContext) -> dict[str, CheckResult]:
    results = scan_table(ctx, "s1_time_grid_5B", pipeline.default_chunk_rows())
    frame = pipeline.read_table(ctx.path("s1_time_grid_5B"))
    domain = CheckResult()
    manifest, _ = pipeline.read_sealed_table(ctx.gate, "scenario_manifest_5A", code=error_code("S1", "INPUT_SCHEMA_INVALID"))
    scenario = manifest.filter(pl.col("scenario_id") == ctx.identity.scenario_id)
    if frame.height == 0 or scenario.height != 1:
        domain.fail(f"{frame.height} bucket(s); scenario rows in the manifest: {scenario.height}")
    else:
        if not np.array_equal(frame["bucket_index"].to_numpy(), np.arange(frame.height)):
            domain.fail("bucket_index is not 0..H-1")
        if not frame["bucket_start_utc"].slice(1).equals(frame["bucket_end_utc"].slice(0, frame.height - 1)):
            domain.fail("buckets are not contiguous (a start differs from the previous end)")
        row = scenario.row(0, named=True)
        if frame["bucket_start_utc"][0] != row["horizon_start_utc"] or frame["bucket_end_utc"][-1] != row["horizon_end_utc"]:
            domain.fail(f"grid spans {frame['bucket_start_utc'][0]}..{frame['bucket_end_utc'][-1]}, manifest horizon "
                        f"{row['horizon_start_utc']}..{row['horizon_end_utc']}")
        domain.facts["buckets"] = frame.height
    return results | {DOMAIN_COMPLETE: domain}


def check_grouping(ctx: CheckContext) -> dict[str, CheckResult]:
    results = scan_table(ctx, "s1_grouping_5B", pipeline.default_chunk_rows())
    domain = CheckResult()
    _ = ctx.gate  # the sealed inputs, re-proved: the surface compared with is the one S0 sealed, policies unchanged
    entities = ctx.surface_entities
    grouped = ctx.grouping.select(ENTITY_KEYS)
    keys = list(ENTITY_KEYS)
    for label, left, right in (("λ surface entities with no grouping row", entities, grouped),
                               ("grouping rows with no λ surface entity", grouped, entities)):
        extra = left.join(right, on=keys, how="anti").sort(keys)
        if extra.height:
            domain.fail(f"{extra.height} {label}", extra.row(0, named=True))
    domain.facts |= {"entities": grouped.height, "groups": ctx.grouping["group_id"].n_unique()}
    return results | {DOMAIN_COMPLETE: domain}

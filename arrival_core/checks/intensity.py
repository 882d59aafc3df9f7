"""Checks of the S2 outputs: realised intensity, latent field, the latent RNG log and the statistical corridor."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from .. import counts, entity_grid, kernels, latent, pipeline
from ..prefetch import prefetched
from ..rng import ledger, streams, variates
from . import intensity_kernels
from .context import CheckContext, CheckResult, TableScan, first_true, require_file, scan_table
from .scanning import GridScan, ValueCheck, column, string_columns
from .specs import (
    DOMAIN_COMPLETE,
    LATENT_CORRIDOR,
    NUMERIC_VALID,
    PRIMARY_KEY_UNIQUE,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
    TRACE_CONSISTENT,
    TRACE_SCHEMA_VALID,
    checks_for,
)

# ---- S2 ------------------------------------------------------------------------------------------------------------

def _published_factors(ctx: CheckContext) -> np.ndarray | None:
    """ξ of the published latent field as a (groups × buckets) matrix, or None when the policy does not emit it."""
    path = ctx.path("s2_latent_field_5B")
    if not path.is_file():
        return None
    return pq.read_table(path, columns=["lambda_random_component"])["lambda_random_component"].to_numpy().reshape(
        -1, ctx.domain.buckets)


def check_realised(ctx: CheckContext) -> dict[str, CheckResult]:
    d, lgcp = ctx.domain, ctx.lgcp
    h = d.buckets
    scan = GridScan(ctx, "s2_realised_intensity_5B")
    numeric, replay = CheckResult(), CheckResult()
    replays = ctx.group_replays()
    positions = []
    for _, chosen, _ in replays:  # the reference's sample, and the engine's every group under `full`
        position = np.full(len(d.group_ids), -1)
        position[chosen] = np.arange(len(chosen))
        positions.append(position)
    factors = _published_factors(ctx)
    source = prefetched(pipeline.read_whole_entities(ctx.surface, ["lambda_local_scenario"], [], h,
                                                     pipeline.default_chunk_entities(h)))
    replayed = 0
    for e0, e1, chunk in scan.chunks():
        target, factor, realised = (column(chunk, c) for c in ("lambda_baseline", "lambda_random_component",
                                                                "lambda_realised"))
        group = d.entity_group[e0:e1]  # per entity; rows are (entity, bucket) = factor.reshape(entities, H)
        _, src = next(source)
        found, first = intensity_kernels.realised_mismatches(
            target, column(src, "lambda_local_scenario"), factor, realised, lgcp.min_factor, lgcp.max_factor,
            lgcp.lambda_max, factors, group, h)
        for label, n, i in zip(intensity_kernels.RULES, found, first):
            if n:
                numeric.fail(f"{int(n)} row(s): {label}", entity_grid.grid_key(d, e0, int(i), "bucket_index"))
        for (by, _, fresh), position in zip(replays, positions, strict=True):
            entities = np.flatnonzero(position[group] >= 0)
            replayed += len(entities) * h
            bad = factor.reshape(-1, h)[entities] != fresh.factor[position[group[entities]]]
            if bad.any():
                entity, bucket = np.argwhere(bad)[0]
                replay.fail(f"{int(bad.sum())} row(s) have ξ that does not replay by the {by}",
                            entity_grid.grid_key(d, e0, int(entities[entity]) * h + int(bucket), "bucket_index"))
    replay.facts |= {"groups_replayed": max(len(chosen) for _, chosen, _ in replays),
                     "groups_replayed_by_reference": len(replays[0][1]), "rows_compared": replayed,
                     "mode": ctx.replay}
    return scan.results() | {NUMERIC_VALID: numeric, RNG_REPLAY: replay}


def check_latent_field(ctx: CheckContext) -> dict[str, CheckResult]:
    lgcp, d = ctx.lgcp, ctx.domain
    if not ctx.path("s2_latent_field_5B").is_file() and not lgcp.emit_latent_field:
        result = CheckResult(facts={"emitted": False})
        return {spec.name: result for spec in checks_for("s2_latent_field_5B")}
    path = ctx.path("s2_latent_field_5B")
    require_file(path)
    strings = string_columns(path)
    arrow = pq.read_table(path, read_dictionary=strings)
    values = ValueCheck(ctx, "s2_latent_field_5B", path)
    values.add(0, arrow)
    table = pl.from_arrow(arrow.drop_columns(strings))
    g, h = len(d.group_ids), d.buckets
    domain, numeric, replay, corridor = CheckResult(), CheckResult(), CheckResult(), CheckResult()
    key = CheckResult(facts={"by": "(group_id, bucket) order against the grouping's sorted group ids"})
    codes = entity_grid.dictionary_codes(arrow["group_id"], d.dictionaries["group_id"])
    if arrow.num_rows != g * h or not np.array_equal(codes, np.repeat(np.arange(g), h)) or not np.array_equal(
            table["bucket_index"].to_numpy(), np.tile(np.arange(h), g)) or list(d.group_ids) != sorted(set(d.group_ids)):
        domain.fail(f"{arrow.num_rows} rows; expected {g} groups × {h} buckets in (group_id, bucket) order")
        key.fail("the rows are not one per (group_id, bucket) in writer order (see domain_complete)")
    for name, value in pipeline.identity_values(ctx.identity, arrow.column_names).items():
        if (row := entity_grid.first_mismatch(arrow[name], value)) is not None:
            domain.fail(f"{name} is {arrow[name][row]} at row {row}, the partition's is {value!r}")
    results = {SCHEMA_VALID: values.finish(arrow.num_rows), PRIMARY_KEY_UNIQUE: key}
    if domain.problems:
        return results | {name: domain for name in (DOMAIN_COMPLETE, NUMERIC_VALID, RNG_REPLAY, LATENT_CORRIDOR)}
    domain.facts |= {"groups": g, "buckets": h}
    latent_z = table["latent_value"].to_numpy().reshape(g, h)
    factor = table["lambda_random_component"].to_numpy().reshape(g, h)
    none = lgcp.latent_model_id == "none"
    sigma = np.zeros(g) if none else ctx.params["sigma"].to_numpy()
    expected_std = np.repeat(sigma, h)
    raw = variates.exp(latent_z - 0.5 * (sigma * sigma)[:, None])
    for label, bad in (
        ("latent_std differs from the policy's σ", table["latent_std"].to_numpy() != expected_std),
        ("length_scale_buckets differs from the policy",
         table["length_scale_buckets"].to_numpy() != np.repeat(ctx.params["length_scale_buckets"].to_numpy(), h)),
        ("ξ ≠ clip(exp(Z − σ²/2))", (factor != np.clip(raw, lgcp.min_factor, lgcp.max_factor)).ravel()),
        ("`clipped` does not mark the clipped factors", table["clipped"].to_numpy() != (factor != raw).ravel()),
    ):
        if (i := first_true(bad)) is not None:
            numeric.fail(f"{int(bad.sum())} row(s): {label}", {"group_id": d.group_ids[i // h],
                                                              "bucket_index": int(i % h)})
    replays = ctx.group_replays()
    for by, chosen, fresh in replays:  # the reference's sample, and the engine's every group under `full`
        bad = (latent_z[chosen] != fresh.latent) | (factor[chosen] != fresh.factor)
        if bad.any():
            gi, t = np.argwhere(bad)[0]
            replay.fail(f"{int(bad.sum())} latent value(s) do not replay by the {by}",
                        {"group_id": d.group_ids[chosen[gi]], "bucket_index": int(t)})
    replay.facts |= {"groups_replayed": max(len(chosen) for _, chosen, _ in replays),
                     "groups_replayed_by_reference": len(replays[0][1]), "mode": ctx.replay}
    if none:
        corridor.facts["model"] = "none (ξ ≡ 1)"
        if (latent_z != 0).any() or (factor != 1).any():
            corridor.fail("latent_model_id none but Z ≠ 0 or ξ ≠ 1")
    else:
        if lgcp.latent_model_id == latent.STATIONARY:
            stats = spectral_corridor(stationary_projections(latent_z, sigma, ctx.params, lgcp, h,
                                                             coupled=ctx.rng.coupled),
                                      ctx.corridors["false_alarm"]) | {"model": f"projected {lgcp.kernel_id}"}
        else:
            phi = np.zeros(g) if lgcp.latent_model_id == "log_gaussian_iid_v1" else ctx.params["phi"].to_numpy()
            stats = latent_corridor(latent_z, sigma, phi, ctx.corridors["false_alarm"])
        corridor.facts |= {k: v for k, v in stats.items() if k != "passed"}
        if not stats["variance_ok"]:
            corridor.fail(f"pooled Σ Z²/σ² = {stats['sum_sq']:.6g} outside [{stats['sum_sq_low']:.6g}, "
                          f"{stats['sum_sq_high']:.6g}] (σ̂/σ = {stats['sigma_ratio']:.4f})")
        if not stats.get("tilt_ok", True):
            corridor.fail(f"spectral tilt {stats['tilt_stat']:.6g} outside ±{stats['tilt_bound']:.6g}: the variance "
                          f"is not spread over the directions as the kernel's eigenvalues say (wrong L or kernel)")
        if not stats.get("lag1_ok", True):
            corridor.fail(f"lag-1 martingale statistic {stats['lag1_stat']:.6g} outside ±{stats['lag1_bound']:.6g} "
                          f"(ρ̂ = {stats['lag1_estimate']:.4f}, mean φ = {stats['phi_mean']:.4f})")
    return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay, LATENT_CORRIDOR: corridor}


def latent_corridor(z: np.ndarray, sigma: np.ndarray, phi: np.ndarray, alpha: float) -> dict:
    """Rigorous corridors for G stationary AR(1) paths Z (G×H) with known σ_g, φ_g; false alarm ≤ alpha in total.

    Variance: Q = Σ Z²/σ² is a Gaussian quadratic form Σ λ_i w_i² (λ = eigenvalues of the AR(1) correlation
    matrices), so Laurent–Massart gives Q − GH ∈ [−2√(Vx), 2√(Vx) + 2Mx] with V = Σ tr(R²), M ≥ max λ_i =
    (1+φ)/(1−φ), x = ln(4/alpha) (alpha/4 per side). Lag-1: T = Σ Z_t(Z_{t+1} − φZ_t)/σ² is a martingale with
    conditionally Gaussian increments of variance v_t = (1−φ²)Z_t²/σ², so P(|T| ≥ a, Σv ≤ b) ≤ 2exp(−a²/2b); b
    bounds Σv by Laurent–Massart at alpha/4 and a is set so the exponential term is alpha/4.
    """
    g, h = z.shape
    w = z / sigma[:, None]
    k = np.arange(1, h)
    trace_r2 = h + 2.0 * np.array([np.sum((h - k) * p ** (2 * k)) for p in phi])
    x = math.log(4.0 / alpha)
    sum_sq = float((w * w).sum())
    v, m = float(trace_r2.sum()), float(np.max((1 + phi) / (1 - phi)))
    low, high = g * h - 2 * math.sqrt(v * x), g * h + 2 * math.sqrt(v * x) + 2 * m * x
    head = w[:, :-1]
    lag_stat = float((head * (w[:, 1:] - phi[:, None] * head)).sum())
    weight = 1.0 - phi * phi
    k1 = np.arange(1, h - 1)
    trace_r2_head = (h - 1) + 2.0 * np.array([np.sum((h - 1 - k1) * p ** (2 * k1)) for p in phi])
    v_mean = float((weight * (h - 1)).sum())
    v_bound = v_mean + 2 * math.sqrt(float((weight * weight * trace_r2_head).sum()) * x) + \
        2 * float(np.max(weight * (1 + phi) / (1 - phi))) * x
    lag_bound = math.sqrt(2.0 * v_bound * math.log(8.0 / alpha))
    return {
        "groups": g, "buckets": h, "sum_sq": sum_sq, "sum_sq_low": low, "sum_sq_high": high,
        "sigma_ratio": math.sqrt(sum_sq / (g * h)), "variance_ok": low <= sum_sq <= high,
        "lag1_stat": lag_stat, "lag1_bound": lag_bound, "lag1_ok": abs(lag_stat) <= lag_bound,
        "lag1_estimate": float((head * w[:, 1:]).sum() / (head * head).sum()), "phi_mean": float(phi.mean()),
        "false_alarm": alpha,
    }


WHITENING_MAX_GAIN = 1e4  # an error of ε·σ in a published Z moves a kept projection by at most 1e4·ε·√H


def stationary_projections(z: np.ndarray, sigma: np.ndarray, params: pl.DataFrame, policy: latent.LgcpPolicy,
                           buckets: int, *, coupled: bool = False) -> list[np.ndarray]:
    """Each group's Z/σ projected on the eigenvectors of the exact covariance its embedding samples (the H×H
    Toeplitz matrix R of `kernels.realised_autocovariance`, R = U Λ Uᵀ) and scaled: y_i = u_iᵀ(Z/σ) / √λ_i, for
    every direction whose gain √R₀/√λ_i stays ≤ WHITENING_MAX_GAIN, in decreasing λ. Under the law the y are iid
    N(0, 1). One decomposition per distinct embedding; one (groups × n) array per embedding."""
    groups = latent.group_embeddings(params, policy, buckets, coupled=coupled)
    out = []
    for i, emb in enumerate(groups.embeddings):  # over distinct embeddings, not groups
        rows = np.flatnonzero(groups.index == i)
        r = kernels.realised_autocovariance(emb)
        lag = np.abs(np.arange(buckets)[:, None] - np.arange(buckets)[None, :])
        lam, vectors = np.linalg.eigh(r[lag])
        keep = np.flatnonzero(lam > r[0] / WHITENING_MAX_GAIN**2)[::-1]  # decreasing eigenvalue
        out.append((z[rows] / sigma[rows, None]) @ vectors[:, keep] / np.sqrt(lam[keep]))
    return out


def spectral_corridor(series: Sequence[np.ndarray], alpha: float) -> dict:
    """Rigorous corridors for arrays of values iid N(0, 1) under the law, each groups × n in decreasing eigenvalue
    order (`stationary_projections`); false alarm ≤ alpha, alpha/4 per tail, x = ln(4/alpha).

    Variance: Q = Σ y² is χ²(n): n − 2√(nx) ≤ Q ≤ n + 2√(nx) + 2x (Laurent–Massart). Tilt: per group c_i = +1 on the
    first ⌊n/2⌋ directions (largest eigenvalues), −1 on the next ⌊n/2⌋ (a middle one, for odd n, gets 0);
    T = Σ c_i (y_i² − 1) has log E e^{θT} ≤ θ² Σc² / (1 − 2θ) for 0 ≤ θ < ½ (each −u − ½ln(1 − 2u) ≤ u²/(1 − 2u) for
    u < ½, and ≤ u² for u ≤ 0), so |T| ≤ 2√(Σc² x) + 2x at alpha/4 per side. A field whose L or kernel is wrong
    puts too much or too little variance on the large-eigenvalue directions.
    """
    x = math.log(4.0 / alpha)
    values = [np.asarray(s, dtype=np.float64) for s in series]
    n = sum(v.size for v in values)
    sum_sq = float(sum((v * v).sum() for v in values))
    tilt, weight = 0.0, 0
    for v in values:  # over distinct embeddings
        half = v.shape[1] // 2
        if half:
            tilt += float((v[:, :half] ** 2 - 1.0).sum() - (v[:, v.shape[1] - half:] ** 2 - 1.0).sum())
            weight += 2 * half * v.shape[0]
    low, high = n - 2 * math.sqrt(n * x), n + 2 * math.sqrt(n * x) + 2 * x
    tilt_bound = 2 * math.sqrt(weight * x) + 2 * x
    return {
        "groups": sum(v.shape[0] for v in values), "directions": n,
        "directions_per_group_min": min((v.shape[1] for v in values), default=0),
        "sum_sq": sum_sq, "sum_sq_low": low, "sum_sq_high": high,
        "sigma_ratio": math.sqrt(sum_sq / n) if n else 1.0, "variance_ok": n == 0 or low <= sum_sq <= high,
        "tilt_stat": tilt, "tilt_bound": tilt_bound, "tilt_ok": abs(tilt) <= tilt_bound, "false_alarm": alpha,
    }


def ledger_result(ctx: CheckContext, family_id: str, events: ledger.FamilyTotals, expected: ledger.FamilyTotals,
                   trace: pl.DataFrame) -> CheckResult:
    result = CheckResult(facts={"events": events.events, "draws": events.draws, "blocks": events.blocks,
                            "trace_appends": trace.height})
    audit_path = ctx.path("rng_audit_log_5B")
    entry = None
    if audit_path.is_file():
        record = pipeline.read_json(audit_path)
        entry = ((record.get("families") or {}).get(family_id) if isinstance(record, dict) else None) or {}
        result.facts["audit"] = "compared"
    for p in ledger.reconcile(events, trace, expected, append_events=ctx.rng.trace_append_events,
                              audit_entry=entry):
        result.fail(p)
    return result


def check_latent_events(ctx: CheckContext) -> dict[str, CheckResult]:
    results = scan_table(ctx, "rng_event_arrival_lgcp_gaussian", pipeline.default_chunk_rows())
    family = ctx.family_ledger(latent.FAMILY_ID)
    table = pipeline.read_table(ctx.path("rng_event_arrival_lgcp_gaussian"))
    accounting = ledger_result(ctx, latent.FAMILY_ID, family.events, family.expected, family.trace)
    replay = CheckResult(facts={"mode": ctx.replay})
    d, h = ctx.domain, ctx.domain.buckets
    if ctx.lgcp.latent_model_id != "none":
        blocks = latent.event_blocks(ctx.params, ctx.lgcp, h, coupled=ctx.rng.coupled)  # H, 2M or 2M_c
        if table.height != len(d.group_ids) or table["group_id"].to_list() != list(d.group_ids):
            accounting.fail(f"{table.height} events; expected one per group ({len(d.group_ids)}) in group_id order")
        else:
            chosen, fresh = ctx.replay_groups()  # stream bases and blocks from the independent reference
            envelopes = [("reference", chosen, *fresh.base.T, fresh.blocks)]
            if ctx.replay == "full":  # and every event from the engine's stream derivation
                every = np.arange(len(d.group_ids), dtype=np.int64)
                bases = streams.stream_bases(latent.FAMILY_ID, ctx.identity.manifest_fingerprint,
                                             ctx.identity.parameter_hash, ctx.identity.seed, ctx.identity.scenario_id,
                                             latent.domain_keys(d.group_ids, coupled=ctx.rng.coupled),
                                             domain_sep=ctx.rng.domain_sep, coupled=ctx.rng.coupled)
                envelopes.append(("engine", every, *bases, blocks))
            for by, rows, key, hi, lo, size in envelopes:
                after_lo = lo + size.astype(np.uint64)
                after_hi = hi + (after_lo < lo).astype(np.uint64)
                sub = table[rows]
                for column, expected in (("rng_key", key), ("rng_counter_before_hi", hi),
                                         ("rng_counter_before_lo", lo), ("rng_counter_after_hi", after_hi),
                                         ("rng_counter_after_lo", after_lo)):
                    bad = sub[column].to_numpy() != expected
                    if (i := first_true(bad)) is not None:
                        replay.fail(f"{int(bad.sum())} event(s): {column} does not replay by the {by}",
                                    {"group_id": sub["group_id"][i]})
            replay.facts |= {"events_replayed": max(len(e[1]) for e in envelopes),
                             "events_replayed_by_reference": len(chosen)}
            law = "4M draws, 2M blocks" if ctx.lgcp.latent_model_id == latent.STATIONARY else "2H draws, H blocks"
            for column, value in (("draws", 2 * blocks), ("blocks", blocks)):
                got = table[column].to_numpy()
                if (i := first_true(got != value)) is not None:
                    accounting.fail(f"{int((got != value).sum())} event(s): {column} is {int(got[i])}, expected "
                                    f"{int(value[i])} ({law})", {"group_id": table["group_id"][i]})
    return results | {RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}


def check_trace(ctx: CheckContext, dataset_id: str, family_index: int) -> dict[str, CheckResult]:
    scan = TableScan(ctx, dataset_id)
    path = ctx.path(dataset_id)
    require_file(path)
    scan.feed(0, pipeline.read_table(path))
    family = ctx.family_log((latent.FAMILY_ID, counts.FAMILY_ID)[family_index])
    consistent = CheckResult(facts={"appends": family.trace.height})
    for p in ledger.trace_problems(family.trace, append_events=ctx.rng.trace_append_events):
        consistent.fail(p)
    if ledger.trace_totals(family.trace) != family.events:
        consistent.fail(f"trace totals {ledger.trace_totals(family.trace)} differ from the event log {family.events}")
    results = scan.results()
    return {TRACE_SCHEMA_VALID: merge_results(results[SCHEMA_VALID], results[PRIMARY_KEY_UNIQUE]), TRACE_CONSISTENT: consistent}


def merge_results(*parts: CheckResult) -> CheckResult:
    """One result holding every part's facts, problems and offending keys (at most five each)."""
    out = CheckResult()
    for part in parts:
        out.facts |= part.facts
        for p in part.problems:
            out.fail(p)
        out.offending += part.offending[: 5 - len(out.offending)]
    return out

"""Checks of the S2 outputs: realised intensity, latent field, the latent RNG log and the statistical corridor."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from .. import counts, kernels, latent, pipeline
from ..rng import ledger, streams
from .context import CheckContext, CheckResult, TableScan, first_true, require_file, scan_table
from .specs import (
    PRIMARY_KEY_UNIQUE,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
    TRACE_CONSISTENT,
    TRACE_SCHEMA_VALID,
)

# ---- S2 ------------------------------------------------------------------------------------------------------------







def _per_phi(phi: np.ndarray, term) -> np.ndarray:
    """term(φ) of each group's φ, computed once per distinct φ (groups of one stratum share theirs)."""
    distinct, index = np.unique(phi, return_inverse=True)
    return np.array([term(p) for p in distinct], dtype=np.float64)[index]  # over distinct φ


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
    trace_r2 = h + 2.0 * _per_phi(phi, lambda p: np.sum((h - k) * p ** (2 * k)))
    x = math.log(4.0 / alpha)
    sum_sq = float((w * w).sum())
    v, m = float(trace_r2.sum()), float(np.max((1 + phi) / (1 - phi)))
    low, high = g * h - 2 * math.sqrt(v * x), g * h + 2 * math.sqrt(v * x) + 2 * m * x
    head = w[:, :-1]
    lag_stat = float((head * (w[:, 1:] - phi[:, None] * head)).sum())
    weight = 1.0 - phi * phi
    k1 = np.arange(1, h - 1)
    trace_r2_head = (h - 1) + 2.0 * _per_phi(phi, lambda p: np.sum((h - 1 - k1) * p ** (2 * k1)))
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

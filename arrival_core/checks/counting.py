"""Checks of the S3 outputs and the audit: counts, the count RNG log, replay and the count corridor."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from .. import counts, pipeline
from ..grouping import ENTITY_KEYS
from ..rng import ledger, streams, variates
from ..rng.philox import add_counter
from .context import (
    CheckContext,
    CheckResult,
    TableScan,
    document_schema,
    first_true,
    key_of,
    require_file,
    scan_table,
)
from .intensity import ledger_result
from .specs import (
    COUNT_CORRIDOR,
    DOMAIN_COMPLETE,
    NUMERIC_VALID,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
)

# ---- S3 ------------------------------------------------------------------------------------------------------------

@dataclass
class CountMoments:
    """Running sums over drawing, uncapped rows for the count corridors."""

    rows: int = 0
    mu: float = 0.0
    n: float = 0.0
    sq: float = 0.0  # Σ (N − μ)²
    mu_sq: float = 0.0  # Σ μ²
    w: float = 0.0  # Σ ((N − μ)² − N): mean 0 under Poisson
    var: float = 0.0  # Σ (μ + μ²/κ): the NB2 variance
    d: float = 0.0  # Σ ((N − μ)² − μ − μ²/κ)
    d_sq: float = 0.0  # Σ of its squares

    def add(self, mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None) -> None:
        r = n - mu
        self.rows += len(mu)
        self.mu += float(mu.sum())
        self.n += float(n.sum())
        self.sq += float((r * r).sum())
        self.mu_sq += float((mu * mu).sum())
        self.w += float((r * r - n).sum())
        if kappa is not None:
            v = mu + mu * mu / kappa
            dev = r * r - v
            self.var += float(v.sum())
            self.d += float(dev.sum())
            self.d_sq += float((dev * dev).sum())


def count_corridor(m: CountMoments, law: str, alpha: float, z_bound: float) -> dict:
    """Corridors for counts given μ. Poisson: the total is Poisson(Σμ), bounded by Bernstein at alpha/4 per side;
    the dispersion statistic Σ((N−μ)² − N) has mean 0 and variance 2Σμ², held within z_bound standard
    errors. NB2: Σ(N−μ) / √Σ(μ+μ²/κ) and the self-normalised Σ((N−μ)² − μ − μ²/κ) within z_bound."""
    out: dict = {"rows": m.rows, "sum_mu": m.mu, "sum_n": m.n, "law": law, "false_alarm": alpha}
    if m.rows == 0 or m.mu == 0:
        return out | {"passed": True}
    if law == "poisson":
        c = math.log(4.0 / alpha)
        up = c / 3 + math.sqrt((c / 3) ** 2 + 2 * m.mu * c)
        down = math.sqrt(2 * m.mu * c)
        z_disp = m.w / math.sqrt(2 * m.mu_sq) if m.mu_sq else 0.0
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.mu), "total_low": m.mu - down,
                "total_high": m.mu + up, "dispersion_index": m.sq / m.mu, "dispersion_z": z_disp}
        out["total_ok"] = m.mu - down <= m.n <= m.mu + up
        out["dispersion_ok"] = abs(z_disp) <= z_bound
    else:
        z_mean = (m.n - m.mu) / math.sqrt(m.var)
        z_var = m.d / math.sqrt(m.d_sq) if m.d_sq else 0.0
        out |= {"mean_z": z_mean, "variance_z": z_var, "variance_ratio": (m.sq / m.var) if m.var else None}
        out["total_ok"] = abs(z_mean) <= z_bound
        out["dispersion_ok"] = abs(z_var) <= z_bound
    return out | {"passed": out["total_ok"] and out["dispersion_ok"]}


def _replay_counts(ctx: CheckContext, frame: pl.DataFrame, e0: int, rows: np.ndarray, kappa: np.ndarray | None) -> np.ndarray:
    """count_N re-derived for chosen rows of a slice of whole entities starting at entity e0."""
    h = ctx.domain.buckets
    local_entity = rows // h
    entities, index = np.unique(local_entity, return_inverse=True)
    keys = counts.domain_keys(ctx.domain.entities[e0 + entities])
    ident = ctx.identity
    bases = streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                 ident.scenario_id, keys, domain_sep=ctx.rng.domain_sep)
    draws = counts.draw_counts(frame["mu"].to_numpy()[rows], index, frame["bucket_index"].to_numpy()[rows], bases,
                               None if kappa is None else kappa[e0 + entities], ctx.count_policy)
    return draws.count


def check_counts(ctx: CheckContext) -> dict[str, CheckResult]:
    d, policy = ctx.domain, ctx.count_policy
    h = d.buckets
    path = ctx.path("s3_bucket_counts_5B")
    require_file(path)
    total = pipeline.table_rows(path)
    domain, numeric, replay, corridor = CheckResult(), CheckResult(), CheckResult(), CheckResult()
    aligned = [total == d.rows]
    if not aligned[0]:
        domain.fail(f"{total} rows, expected {d.size} entities × {h} buckets = {d.rows}")
    kappa = counts.entity_kappa(ctx.grouping, policy) if policy.law == "nb2" else None
    slice_rows = pipeline.default_chunk_entities(h) * h
    source = pipeline.read_slices(ctx.path("s2_realised_intensity_5B"), slice_rows,
                                  [*ENTITY_KEYS, "bucket_index", "lambda_realised"])
    sample = ctx.sample(total)
    moments = CountMoments()
    replayed = [0]

    def on_slice(start: int, frame: pl.DataFrame) -> None:
        if not aligned[0]:
            return
        e0, e1, row = ctx.entity_span(start, frame)
        _, s2 = next(source)
        same = all(frame[c].equals(s2[c]) for c in (*ENTITY_KEYS, "bucket_index"))
        if row is not None or not same:
            domain.fail(f"rows from {start} are not the rows of s2_realised_intensity_5B / grid × grouping")
            aligned[0] = False
            return
        mu = frame["mu"].to_numpy()
        n = frame["count_N"].to_numpy()
        capped = frame["count_capped"].to_numpy()
        for label, bad in (
            ("λ_realised differs from s2_realised_intensity_5B", frame["lambda_realised"].to_numpy()
             != s2["lambda_realised"].to_numpy()),
            ("μ ≠ λ_realised", mu != frame["lambda_realised"].to_numpy()),
            ("count_N > max_count_per_bucket", n > policy.max_count),
            ("count_N > 0 where μ ≤ lambda_zero_eps", (mu <= policy.lambda_zero_eps) & (n != 0)),
            ("count_capped without count_N = max_count_per_bucket", capped & (n != policy.max_count)),
            (f"count_law_id is not {policy.law}", (frame["count_law_id"] != policy.law).to_numpy()),
        ):
            if (i := first_true(bad)) is not None:
                numeric.fail(f"{int(bad.sum())} row(s): {label}", key_of(frame, i, (*ENTITY_KEYS, "bucket_index")))
        rows = sample[(sample >= start) & (sample < start + frame.height)] - start
        if len(rows):
            again = _replay_counts(ctx, frame, e0, rows, kappa)
            replayed[0] += len(rows)
            bad = again != n[rows]
            if (i := first_true(bad)) is not None:
                replay.fail(f"{int(bad.sum())} of {len(rows)} replayed row(s) differ",
                            key_of(frame, int(rows[i]), (*ENTITY_KEYS, "bucket_index")) | {"count_N": int(n[rows[i]]),
                                                                                           "replayed": int(again[i])})
        use = (mu > policy.lambda_zero_eps) & ~capped
        k = None if kappa is None else np.repeat(kappa[e0:e1], h)[use]
        moments.add(mu[use], n[use].astype(np.float64), k)

    results = scan_table(ctx, "s3_bucket_counts_5B", slice_rows, on_slice)
    replay.facts |= {"rows_replayed": replayed[0], "mode": ctx.replay}
    stats = count_corridor(moments, policy.law, ctx.corridors["false_alarm"], ctx.corridors["normal_corridor_z"])
    corridor.facts |= {k: v for k, v in stats.items() if k not in ("passed",)}
    if not stats["passed"]:
        corridor.fail(f"counts outside their corridor: {({k: stats[k] for k in stats if k.endswith('_ok')})}")
    return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay, COUNT_CORRIDOR: corridor}


def check_count_events(ctx: CheckContext) -> dict[str, CheckResult]:
    d, policy = ctx.domain, ctx.count_policy
    h = d.buckets
    path = ctx.path("rng_event_arrival_bucket_count")
    require_file(path)
    family = pipeline.read_ledger(ctx.gate, counts.FAMILY_ID)
    accounting = ledger_result(ctx, counts.FAMILY_ID, family.events, family.expected, family.trace)
    replay = CheckResult(facts={"mode": ctx.replay})
    scan = TableScan(ctx, "rng_event_arrival_bucket_count")
    kappa = counts.entity_kappa(ctx.grouping, policy) if policy.law == "nb2" else None
    sample = ctx.sample(family.events.events, full=False)  # under `full` the counts' own check replays them all
    chosen: list[pl.DataFrame] = []
    offset, ident = 0, ctx.identity
    keys = (*ENTITY_KEYS, "bucket_index")
    step = pipeline.default_chunk_entities(h)
    for start, frame in pipeline.read_slices(ctx.path("s3_bucket_counts_5B"), step * h, [*keys, "mu", "count_N"]):
        e0, e1 = start // h, (start + frame.height) // h
        drew = frame["mu"].to_numpy() > policy.lambda_zero_eps
        expected = frame.filter(pl.Series(drew))
        events = pipeline.read_rows(path, offset, expected.height)
        scan.feed(offset, events)
        if not events.select(keys).equals(expected.select(keys)):
            accounting.fail(f"events from row {offset} are not the count rows with μ > lambda_zero_eps (same order)")
            break
        entity = np.repeat(np.arange(e0, e1), h)[drew]
        key, hi, lo = streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash,
                                           ident.seed, ident.scenario_id, counts.domain_keys(d.entities[np.unique(entity)]),
                                           domain_sep=ctx.rng.domain_sep)
        local = np.searchsorted(np.unique(entity), entity)
        bucket = expected["bucket_index"].to_numpy().astype(np.uint64)
        before_hi, before_lo, _ = add_counter(hi[local], lo[local], bucket)
        after_hi, after_lo, _ = add_counter(before_hi, before_lo, np.ones_like(bucket))
        for column, want in (("rng_key", key[local]), ("rng_counter_before_hi", before_hi),
                             ("rng_counter_before_lo", before_lo), ("rng_counter_after_hi", after_hi),
                             ("rng_counter_after_lo", after_lo),
                             ("draws", np.full(len(bucket), policy.draws_per_event)), ("blocks", np.ones(len(bucket)))):
            bad = events[column].to_numpy() != want
            if (i := first_true(bad)) is not None:
                accounting.fail(f"{int(bad.sum())} event(s): {column} is not the stream base + bucket_index",
                                key_of(events, i, keys))
        rows = sample[(sample >= offset) & (sample < offset + events.height)] - offset
        if len(rows):
            chosen.append(events[rows].with_columns(
                mu=expected["mu"].gather(rows), count_N=expected["count_N"].gather(rows),
                kappa=pl.Series(np.ones(len(rows)) if kappa is None else kappa[entity[rows]])))
        offset += events.height
    if offset != pipeline.table_rows(path):
        accounting.fail(f"the event log has {pipeline.table_rows(path)} rows, the counts imply {offset}")
    if chosen:
        _replay_count_events(ctx, pl.concat(chosen), policy, replay)
    return scan.results() | {RNG_ACCOUNTING: accounting, RNG_REPLAY: replay}


def _replay_count_events(ctx: CheckContext, events: pl.DataFrame, policy: counts.CountPolicy, result: CheckResult) -> None:
    """Re-derive sampled events with the ledger (policy template → stream → blocks) and recompute their counts."""
    replayed = ledger.replay(ctx.gate.policy("arrival_rng_policy_5B"), counts.FAMILY_ID, events,
                             ctx.identity.columns())
    for mismatch in replayed.mismatches:
        result.fail(mismatch)
    first = replayed.event_start[:-1]
    mu, kappa = events["mu"].to_numpy(), events["kappa"].to_numpy()
    u0 = variates.u01(replayed.x0[first])
    if policy.law == "poisson":
        n = variates.poisson_inv(mu, u0)
    else:
        n = variates.poisson_inv(variates.gamma_inv(kappa, u0) * mu / kappa, variates.u01(replayed.x1[first]))
    n = np.minimum(n, policy.max_count)
    bad = n != events["count_N"].to_numpy()
    if (i := first_true(bad)) is not None:
        result.fail(f"{int(bad.sum())} of {len(bad)} replayed event(s) give another count",
                    key_of(events, i, (*ENTITY_KEYS, "bucket_index")) | {"count_N": int(events["count_N"][i]),
                                                                           "replayed": int(n[i])})
    result.facts["events_replayed"] = events.height


def check_audit_log(ctx: CheckContext) -> dict[str, CheckResult]:
    path = ctx.path("rng_audit_log_5B")
    require_file(path)
    record = pipeline.read_json(path)
    accounting = CheckResult()
    ledgers = pipeline.read_ledgers(ctx.gate)
    expected = ledger.audit_record(ctx.gate.policy("arrival_rng_policy_5B"),
                                   ctx.gate.sealed("arrival_rng_policy_5B")["sha256_hex"], ctx.identity.columns(),
                                   {lg.family_id: lg.trace for lg in ledgers})
    if record != expected:
        differing = sorted(k for k in set(expected) | set(record if isinstance(record, dict) else {})
                           if not isinstance(record, dict) or record.get(k) != expected.get(k))
        accounting.fail(f"the audit record differs from the recomputed one in {differing}")
    for lg in ledgers:
        if ledger.trace_totals(lg.trace) != lg.events or lg.events != lg.expected:
            accounting.fail(f"{lg.family_id}: events {lg.events}, trace {ledger.trace_totals(lg.trace)}, "
                            f"outputs {lg.expected}")
        accounting.facts[f"{lg.family_id} events"] = lg.events.events
    return {SCHEMA_VALID: document_schema(ctx, "rng_audit_log_5B", record), RNG_ACCOUNTING: accounting}

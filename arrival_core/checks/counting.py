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

PGF_TARGET = 2.0  # s = max(0, 1 − 2/μ): μ(1 − s) = min(μ, 2), where E[s^N] is most sensitive to dispersion


@dataclass
class CountMoments:
    """Running sums over drawing, uncapped rows for the count corridors (all functions of μ and κ, except the
    sums that involve N)."""

    rows: int = 0
    mu: float = 0.0  # Σ μ
    n: float = 0.0  # Σ N
    sq: float = 0.0  # Σ (N − μ)²
    var: float = 0.0  # Σ Var N: Σ μ (Poisson) or Σ (μ + μ²/κ) (NB2)
    mu2_kappa: float = 0.0  # Σ μ²/κ (NB2)
    ratio_max: float = 0.0  # max μ/κ (NB2)
    pgf: float = 0.0  # Σ (s^N − E[s^N]), s = max(0, 1 − 2/μ) per row: mean 0 under the law
    pgf_var: float = 0.0  # Σ Var[s^N] under the law

    def add(self, mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None) -> None:
        r = n - mu
        self.rows += len(mu)
        self.mu += float(mu.sum())
        self.n += float(n.sum())
        self.sq += float((r * r).sum())
        if len(mu) == 0:
            return
        s, one_minus_s = _pgf_argument(mu)
        one_minus_s2 = one_minus_s * (1.0 + s)
        if kappa is None:
            self.var += float(mu.sum())
            m1, m2 = np.exp(-mu * one_minus_s), np.exp(-mu * one_minus_s2)
        else:
            self.var += float((mu + mu * mu / kappa).sum())
            self.mu2_kappa += float((mu * mu / kappa).sum())
            self.ratio_max = max(self.ratio_max, float((mu / kappa).max()))
            m1 = np.exp(-kappa * np.log1p(mu * one_minus_s / kappa))
            m2 = np.exp(-kappa * np.log1p(mu * one_minus_s2 / kappa))
        power = np.where(s > 0.0, np.exp(n * np.log(np.where(s > 0.0, s, 1.0))), (n == 0).astype(np.float64))
        self.pgf += float((power - m1).sum())
        self.pgf_var += float(np.maximum(m2 - m1 * m1, 0.0).sum())


def _pgf_argument(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, 1 − s) per row, s = max(0, 1 − 2/μ); 1 − s = min(1, 2/μ) computed without cancellation."""
    one_minus_s = np.minimum(1.0, PGF_TARGET / mu)
    return 1.0 - one_minus_s, one_minus_s


def _bernstein(variance: float, c: float, scale: float) -> float:
    """t with exp(−t² / (2(variance + scale·t/3))) = e^{−c}: Bernstein's deviation for centred summands |X| ≤ scale."""
    return scale * c / 3 + math.sqrt((scale * c / 3) ** 2 + 2 * variance * c)


def _nb2_upper(sum_mu: float, mu2_kappa: float, ratio_max: float, c: float) -> float:
    """t with P(Σ N − Σ μ ≥ t) ≤ e^{−c} for independent NB2 counts, by Chernoff with the bound
    log E e^{λ(N−μ)} ≤ μ(e^λ − 1 − λ) + (μ²/κ) u² / (2(1 − r u)), u = e^λ − 1 < 1/r, r ≥ μ/κ (from
    −log(1 − x) ≤ x + x²/(2(1 − x))); t = min over a fixed grid of λ of (c + B(λ))/λ, every point valid."""
    top = math.log1p(1.0 / ratio_max) if ratio_max > 0 else 50.0
    lam = top * np.exp2(-np.arange(1, 961) / 16.0)  # λ_max · 2^{−j/16}, j = 1 … 960; data-free
    u = np.expm1(lam)
    bound = sum_mu * (u - lam) + mu2_kappa * u * u / (2.0 * (1.0 - ratio_max * u))
    return float(np.min((c + bound) / lam))


def count_corridor(m: CountMoments, law: str, alpha: float) -> dict:
    """Non-asymptotic corridors for counts given μ (and κ), rows independent given μ; false alarm ≤ alpha
    (alpha/4 per tail, four tails). Rows that drew nothing or were capped are left out (exact when no row
    reaches max_count_per_bucket).

    Total. Poisson: Σ N is Poisson(Σ μ), sub-gamma, so Bernstein gives
    Σμ − √(2Σμ c) ≤ Σ N ≤ Σμ + c/3 + √((c/3)² + 2Σμ c), c = ln(4/alpha). NB2: below, log E e^{−λ(N−μ)} ≤
    λ²(μ + μ²/κ)/2, so Σ N ≥ Σμ − √(2 V c), V = Σ(μ + μ²/κ); above, the Chernoff bound of `_nb2_upper`.
    Dispersion (both laws): with s = max(0, 1 − 2/μ) per row (a function of μ alone), the s^N ∈ [0, 1] are
    independent with E[s^N] = exp(−μ(1 − s)) (Poisson) or (1 + μ(1 − s)/κ)^{−κ} (NB2) and known variance
    E[s^{2N}] − E[s^N]², so Bernstein with |s^N − E s^N| ≤ 1 bounds |Σ(s^N − E s^N)| by
    c/3 + √((c/3)² + 2 Σ Var c). Over-dispersion raises E[s^N] (Jensen over a mixing law), under-dispersion
    lowers it; the generating function is the law's, so no normal approximation enters.
    """
    out: dict = {"rows": m.rows, "sum_mu": m.mu, "sum_n": m.n, "law": law, "false_alarm": alpha}
    if m.rows == 0 or m.mu == 0:
        return out | {"passed": True}
    c = math.log(4.0 / alpha)
    if law == "poisson":
        down, up = math.sqrt(2 * m.mu * c), _bernstein(m.mu, c, 1.0)
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.mu), "dispersion_index": m.sq / m.mu}
    else:
        down, up = math.sqrt(2 * m.var * c), _nb2_upper(m.mu, m.mu2_kappa, m.ratio_max, c)
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.var),
                "variance_ratio": (m.sq / m.var) if m.var else None}
    pgf_bound = _bernstein(m.pgf_var, c, 1.0)
    out |= {"total_low": m.mu - down, "total_high": m.mu + up, "pgf_stat": m.pgf, "pgf_bound": pgf_bound,
            "pgf_sd": math.sqrt(m.pgf_var)}
    out["total_ok"] = m.mu - down <= m.n <= m.mu + up
    out["dispersion_ok"] = abs(m.pgf) <= pgf_bound
    return out | {"passed": out["total_ok"] and out["dispersion_ok"]}


def _replay_counts(ctx: CheckContext, frame: pl.DataFrame, e0: int, rows: np.ndarray, kappa: np.ndarray | None) -> np.ndarray:
    """count_N re-derived for chosen rows of a slice of whole entities starting at entity e0."""
    h = ctx.domain.buckets
    local_entity = rows // h
    entities, index = np.unique(local_entity, return_inverse=True)
    keys = counts.domain_keys(ctx.domain.entities[e0 + entities])
    ident = ctx.identity
    bases = streams.stream_bases(counts.FAMILY_ID, ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                 ident.scenario_id, keys, domain_sep=ctx.rng.domain_sep, coupled=ctx.rng.coupled)
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
    stats = count_corridor(moments, policy.law, ctx.corridors["false_alarm"])
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
                                           domain_sep=ctx.rng.domain_sep, coupled=ctx.rng.coupled)
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

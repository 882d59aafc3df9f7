"""Checks of the S3 outputs and the audit: counts, the count RNG log, replay and the count corridor."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from .. import counts, entity_grid, pipeline
from ..grouping import ENTITY_KEYS
from ..rng import ledger
from . import compiled, count_kernels, event_kernels, reference
from .context import CheckContext, CheckResult, document_schema, first_true, key_of, require_file
from .scanning import GRID_KEYS, numbers
from .specs import (
    RNG_ACCOUNTING,
    SCHEMA_VALID,
)

# ---- S3 ------------------------------------------------------------------------------------------------------------

@dataclass
class CountMoments:
    """Running sums for the count corridors over drawing rows (functions of μ and κ, except the sums that involve N
    or the cap flag); see `count_kernels`: free rows feed the total and dispersion sums, cappable rows the cap sums."""

    rows: int = 0  # free rows (P(N > cap) ≤ 1e-40 by Chernoff)
    mu: float = 0.0  # Σ μ
    n: float = 0.0  # Σ N
    sq: float = 0.0  # Σ (N − μ)²
    var: float = 0.0  # Σ Var N: Σ μ (Poisson) or Σ (μ + μ²/κ) (NB2)
    mu2_kappa: float = 0.0  # Σ μ²/κ (NB2)
    ratio_max: float = 0.0  # max μ/κ (NB2)
    outside: float = 0.0  # rows with N outside [⌈μ − √V⌉, ⌊μ + √V⌋]
    outside_p: float = 0.0  # Σ of that event's exact probability
    outside_var: float = 0.0  # Σ p(1 − p) of it
    cap_rows: int = 0  # cappable rows
    capped: float = 0.0  # cappable rows flagged count_capped
    cap_p: float = 0.0  # Σ P(N > cap) over them
    cap_var: float = 0.0  # Σ P(1 − P)
    cap_free_bound: float = 0.0  # Σ of the free rows' Chernoff bounds on P(N > cap): what their statistics ignore

    def add(self, mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None, capped: np.ndarray | None = None,
            cap: float = 2.0**62, *, eps: float = -math.inf, first_bucket: int = 0, buckets: int = 1) -> None:
        """Add the drawing rows (μ > eps) of μ and N; κ None under Poisson, else one per `buckets` rows (the first
        row `first_bucket` into its run; 1: per row); the count_capped flags (None: none)."""
        found, added = count_kernels.moment_sums(mu, n, kappa, capped, cap, eps=eps, first_bucket=first_bucket,
                                                 buckets=buckets)
        sums = dict(zip(count_kernels.SUMS, found.tolist()))
        self.ratio_max = max(self.ratio_max, sums.pop("ratio_max"))
        for name, value in sums.items():
            current = getattr(self, name)
            setattr(self, name, current + (int(value) if isinstance(current, int) else value))
        self.rows += added - int(sums["cap_rows"])

    def merge(self, other: CountMoments) -> None:
        """Add the sums of other rows (merged in row order, so the sums do not depend on who made them)."""
        for name, value in vars(other).items():
            if name == "ratio_max":
                self.ratio_max = max(self.ratio_max, value)
            else:
                setattr(self, name, getattr(self, name) + value)


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
    """Non-asymptotic corridors for counts given μ (and κ), rows independent given μ; false alarm ≤ alpha plus the
    free rows' capping bound (≤ rows · 1e-40): alpha/6 per tail, six tails, c = ln(6/alpha).

    Rows are split by μ (and κ) alone, never by N: a row is cappable when Chernoff's bound on P(N > cap) exceeds
    1e-40. Free rows: their N is the published count except on an event of probability ≤ Σ bounds.
    Total. Poisson: Σ N is Poisson(Σ μ), sub-gamma, so Bernstein gives
    Σμ − √(2Σμ c) ≤ Σ N ≤ Σμ + c/3 + √((c/3)² + 2Σμ c). NB2: below, log E e^{−λ(N−μ)} ≤
    λ²(μ + μ²/κ)/2, so Σ N ≥ Σμ − √(2 V c), V = Σ(μ + μ²/κ); above, the Chernoff bound of `_nb2_upper`.
    Dispersion (both laws): B = 1[N outside [⌈μ − √V⌉, ⌊μ + √V⌋]] with V = Var N is Bernoulli(p), p from the law's
    exact pmf, so Bernstein with |B − p| ≤ 1 bounds |Σ(B − p)| by c/3 + √((c/3)² + 2 Σ p(1 − p) c) — each summand's
    range is its own, so a few rows of large μ cannot widen the bound. Over-dispersion raises Σ B, under-dispersion
    lowers it. Cap: over cappable rows the flags count_capped = 1[N > cap] are Bernoulli(P(N > cap)), P exact from
    the pmf; the same Bernstein bound applies to Σ(flag − P).
    """
    out: dict = {"rows": m.rows, "sum_mu": m.mu, "sum_n": m.n, "law": law, "false_alarm": alpha,
                 "cappable_rows": m.cap_rows, "capped_rows": m.capped, "cap_expected": m.cap_p,
                 "free_rows_cap_bound": m.cap_free_bound}
    c = math.log(6.0 / alpha)
    cap_bound = _bernstein(m.cap_var, c, 1.0)
    out |= {"cap_bound": cap_bound, "cap_ok": abs(m.capped - m.cap_p) <= cap_bound}
    if m.rows == 0 or m.mu == 0:
        return out | {"total_ok": True, "dispersion_ok": True, "passed": out["cap_ok"]}
    if law == "poisson":
        down, up = math.sqrt(2 * m.mu * c), _bernstein(m.mu, c, 1.0)
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.mu), "dispersion_index": m.sq / m.mu}
    else:
        down, up = math.sqrt(2 * m.var * c), _nb2_upper(m.mu, m.mu2_kappa, m.ratio_max, c)
        out |= {"standardised_total": (m.n - m.mu) / math.sqrt(m.var),
                "variance_ratio": (m.sq / m.var) if m.var else None}
    outside_bound = _bernstein(m.outside_var, c, 1.0)
    out |= {"total_low": m.mu - down, "total_high": m.mu + up, "outside": m.outside, "outside_expected": m.outside_p,
            "outside_bound": outside_bound, "outside_sd": math.sqrt(m.outside_var)}
    out["total_ok"] = m.mu - down <= m.n <= m.mu + up
    out["dispersion_ok"] = abs(m.outside - m.outside_p) <= outside_bound
    return out | {"passed": out["total_ok"] and out["dispersion_ok"] and out["cap_ok"]}


def _replay_counts(ctx: CheckContext, mu: np.ndarray, rows: np.ndarray, kappa: np.ndarray | None) -> np.ndarray:
    """count_N re-derived by the engine's own sampler for grid rows `rows` of μ `mu` (the fast path of a full
    replay; the sample is replayed by `_reference_counts`)."""
    h = ctx.domain.buckets
    entities, index = np.unique(rows // h, return_inverse=True)
    bases = tuple(words[entities] for words in ctx.count_stream_bases)
    draws = counts.draw_counts(mu, index, (rows % h).astype(np.int32), bases,
                               None if kappa is None else kappa[entities], ctx.count_policy)
    return draws.count


def _reference_blocks(ctx: CheckContext, entities: np.ndarray, buckets: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base rows (key, hi, lo), x0, x1) of chosen (entity, bucket) pairs by the independent reference: the stream
    from the RNG policy's template and the law's derivation, the block at base + bucket_index."""
    ident, rng_doc = ctx.identity, ctx.gate.policy("arrival_rng_policy_5B")
    coupled = rng_doc.get("scenario_coupling", "independent_v1") == "common_v1"
    rows = ctx.domain.entities[entities].select(ENTITY_KEYS).to_dicts()  # the replayed sample's entities
    base = np.array([reference.stream_base(rng_doc["derivation"]["domain_sep"], counts.FAMILY_ID,
                                           ident.manifest_fingerprint, ident.parameter_hash, ident.seed,
                                           "*" if coupled else ident.scenario_id,
                                           reference.entity_domain_key(rng_doc, row))
                     for row in rows], dtype=np.uint64).reshape(-1, 3)  # over the replayed sample
    compiled.ready()  # the reference's loops load from numba's cache
    x0, x1 = reference.blocks_of(base[:, 0], base[:, 1], base[:, 2], buckets)
    return base, x0, x1


def _reference_counts(ctx: CheckContext, mu: np.ndarray, entities: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """count_N of chosen rows (μ, entity index, bucket) derived afresh by the independent reference."""
    doc = ctx.gate.policy("arrival_count_config_5B")
    _, x0, x1 = _reference_blocks(ctx, entities, buckets)
    kappa = None
    if doc["count_law_id"] != "poisson":
        strata = ctx.grouping.select("scenario_band", "demand_class")[entities].to_dicts()  # the replayed sample
        kappa = np.array([reference.kappa_of(doc, row) for row in strata])
    drawing = mu > float(doc["lambda_zero_eps"])
    out = np.zeros(len(mu), dtype=np.int64)
    out[drawing] = reference.counts(doc, mu[drawing], None if kappa is None else kappa[drawing], x0[drawing],
                                    x1[drawing])
    return out


def _event_problems(ctx: CheckContext, events: pa.Table, logged: np.ndarray, offset: int,
                    policy: counts.CountPolicy, extremes: Mapping[str, tuple[int, int]] | None = None
                    ) -> tuple[tuple[str, dict] | None, tuple[str, dict] | None]:
    """(keys problem, envelope problem) of a chunk's events against the drawing count rows they log (grid rows,
    increasing): the keys must be theirs (same order, this partition), and only then the envelopes the stream base
    + bucket_index, one block of the policy's draws each; None where they hold."""
    d = ctx.domain
    h = d.buckets
    ident = ctx.identity
    e0, e1 = (int(logged[0]) // h, int(logged[-1]) // h + 1) if len(logged) else (0, 0)
    bases = tuple(words[e0:e1] for words in ctx.count_stream_bases)
    strings = event_kernels.KEY_COLUMNS[2:]
    found, first = event_kernels.event_mismatches(
        logged, e0 * h, h, d.merchant_id[e0:e1], tuple(d.codes[name][e0:e1] for name in strings), bases,
        *(numbers(events, name) for name in event_kernels.KEY_COLUMNS[:2]),
        tuple(entity_grid.dictionary_indices(events[name], d.dictionaries[name]) for name in strings),
        tuple(numbers(events, name) for name in event_kernels.ENVELOPE_COLUMNS), draws=policy.draws_per_event)
    keyed = len(event_kernels.KEY_COLUMNS)
    firsts = [int(first[:keyed][found[:keyed] > 0].min())] if found[:keyed].any() else []
    firsts += [f for f in (entity_grid.first_mismatch(events[name], value) for name, value in
                           pipeline.identity_values(ident, events.column_names).items()
                           if (extremes or {}).get(name) != (value, value))  # else the footer states every value
               if f is not None]
    if firsts:
        i = min(firsts)
        message = f"event row {offset + i} is not the count row with μ > lambda_zero_eps it should log (same keys, same order)"
        return (message, entity_grid.row_key(events, i, GRID_KEYS)), None
    for name, want, n, i in zip(event_kernels.ENVELOPE_COLUMNS, (*("the stream base + bucket_index",) * 5,
                                                                  policy.draws_per_event, 1),
                                found[keyed:], first[keyed:]):
        if n:
            return None, (f"{int(n)} event(s): {name} is not {want}",
                          entity_grid.grid_key(d, 0, int(logged[i]), "bucket_index"))
    return None, None


def _replay_count_events(ctx: CheckContext, events: pl.DataFrame, policy: counts.CountPolicy, result: CheckResult) -> None:
    """Re-derive sampled events with the independent reference (policy template → stream → block at
    base + bucket_index) and recompute their counts."""
    entities, buckets = events["entity"].to_numpy(), events["bucket_index"].to_numpy().astype(np.int64)
    base, _, _ = _reference_blocks(ctx, entities, buckets)
    after = [(int(h) * 2**64 + int(lo) + int(b) + 1) for (_, h, lo), b in zip(base.tolist(), buckets.tolist(), strict=True)]
    before = [(int(h) * 2**64 + int(lo) + int(b)) for (_, h, lo), b in zip(base.tolist(), buckets.tolist(), strict=True)]
    for name, want in (("rng_key", base[:, 0]),
                         ("rng_counter_before_hi", np.array([c >> 64 for c in before], dtype=np.uint64)),
                         ("rng_counter_before_lo", np.array([c & (2**64 - 1) for c in before], dtype=np.uint64)),
                         ("rng_counter_after_hi", np.array([c >> 64 for c in after], dtype=np.uint64)),
                         ("rng_counter_after_lo", np.array([c & (2**64 - 1) for c in after], dtype=np.uint64))):
        bad = events[name].to_numpy().astype(np.uint64) != want
        if (i := first_true(bad)) is not None:
            result.fail(f"{int(bad.sum())} replayed event(s): {name} is not the reference's",
                        key_of(events, i, (*ENTITY_KEYS, "bucket_index")))
    n = _reference_counts(ctx, events["mu"].to_numpy(), entities, buckets)
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
    ledgers = ctx.family_ledgers()
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

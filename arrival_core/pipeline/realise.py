"""S2 (latent intensity) and S3 (bucket counts): streamed through the λ surface in chunks of whole entities."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from .. import counts, diagnostics, entity_grid, grouping, latent, parallel
from ..errors import ArrivalError, error_code
from ..identity import Identity
from ..rng import ledger, streams, variates
from ..store import Published, Store
from . import records
from .shell import Progress, StateResult, StateRun, execute_state
from .streaming import (
    default_chunk_entities,
    identity_columns,
    identity_values,
    read_s1,
    stream_chunks,
    stream_proven,
    streamed_outputs,
    surface_path,
)

# ---- S2: latent intensity ------------------------------------------------------------------------------------------

def _latent_field_table(field: latent.LatentField, domain: entity_grid.Domain, identity: Identity) -> pa.Table:
    """s2_latent_field_5B: one row per (group, bucket), groups in group_id order."""
    g, h = len(field.group_id), field.buckets
    n = g * h
    cols = identity_columns(identity, n)
    cols["group_id"] = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(g, dtype=np.int32), h)),
                                                      domain.dictionaries["group_id"])
    cols |= {
        "bucket_index": pa.array(np.tile(np.arange(h, dtype=np.int32), g)),
        "latent_value": pa.array(field.latent.ravel()),
        "latent_mean": pa.array(np.zeros(n)),
        "latent_std": pa.array(np.repeat(field.sigma, h)),
        "length_scale_buckets": pa.array(np.repeat(field.length_scale, h)),
        "lambda_random_component": pa.array(field.factor.ravel()),
        "clipped": pa.array(field.clipped.ravel()),
    }
    return pa.table(cols)


def _latent_events_table(field: latent.LatentField, domain: entity_grid.Domain, identity: Identity,
                         rng: ledger.RngPolicy) -> pa.Table:
    """rng_event_arrival_lgcp_gaussian: one event per group (H blocks, 2H draws; stationary 2M, 4M), group_id order."""
    n = field.events
    fid = latent.FAMILY_ID
    cols = {"module": entity_grid.constant(rng.module(fid), n), "substream_label": entity_grid.constant(rng.substream(fid), n),
            "family_id": entity_grid.constant(fid, n)}
    cols |= identity_columns(identity, n)
    cols["group_id"] = pa.DictionaryArray.from_arrays(pa.array(np.arange(n, dtype=np.int32)),
                                                      domain.dictionaries["group_id"])
    cols |= {
        "rng_key": pa.array(field.rng_key),
        "rng_counter_before_lo": pa.array(field.counter_before[1]),
        "rng_counter_before_hi": pa.array(field.counter_before[0]),
        "rng_counter_after_lo": pa.array(field.counter_after[1]),
        "rng_counter_after_hi": pa.array(field.counter_after[0]),
        "draws": pa.array(field.draws),
        "blocks": pa.array(field.blocks),
    }
    return pa.table(cols)


def _trace_table(trace: pl.DataFrame, identity: Identity, rng: ledger.RngPolicy, family_id: str) -> pa.Table:
    n = trace.height
    cols = {"module": entity_grid.constant(rng.module(family_id), n),
            "substream_label": entity_grid.constant(rng.substream(family_id), n)}
    cols |= identity_columns(identity, n)
    for name in trace.columns:
        cols[name] = trace[name].to_arrow()
    return pa.table(cols)


def _realised_table(domain: entity_grid.Domain, e0: int, e1: int, identity: Identity, lgcp: latent.LgcpPolicy,
                    target: np.ndarray, factor: np.ndarray, realised: np.ndarray) -> pa.Table:
    """s2_realised_intensity_5B rows of entities e0..e1 (bucket order within each entity)."""
    n = len(target)
    cols = identity_columns(identity, n) | entity_grid.entity_columns(domain, e0, e1, with_group=True)
    cols |= {"lambda_baseline": pa.array(target), "lambda_random_component": pa.array(factor),
             "lambda_realised": pa.array(realised), "kernel_id": entity_grid.constant(lgcp.kernel_id, n),
             "config_version": entity_grid.constant(lgcp.version, n)}
    return pa.table(cols)


@dataclass
class _Summary:
    """Running min / max / sum / count of a value over streamed chunks."""

    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self.count += len(values)
            self.total += float(values.sum())
            self.low = min(self.low, float(values.min()))
            self.high = max(self.high, float(values.max()))

    def merge(self, other: _Summary) -> None:
        """Add another summary's values (of later chunks, summarised on a worker thread)."""
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @classmethod
    def of(cls, values: np.ndarray) -> _Summary:
        summary = cls()
        summary.add(values)
        return summary

    def metrics(self, name: str) -> dict[str, float | None]:
        empty = self.count == 0
        return {f"{name}_min": None if empty else self.low, f"{name}_max": None if empty else self.high,
                f"{name}_mean": None if empty else self.total / self.count}


@dataclass
class _ChunkResult:
    """What a worker made of one chunk, merged in chunk order: rows, capped rows, two value summaries (S2:
    λ_target, λ_realised; S3: μ, counts) and two per-bucket totals (S2: λ_target, λ_realised; S3: counts, μ), the
    output tables, and S3's events and histogram band."""

    rows: int
    capped: int
    summary: _Summary
    other_summary: _Summary
    totals: diagnostics.BucketTotals
    other_totals: diagnostics.BucketTotals
    tables: list[pa.Table]
    events: int = 0
    band: diagnostics.HistogramBand | None = None


def _s2_body(run: StateRun, chunk_entities: int | None) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0, "scenario_count_failed": 1}
    with run.timed("load"):
        identity, g = run.open_gate()
        lgcp = latent.parse_lgcp_policy(g.policy("arrival_lgcp_config_5B"))
        rng = ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        time_grid, groups = read_s1(store, identity, "S2")
        surface = surface_path(g, identity)
        params = latent.group_parameters(groups, lgcp)
        domain = entity_grid.build_domain(groups, time_grid.height, tuple(params["group_id"].to_list()))
    h = domain.buckets
    run.metrics |= {"total_bucket_count": h, "total_entity_bucket_count": domain.rows,
                    "total_entity_count": domain.size, "total_group_count": len(domain.group_ids),
                    "total_latent_values": len(domain.group_ids) * h, "latent_model_id": lgcp.latent_model_id}
    with run.timed("latent"):
        field = latent.sample_latent(params, lgcp, h, manifest_fingerprint=identity.manifest_fingerprint,
                                     parameter_hash=identity.parameter_hash, seed=identity.seed,
                                     scenario_id=identity.scenario_id, domain_sep=rng.domain_sep,
                                     coupled=rng.coupled)
        trace = ledger.trace_frame(field.events, field.draws, field.blocks, append_events=rng.trace_append_events)
    tokens = identity.tokens()
    paths = {d: store.path(d, **tokens) for d in ("s2_realised_intensity_5B", "s2_latent_field_5B",
                                                  "rng_event_arrival_lgcp_gaussian", "rng_trace_arrival_lgcp_gaussian")}
    target_stats, realised_stats = _Summary(), _Summary()
    target_totals, realised_totals = diagnostics.BucketTotals(h), diagnostics.BucketTotals(h)
    capped = 0
    columns = [*grouping.ENTITY_KEYS, "local_horizon_bucket_index", "lambda_local_scenario", "manifest_fingerprint",
               "scenario_id"]
    where = str(surface)
    specs = [("s2_realised_intensity_5B", "REALISED_SCHEMA_INVALID"),
             ("rng_event_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH"),
             ("rng_trace_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH")]
    if lgcp.emit_latent_field:
        specs.append(("s2_latent_field_5B", "LATENT_SCHEMA_INVALID"))
    with run.timed("stream"), store.transaction("S2") as tx, \
            streamed_outputs(tx, store, [(d, paths[d], error_code("S2", category)) for d, category in specs]) as outputs:
        writer, events_out, trace_out, *field_out = outputs
        events_out.write(_latent_events_table(field, domain, identity, rng))
        trace_out.write(_trace_table(trace, identity, rng, latent.FAMILY_ID))
        for out in field_out:
            out.write(_latent_field_table(field, domain, identity))
        chunks = stream_chunks(
            store, "merchant_zone_scenario_local_5A", surface, columns, domain,
            chunk_entities or default_chunk_entities(h), bucket_column="local_horizon_bucket_index",
            group_column=None, identity=identity_values(identity, columns),
            identity_code=error_code("S2", "DOMAIN_ALIGN_FAILED"), state="S2")

        def realise_chunk(item: tuple[int, int, pa.Table]) -> _ChunkResult:
            """Validate, realise, summarise and tabulate one chunk (on a worker thread)."""
            e0, e1, chunk = item
            target = chunk["lambda_local_scenario"].to_numpy()
            error = entity_grid.numeric_error(target, domain, e0, "local_horizon_bucket_index",
                                              column="lambda_local_scenario",
                                              code=error_code("S2", "REALISED_NUMERIC_INVALID"), where=where)
            if error is not None:
                raise error
            factor, realised = latent.realise(target, domain.entity_group[e0:e1], field, lgcp.lambda_max)
            capped = 0 if lgcp.lambda_max is None else int((target * factor > lgcp.lambda_max).sum())
            error = entity_grid.numeric_error(realised, domain, e0, "local_horizon_bucket_index",
                                              column="lambda_realised",
                                              code=error_code("S2", "REALISED_NUMERIC_INVALID"), where=where)
            if error is not None:
                raise error
            result = _ChunkResult(len(target), capped, _Summary.of(target), _Summary.of(realised),
                                  diagnostics.BucketTotals(h), diagnostics.BucketTotals(h),
                                  [_realised_table(domain, e0, e1, identity, lgcp, target, factor, realised)])
            result.totals.add_blocks(target)
            result.other_totals.add_blocks(realised)
            return result

        for result in parallel.ordered(realise_chunk, chunks):
            capped += result.capped
            target_stats.merge(result.summary)
            realised_stats.merge(result.other_summary)
            target_totals.merge(result.totals)
            realised_totals.merge(result.other_totals)
            writer.write(result.tables[0])
            run.advance(result.rows, domain.rows)
    run.diagnostics |= {
        "lambda_target_per_bucket": target_totals.totals, "lambda_realised_per_bucket": realised_totals.totals,
        "top_group_factors": diagnostics.largest_groups(domain.group_ids, domain.entity_group, field.factor),
    }
    run.metrics |= _latent_metrics(field, lgcp, trace.height) | {
        "scenario_count_succeeded": 1, "scenario_count_failed": 0, "lambda_max_capped_rows": capped,
        **target_stats.metrics("lambda_target"), **realised_stats.metrics("lambda_realised"),
        "chunk_entities": chunk_entities or default_chunk_entities(h),
    }
    return tx.published


def _latent_metrics(field: latent.LatentField, lgcp: latent.LgcpPolicy, trace_appends: int) -> dict:
    """The S2 run-report metrics of the latent field: RNG totals, the embedding, ξ and clipping."""
    factor_stats = _Summary()
    factor_stats.add(field.factor.ravel())
    return {
        "latent_field_rows_written": field.factor.size if lgcp.emit_latent_field else 0,
        "latent_rng_event_count": field.events, "latent_rng_total_draws": int(field.draws.sum()),
        "latent_rng_total_blocks": int(field.blocks.sum()), "rng_trace_appends": trace_appends,
        **field.embedding_metrics(),
        **factor_stats.metrics("lambda_random_component"),
        "latent_gaussian_mean": float(field.latent.mean()), "latent_gaussian_var": float(field.latent.var()),
        "latent_values_clipped": int(field.clipped.sum()),
        "latent_values_clipped_low": int((field.clipped & (field.factor == lgcp.min_factor)).sum()),
        "latent_values_clipped_high": int((field.clipped & (field.factor == lgcp.max_factor)).sum()),
    }


def run_s2(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None,
           chunk_entities: int | None = None, parameter_hash: str | None = None,
           progress: Progress | None = None, reuse: bool = False) -> StateResult:
    """S2: sample one latent field per group and publish λ_realised, the field and the RNG log (per seed)."""
    return execute_state(store, "S2", seed=seed, scenario_id=scenario_id, run_id=run_id,
                         body=lambda run: _s2_body(run, chunk_entities), parameter_hash=parameter_hash,
                         progress=progress, reuse=reuse)


# ---- S3: bucket counts ---------------------------------------------------------------------------------------------

_S2_COLUMNS = ["manifest_fingerprint", "parameter_hash", "seed", "scenario_id", *grouping.ENTITY_KEYS, "bucket_index",
               "group_id", "lambda_realised"]


def _counts_table(domain: entity_grid.Domain, e0: int, e1: int, identity: Identity, policy: counts.CountPolicy,
                  mu: np.ndarray, draws: counts.CountDraws) -> pa.Table:
    """s3_bucket_counts_5B rows of entities e0..e1; μ is λ_realised itself (never rescaled)."""
    n = len(mu)
    cols = identity_columns(identity, n) | entity_grid.entity_columns(domain, e0, e1, with_group=True)
    cols |= {"lambda_realised": pa.array(mu), "mu": pa.array(mu), "count_N": pa.array(draws.count),
             "count_law_id": entity_grid.constant(policy.law, n), "count_capped": pa.array(draws.capped)}
    return pa.table(cols)


def _count_events_table(domain: entity_grid.Domain, e0: int, e1: int, identity: Identity, policy: counts.CountPolicy,
                        rng: ledger.RngPolicy, draws: counts.CountDraws) -> pa.Table:
    """rng_event_arrival_bucket_count rows: one per drawing (entity, bucket), in writer order."""
    n = len(draws.key)
    fid = counts.FAMILY_ID
    cols = {"module": entity_grid.constant(rng.module(fid), n), "substream_label": entity_grid.constant(rng.substream(fid), n),
            "family_id": entity_grid.constant(fid, n)}
    cols |= identity_columns(identity, n)
    cols |= entity_grid.entity_columns(domain, e0, e1, with_group=False, rows=draws.event_rows)
    cols |= {
        "rng_key": pa.array(draws.key),
        "rng_counter_before_lo": pa.array(draws.before_lo),
        "rng_counter_before_hi": pa.array(draws.before_hi),
        "rng_counter_after_lo": pa.array(draws.after_lo),
        "rng_counter_after_hi": pa.array(draws.after_hi),
        "draws": entity_grid.filled(policy.draws_per_event, n, pa.int64()),
        "blocks": entity_grid.filled(1, n, pa.int64()),
    }
    return pa.table(cols)


def _s3_body(run: StateRun, chunk_entities: int | None) -> Sequence[Published]:
    store = run.store
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0, "scenario_count_failed": 1}
    with run.timed("load"):
        identity, g = run.open_gate()
        policy = counts.parse_count_policy(g.policy("arrival_count_config_5B"))
        rng = ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        time_grid, groups = read_s1(store, identity, "S3")
        domain = entity_grid.build_domain(groups, time_grid.height, tuple(groups["group_id"].unique().sort().to_list()))
        kappa = counts.entity_kappa(groups, policy) if policy.law == "nb2" else None
        source = store.path("s2_realised_intensity_5B", **identity.tokens())
        if not source.is_file():
            raise ArrivalError(error_code("S3", "S2_OUTPUT_MISSING"), f"s2_realised_intensity_5B is missing at {source}; run S2 "
                                                          f"for seed {identity.seed} first", file=str(source))
    h = domain.buckets
    step = chunk_entities or default_chunk_entities(h)
    run.metrics |= {"total_bucket_count": h, "total_entity_bucket_count": domain.rows, "total_entity_count": domain.size,
                    "total_group_count": len(domain.group_ids), "count_law_id": policy.law, "chunk_entities": step}
    tokens = identity.tokens()
    paths = {d: store.path(d, **tokens) for d in ("s3_bucket_counts_5B", "rng_event_arrival_bucket_count",
                                                  "rng_trace_arrival_bucket_count")}
    mu_stats, count_stats = _Summary(), _Summary()
    count_totals, mu_totals = diagnostics.BucketTotals(h), diagnostics.BucketTotals(h)
    band = diagnostics.HistogramBand(*diagnostics.HISTOGRAM_BAND)
    events = capped = 0
    specs = [(d, paths[d], error_code("S3", category)) for d, category in (
        ("s3_bucket_counts_5B", "COUNTS_SCHEMA_INVALID"), ("rng_event_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"),
        ("rng_trace_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"))]
    with run.timed("stream"), store.transaction("S3") as tx, streamed_outputs(tx, store, specs) as outputs:
        count_out, event_out, trace_out = outputs
        if records.proves(store, identity, source, ("S1", "S2")):
            chunks = stream_proven(source, ["lambda_realised"], domain, step)
        else:
            chunks = stream_chunks(
                store, "s2_realised_intensity_5B", source, _S2_COLUMNS, domain, step, bucket_column="bucket_index",
                group_column="group_id", identity=identity_values(identity, _S2_COLUMNS),
                identity_code=error_code("S3", "S2_OUTPUT_MISSING"), state="S3")

        def count_chunk(item: tuple[int, int, pa.Table]) -> _ChunkResult:
            """Validate, draw, summarise and tabulate one chunk (on a worker thread)."""
            e0, e1, chunk = item
            mu = chunk["lambda_realised"].to_numpy()
            error = entity_grid.numeric_error(mu, domain, e0, "bucket_index", column="lambda_realised",
                                              code=error_code("S3", "S2_OUTPUT_MISSING"), where=str(source)) or \
                entity_grid.numeric_error(mu, domain, e0, "bucket_index", column="lambda_realised", where=str(source),
                                          code=error_code("S3", "COUNTS_NUMERIC_INVALID"),
                                          upper=variates.POISSON_LAMBDA_MAX)
            if error is not None:
                raise error
            bases = streams.stream_bases(counts.FAMILY_ID, identity.manifest_fingerprint, identity.parameter_hash,
                                         identity.seed, identity.scenario_id,
                                         counts.domain_keys(domain.entities.slice(e0, e1 - e0)),
                                         domain_sep=rng.domain_sep, coupled=rng.coupled)
            draws = counts.draw_counts(mu, np.repeat(np.arange(e1 - e0), h),
                                       np.tile(np.arange(h, dtype=np.int32), e1 - e0), bases,
                                       None if kappa is None else kappa[e0:e1], policy)
            result = _ChunkResult(len(mu), int(draws.capped.sum()), _Summary.of(mu),
                                  _Summary.of(draws.count.astype(np.float64)), diagnostics.BucketTotals(h),
                                  diagnostics.BucketTotals(h),
                                  [_counts_table(domain, e0, e1, identity, policy, mu, draws),
                                   _count_events_table(domain, e0, e1, identity, policy, rng, draws)],
                                  events=len(draws.key), band=diagnostics.HistogramBand(*diagnostics.HISTOGRAM_BAND))
            result.totals.add_blocks(draws.count)
            result.other_totals.add_blocks(mu)
            result.band.add(mu, draws.count, None if kappa is None else np.repeat(kappa[e0:e1], h))
            return result

        for result in parallel.ordered(count_chunk, chunks):
            events += result.events
            capped += result.capped
            mu_stats.merge(result.summary)
            count_stats.merge(result.other_summary)
            count_totals.merge(result.totals)
            mu_totals.merge(result.other_totals)
            band.merge(result.band)
            count_out.write(result.tables[0])
            run.advance(result.rows, domain.rows)
            event_out.write(result.tables[1])
        trace = ledger.trace_frame(events, policy.draws_per_event, 1, append_events=rng.trace_append_events)
        trace_out.write(_trace_table(trace, identity, rng, counts.FAMILY_ID))
    run.diagnostics |= {"counts_per_bucket": count_totals.totals, "mu_per_bucket": mu_totals.totals,
                        "count_histogram": band.histogram()}
    run.metrics |= {
        "scenario_count_succeeded": 1, "scenario_count_failed": 0,
        "count_rng_event_count": events, "count_rng_total_draws": events * policy.draws_per_event,
        "count_rng_total_blocks": events, "rng_trace_appends": trace.height,
        "zero_intensity_rows": domain.rows - events, "capped_count_rows": capped,
        **mu_stats.metrics("lambda_realised"), **count_stats.metrics("count_N"),
        "count_N_total": round(count_stats.total),
    }
    return tx.published


def run_s3(store: Store, *, seed: int | str, scenario_id: str, run_id: str | None = None,
           chunk_entities: int | None = None, parameter_hash: str | None = None,
           progress: Progress | None = None, reuse: bool = False) -> StateResult:
    """S3: draw a count per (entity, bucket) from λ_realised and publish the counts and their RNG log (per seed)."""
    return execute_state(store, "S3", seed=seed, scenario_id=scenario_id, run_id=run_id,
                         body=lambda run: _s3_body(run, chunk_entities), parameter_hash=parameter_hash,
                         progress=progress, reuse=reuse)



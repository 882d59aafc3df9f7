"""S2 (latent intensity) and S3 (bucket counts): one streaming skeleton (`stream_state`) with two bodies (`_Latent`,
`_Counts`), each streaming its input in chunks of whole entities."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from .. import counts, diagnostics, entity_grid, grouping, latent, parallel
from ..errors import ArrivalError, error_code
from ..gate import Gate
from ..identity import Identity, PartitionKey
from ..rng import ledger, streams, variates
from ..store import Store
from . import records
from .shell import DEFAULT_OPTIONS, RunOptions, StateResult, execute_state
from .stream_state import Partition, Summary, stream_state
from .streaming import (
    identity_columns,
    identity_values,
    stream_chunks,
    stream_proven,
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


_SURFACE_COLUMNS = [*grouping.ENTITY_KEYS, "local_horizon_bucket_index", "lambda_local_scenario", "manifest_fingerprint",
                    "scenario_id"]


@dataclass
class _LatentChunk:
    """What a worker made of one chunk of the λ surface (`_Latent.compute`)."""

    capped: int
    target_stats: Summary
    realised_stats: Summary
    target_totals: diagnostics.BucketTotals
    realised_totals: diagnostics.BucketTotals
    table: pa.Table
    inputs: pa.Table  # per row, what its checks compare it with: the sealed λ_target it was made from


class _Latent:
    """S2's body: one latent field per group, then λ_realised = λ_target × ξ per streamed chunk of the λ surface."""

    def __init__(self, g: Gate) -> None:
        self.lgcp = latent.parse_lgcp_policy(g.policy("arrival_lgcp_config_5B"))
        self.outputs = (("s2_realised_intensity_5B", "REALISED_SCHEMA_INVALID"),
                        ("rng_event_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH"),
                        ("rng_trace_arrival_lgcp_gaussian", "RNG_ACCOUNTING_MISMATCH"))
        if self.lgcp.emit_latent_field:
            self.outputs += (("s2_latent_field_5B", "LATENT_SCHEMA_INVALID"),)

    def load(self, part: Partition) -> dict:
        self.part = part
        self.surface = surface_path(part.gate, part.identity)
        self.params = latent.group_parameters(part.groups, self.lgcp)
        h = part.domain.buckets
        self.target_stats, self.realised_stats = Summary(), Summary()
        self.target_totals, self.realised_totals = diagnostics.BucketTotals(h), diagnostics.BucketTotals(h)
        self.capped = 0
        return {"total_latent_values": len(part.domain.group_ids) * h, "latent_model_id": self.lgcp.latent_model_id}

    def prepare(self) -> None:
        identity, rng = self.part.identity, self.part.rng
        with self.part.run.timed("latent"):
            self.field = latent.sample_latent(self.params, self.lgcp, self.part.domain.buckets,
                                              manifest_fingerprint=identity.manifest_fingerprint,
                                              parameter_hash=identity.parameter_hash, seed=identity.seed,
                                              scenario_id=identity.scenario_id, domain_sep=rng.domain_sep,
                                              coupled=rng.coupled)
            self.trace = ledger.trace_frame(self.field.events, self.field.draws, self.field.blocks,
                                            append_events=rng.trace_append_events)

    def drawn(self) -> dict[str, np.ndarray]:
        return {"factor": self.field.factor}  # ξ per (group, bucket), as applied to every entity of the group

    def begin(self, outputs: list) -> None:
        _, events_out, trace_out, *field_out = outputs
        field, part = self.field, self.part
        # Made on the outputs' own threads and summarised on the pool while the stream starts.
        events_out.write(lambda: _latent_events_table(field, part.domain, part.identity, part.rng))
        trace_out.write(lambda: _trace_table(self.trace, part.identity, part.rng, latent.FAMILY_ID))
        for out in field_out:
            out.write(lambda: _latent_field_table(field, part.domain, part.identity))
        self.field_metrics = parallel.soon(lambda: _latent_metrics(field, self.lgcp, self.trace.height) | {
            "top_group_factors": diagnostics.largest_groups(part.domain.group_ids, part.domain.entity_group,
                                                            field.factor)})

    def chunks(self) -> Iterator[tuple[int, int, pa.Table]]:
        part = self.part
        return stream_chunks(
            part.run.store, "merchant_zone_scenario_local_5A", self.surface, _SURFACE_COLUMNS, part.domain, part.step,
            bucket_column="local_horizon_bucket_index", group_column=None,
            identity=identity_values(part.identity, _SURFACE_COLUMNS),
            identity_code=error_code("S2", "DOMAIN_ALIGN_FAILED"), state="S2")

    def compute(self, e0: int, e1: int, chunk: pa.Table) -> _LatentChunk:
        domain, lgcp, where = self.part.domain, self.lgcp, str(self.surface)
        target = chunk["lambda_local_scenario"].to_numpy()
        error = entity_grid.numeric_error(target, domain, e0, "local_horizon_bucket_index", column="lambda_local_scenario",
                                          code=error_code("S2", "REALISED_NUMERIC_INVALID"), where=where)
        if error is not None:
            raise error
        factor, realised = latent.realise(target, domain.entity_group[e0:e1], self.field, lgcp.lambda_max)
        capped = 0 if lgcp.lambda_max is None else int((target * factor > lgcp.lambda_max).sum())
        error = entity_grid.numeric_error(realised, domain, e0, "local_horizon_bucket_index", column="lambda_realised",
                                          code=error_code("S2", "REALISED_NUMERIC_INVALID"), where=where)
        if error is not None:
            raise error
        result = _LatentChunk(capped, Summary.of(target), Summary.of(realised), diagnostics.BucketTotals(domain.buckets),
                              diagnostics.BucketTotals(domain.buckets),
                              _realised_table(domain, e0, e1, self.part.identity, lgcp, target, factor, realised),
                              pa.table({"lambda_target": target}))
        result.target_totals.add_blocks(target)
        result.realised_totals.add_blocks(realised)
        return result

    def take(self, result: _LatentChunk, outputs: list) -> None:
        self.capped += result.capped
        self.target_stats.merge(result.target_stats)
        self.realised_stats.merge(result.realised_stats)
        self.target_totals.merge(result.target_totals)
        self.realised_totals.merge(result.realised_totals)
        outputs[0].write(result.table, result.inputs)

    def end(self, outputs: list) -> dict:
        metrics = self.field_metrics()
        self.part.run.diagnostics |= {
            "lambda_target_per_bucket": self.target_totals.totals,
            "lambda_realised_per_bucket": self.realised_totals.totals,
            "top_group_factors": metrics.pop("top_group_factors"),
        }
        return metrics | {
            "lambda_max_capped_rows": self.capped, **self.target_stats.metrics("lambda_target"),
            **self.realised_stats.metrics("lambda_realised"),
        }


def _latent_metrics(field: latent.LatentField, lgcp: latent.LgcpPolicy, trace_appends: int) -> dict:
    """The S2 run-report metrics of the latent field: RNG totals, the embedding, ξ and clipping."""
    factor_stats = Summary()
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


def run_s2(store: Store, key: PartitionKey, options: RunOptions = DEFAULT_OPTIONS) -> StateResult:
    """S2: sample one latent field per group and publish λ_realised, the field and the RNG log (per seed)."""
    return execute_state(store, "S2", key, options, lambda run: stream_state(run, options.chunk_entities, _Latent,
                                                                           options.observe))


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


@dataclass
class _CountChunk:
    """What a worker made of one chunk of λ_realised (`_Counts.compute`)."""

    events: int
    capped: int
    mu_stats: Summary
    count_stats: Summary
    count_totals: diagnostics.BucketTotals
    mu_totals: diagnostics.BucketTotals
    variance_totals: diagnostics.BucketTotals
    band: diagnostics.HistogramBand
    counts: pa.Table
    events_table: pa.Table
    count_inputs: pa.Table  # per count row: S2's λ_realised it was drawn from, and the count drawn
    event_inputs: pa.Table  # per event: the count row it logs (in the file), its μ and its count


class _Counts:
    """S3's body: a count per (entity, bucket) drawn from λ_realised per streamed chunk of S2's output."""

    outputs = (("s3_bucket_counts_5B", "COUNTS_SCHEMA_INVALID"),
               ("rng_event_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"),
               ("rng_trace_arrival_bucket_count", "RNG_ACCOUNTING_MISMATCH"))

    def __init__(self, g: Gate) -> None:
        self.policy = counts.parse_count_policy(g.policy("arrival_count_config_5B"))

    def load(self, part: Partition) -> dict:
        self.part, identity, policy = part, part.identity, self.policy
        self.kappa = counts.entity_kappa(part.groups, policy) if policy.law == "nb2" else None
        self.source = part.run.store.path("s2_realised_intensity_5B", **identity.tokens())
        if not self.source.is_file():
            raise ArrivalError(error_code("S3", "S2_OUTPUT_MISSING"), f"s2_realised_intensity_5B is missing at "
                                                                      f"{self.source}; run S2 for seed {identity.seed} "
                                                                      f"first", file=str(self.source))
        h = part.domain.buckets
        self.mu_stats, self.count_stats = Summary(), Summary()
        self.count_totals, self.mu_totals, self.variance_totals = (diagnostics.BucketTotals(h) for _ in range(3))
        self.band = diagnostics.HistogramBand(*diagnostics.HISTOGRAM_BAND)
        self.events = self.capped = 0
        return {"count_law_id": policy.law}

    def prepare(self) -> None:
        pass  # every draw is per chunk

    def drawn(self) -> dict[str, np.ndarray]:
        return {}

    def begin(self, outputs: list) -> None:
        pass  # the trace is written once the events are counted

    def chunks(self) -> Iterator[tuple[int, int, pa.Table]]:
        part = self.part
        if records.proves(part.run.store, part.identity, self.source, ("S1", "S2")):
            return stream_proven(self.source, ["lambda_realised"], part.domain, part.step)
        return stream_chunks(
            part.run.store, "s2_realised_intensity_5B", self.source, _S2_COLUMNS, part.domain, part.step,
            bucket_column="bucket_index", group_column="group_id", identity=identity_values(part.identity, _S2_COLUMNS),
            identity_code=error_code("S3", "S2_OUTPUT_MISSING"), state="S3")

    def compute(self, e0: int, e1: int, chunk: pa.Table) -> _CountChunk:
        part, policy, kappa, source = self.part, self.policy, self.kappa, self.source
        domain, identity, h = part.domain, part.identity, part.domain.buckets
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
                                     domain_sep=part.rng.domain_sep, coupled=part.rng.coupled)
        draws = counts.draw_counts(mu, np.repeat(np.arange(e1 - e0), h),
                                   np.tile(np.arange(h, dtype=np.int32), e1 - e0), bases,
                                   None if kappa is None else kappa[e0:e1], policy)
        result = _CountChunk(len(draws.key), int(draws.capped.sum()), Summary.of(mu),
                             Summary.of(draws.count.astype(np.float64)), diagnostics.BucketTotals(h),
                             diagnostics.BucketTotals(h), diagnostics.BucketTotals(h),
                             diagnostics.HistogramBand(*diagnostics.HISTOGRAM_BAND),
                             _counts_table(domain, e0, e1, identity, policy, mu, draws),
                             _count_events_table(domain, e0, e1, identity, policy, part.rng, draws),
                             pa.table({"lambda_input": mu, "count_drawn": draws.count}),
                             pa.table({"count_row": e0 * h + draws.event_rows.astype(np.int64),
                                       "mu": mu[draws.event_rows], "count_N": draws.count[draws.event_rows]}))
        result.count_totals.add_blocks(draws.count)
        result.mu_totals.add_blocks(mu)
        row_kappa = None if kappa is None else np.repeat(kappa[e0:e1], h)
        result.variance_totals.add_blocks(diagnostics.count_variance(mu, row_kappa))
        result.band.add(mu, draws.count, row_kappa)
        return result

    def take(self, result: _CountChunk, outputs: list) -> None:
        self.events += result.events
        self.capped += result.capped
        self.mu_stats.merge(result.mu_stats)
        self.count_stats.merge(result.count_stats)
        self.count_totals.merge(result.count_totals)
        self.mu_totals.merge(result.mu_totals)
        self.variance_totals.merge(result.variance_totals)
        self.band.merge(result.band)
        count_out, event_out, _ = outputs
        count_out.write(result.counts, result.count_inputs)
        event_out.write(result.events_table, result.event_inputs)

    def end(self, outputs: list) -> dict:
        part, policy, events = self.part, self.policy, self.events
        trace = ledger.trace_frame(events, policy.draws_per_event, 1, append_events=part.rng.trace_append_events)
        outputs[2].write(_trace_table(trace, part.identity, part.rng, counts.FAMILY_ID))
        part.run.diagnostics |= {"counts_per_bucket": self.count_totals.totals, "mu_per_bucket": self.mu_totals.totals,
                                 "variance_per_bucket": self.variance_totals.totals,
                                 "count_histogram": self.band.histogram()}
        return {
            "count_rng_event_count": events, "count_rng_total_draws": events * policy.draws_per_event,
            "count_rng_total_blocks": events, "rng_trace_appends": trace.height,
            "zero_intensity_rows": part.domain.rows - events, "capped_count_rows": self.capped,
            **self.mu_stats.metrics("lambda_realised"), **self.count_stats.metrics("count_N"),
            "count_N_total": round(self.count_stats.total),
        }


def run_s3(store: Store, key: PartitionKey, options: RunOptions = DEFAULT_OPTIONS) -> StateResult:
    """S3: draw a count per (entity, bucket) from λ_realised and publish the counts and their RNG log (per seed)."""
    return execute_state(store, "S3", key, options, lambda run: stream_state(run, options.chunk_entities, _Counts,
                                                                           options.observe))



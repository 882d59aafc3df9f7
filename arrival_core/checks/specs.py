"""The check catalogue: names, severities and descriptions of every output dataset's checks."""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VALID = "schema_valid"
PRIMARY_KEY_UNIQUE = "primary_key_unique"
DOMAIN_COMPLETE = "domain_complete"
NUMERIC_VALID = "numeric_valid"
GATE_CONSISTENT = "gate_consistent"
RNG_ACCOUNTING = "rng_accounting"
RNG_REPLAY = "rng_replay"
TRACE_SCHEMA_VALID = "trace_schema_valid"
TRACE_CONSISTENT = "trace_consistent"
LATENT_CORRIDOR = "latent_corridor"
COUNT_CORRIDOR = "count_corridor"

REPLAY_MODES = ("sample", "full")


@dataclass(frozen=True)
class CheckSpec:
    """One check of one dataset: ERROR checks that block downstream assets, or WARN corridors."""

    name: str
    dataset_id: str
    severity: str  # "ERROR" | "WARN"
    blocking: bool
    description: str


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check for one partition; metadata is JSON-able and carries a Markdown `table_md`."""

    name: str
    dataset_id: str
    passed: bool
    severity: str
    summary: str
    metadata: dict


def _error(name: str, dataset_id: str, description: str) -> CheckSpec:
    return CheckSpec(name, dataset_id, "ERROR", True, description)


def _table_specs(dataset_id: str, *extra: CheckSpec) -> tuple[CheckSpec, ...]:
    return (
        _error(SCHEMA_VALID, dataset_id, "Every row satisfies the table contract (columns, dtypes, nulls, enums, "
                                         "ranges, patterns), checked in full."),
        _error(PRIMARY_KEY_UNIQUE, dataset_id, "Primary key unique and rows in writer order, across the whole file."),
        *extra,
    )


def _trace_specs(dataset_id: str) -> tuple[CheckSpec, ...]:
    return (
        _error(TRACE_SCHEMA_VALID, dataset_id, "The RNG trace satisfies its contract, keyed by append_index."),
        _error(TRACE_CONSISTENT, dataset_id, "Appends are full batches in writer order, running totals add up, and "
                                             "the totals equal the event log's."),
    )


_ACCOUNTING = ("Events ↔ trace ↔ outputs ↔ audit: the event log's events, draws and blocks equal the trace totals, "
               "what the outputs imply under the policies, and the audit record when present.")
_REPLAY = ("Re-derives RNG events with the independent reference of the law (checks/reference.py: its own "
           "stream derivation and Philox2x64-10) for replay_sample_events of them, and under `arrival verify` "
           "every one with the engine's sampler as well, and compares them exactly.")

CHECKS: tuple[CheckSpec, ...] = (
    _error(SCHEMA_VALID, "sealed_inputs_5B", "sealed_inputs_5B validates against its schema."),
    _error(PRIMARY_KEY_UNIQUE, "sealed_inputs_5B", "(owner_segment, artifact_id) unique and sorted."),
    _error(GATE_CONSISTENT, "sealed_inputs_5B", "The receipt's sealed_inputs_digest equals the recomputed digest and "
                                                "every sealed policy still has its sealed sha256."),
    _error(SCHEMA_VALID, "s0_gate_receipt_5B", "s0_gate_receipt_5B validates against its schema."),
    _error(GATE_CONSISTENT, "s0_gate_receipt_5B", "Every upstream segment PASSed and the receipt names this "
                                                  "parameter_hash, fingerprint and scenario."),
    *_table_specs("s1_time_grid_5B", _error(DOMAIN_COMPLETE, "s1_time_grid_5B",
                                            "Buckets 0..H-1, contiguous, spanning the manifest horizon exactly.")),
    *_table_specs("s1_grouping_5B", _error(DOMAIN_COMPLETE, "s1_grouping_5B",
                                           "Exactly one row per distinct entity of the scenario's λ surface.")),
    *_table_specs(
        "s2_realised_intensity_5B",
        _error(DOMAIN_COMPLETE, "s2_realised_intensity_5B", "Exactly grid × grouping: every grouped entity once per "
                                                            "bucket, with the group S1 assigned."),
        _error(NUMERIC_VALID, "s2_realised_intensity_5B", "λ_baseline equals the sealed λ_target, ξ lies within the "
                                                          "clipping factors and equals the latent field, and "
                                                          "λ_realised = min(λ_baseline·ξ, lambda_max) exactly."),
        _error(RNG_REPLAY, "s2_realised_intensity_5B", "ξ of the rows of replayed groups equals the independent "
                                                       "reference's derivation of their latent fields. " + _REPLAY),
    ),
    *_table_specs(
        "s2_latent_field_5B",
        _error(DOMAIN_COMPLETE, "s2_latent_field_5B", "Exactly one row per (group, bucket)."),
        _error(NUMERIC_VALID, "s2_latent_field_5B", "σ and length scale follow the LGCP policy per group, "
                                                    "ξ = clip(exp(Z − σ²/2)) and `clipped` marks exactly the "
                                                    "clipped factors."),
        _error(RNG_REPLAY, "s2_latent_field_5B", "Latent values of replayed groups equal the independent "
                                                 "reference's derivation. " + _REPLAY),
        CheckSpec(LATENT_CORRIDOR, "s2_latent_field_5B", "WARN", False,
                  "Pooled latent variance ≈ σ² and lag-1 autocorrelation ≈ φ (OU) or 0 (iid), or a stationary "
                  "field's eigen-projections iid N(0, 1) (variance, spectral tilt), within rigorous "
                  "Laurent–Massart / martingale / sub-gamma bounds; false-alarm probability ≤ 1e-6."),
    ),
    *_table_specs(
        "rng_event_arrival_lgcp_gaussian",
        _error(RNG_ACCOUNTING, "rng_event_arrival_lgcp_gaussian", _ACCOUNTING + " One event per group: 2H draws "
                                                                                "and H blocks (OU, iid), 4M and 2M "
                                                                                "(a stationary kernel)."),
        _error(RNG_REPLAY, "rng_event_arrival_lgcp_gaussian", "Key and counters of the events equal the group's "
                                                              "stream base and base + its blocks. " + _REPLAY),
    ),
    *_trace_specs("rng_trace_arrival_lgcp_gaussian"),
    *_table_specs(
        "s3_bucket_counts_5B",
        _error(DOMAIN_COMPLETE, "s3_bucket_counts_5B", "Exactly the rows of s2_realised_intensity_5B, in order, with "
                                                       "the same λ_realised."),
        _error(NUMERIC_VALID, "s3_bucket_counts_5B", "μ = λ_realised, 0 ≤ N ≤ max_count_per_bucket, N = 0 where "
                                                     "μ ≤ lambda_zero_eps, count_law_id is the policy's law."),
        _error(RNG_REPLAY, "s3_bucket_counts_5B", "count_N of replayed rows equals the independent reference's "
                                                  "PoissonInv / GammaInv from its own stream derivation. " + _REPLAY),
        CheckSpec(COUNT_CORRIDOR, "s3_bucket_counts_5B", "WARN", False,
                  "Counts vs μ: the total, the dispersion and the capped rows within non-asymptotic bounds of the "
                  "law (Bernstein, Chernoff, Bernoulli statistics with exact probabilities); false-alarm "
                  "probability ≤ the configured false_alarm (1e-6)."),
    ),
    *_table_specs(
        "rng_event_arrival_bucket_count",
        _error(RNG_ACCOUNTING, "rng_event_arrival_bucket_count", _ACCOUNTING + " One event per count row with "
                                                                               "μ > lambda_zero_eps, same keys."),
        _error(RNG_REPLAY, "rng_event_arrival_bucket_count", "Key and counters equal the entity's stream base + "
                                                             "bucket_index (and + 1 after). " + _REPLAY),
    ),
    *_trace_specs("rng_trace_arrival_bucket_count"),
    _error(SCHEMA_VALID, "rng_audit_log_5B", "rng_audit_log_5B validates against its schema."),
    _error(RNG_ACCOUNTING, "rng_audit_log_5B", "The audit record equals the one recomputed from the event logs and "
                                               "traces of both families."),
)


def checks_for(dataset_id: str) -> tuple[CheckSpec, ...]:
    """Every check of one dataset, in catalogue order."""
    return tuple(spec for spec in CHECKS if spec.dataset_id == dataset_id)

"""Checks of every 5B output, shared by the Dagster asset checks and `arrival verify`.

`evaluate` reads a dataset once (in row slices, so memory stays bounded) plus what it must be compared against,
and returns one outcome per spec. Reads go through `pipeline`; the statistical corridors are pure functions
(`latent_corridor`, `count_corridor`) so tests can call them on arrays.
"""
from .counting import CountMoments, count_corridor
from .evaluation import evaluate, evaluate_datasets, evaluate_recorded, new_context, warmup_phases
from .intensity import latent_corridor

KNOWN = ("surface_entities", "family_ledgers")  # what a state reads that its checks take (`new_context(known=...)`)
from .rowgroups import StreamChecks
from .specs import (
    CHECKS,
    COUNT_CORRIDOR,
    DOMAIN_COMPLETE,
    GATE_CONSISTENT,
    LATENT_CORRIDOR,
    NUMERIC_VALID,
    PRIMARY_KEY_UNIQUE,
    REPLAY_MODES,
    RNG_ACCOUNTING,
    RNG_REPLAY,
    SCHEMA_VALID,
    TRACE_CONSISTENT,
    TRACE_SCHEMA_VALID,
    CheckOutcome,
    CheckSpec,
    checks_for,
)

__all__ = [
    "CHECKS",
    "COUNT_CORRIDOR",
    "DOMAIN_COMPLETE",
    "GATE_CONSISTENT",
    "LATENT_CORRIDOR",
    "NUMERIC_VALID",
    "PRIMARY_KEY_UNIQUE",
    "REPLAY_MODES",
    "RNG_ACCOUNTING",
    "RNG_REPLAY",
    "SCHEMA_VALID",
    "TRACE_CONSISTENT",
    "TRACE_SCHEMA_VALID",
    "CheckOutcome",
    "CheckSpec",
    "CountMoments",
    "StreamChecks",
    "checks_for",
    "count_corridor",
    "evaluate",
    "evaluate_datasets",
    "evaluate_recorded",
    "latent_corridor",
    "new_context",
    "warmup_phases",
]

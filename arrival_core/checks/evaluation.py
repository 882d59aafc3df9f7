"""`evaluate`: read a dataset once and return one outcome per check spec."""
from __future__ import annotations

from collections.abc import Callable

import polars as pl

from ..errors import ArrivalError
from ..identity import Identity
from ..store import Store
from .context import _Context, _outcome, _Result
from .counting import _audit_log, _count_events, _counts
from .intensity import _latent_events, _latent_field, _realised, _trace
from .plan import _grouping, _receipt, _sealed_inputs, _time_grid
from .specs import REPLAY_MODES, CheckOutcome, checks_for


def evaluate(store: Store, identity: Identity, dataset_id: str, *, replay: str = "sample") -> list[CheckOutcome]:
    """Run every check of one dataset for one partition; a dataset that cannot be read fails all its checks."""
    specs = checks_for(dataset_id)
    if not specs:
        raise ValueError(f"no checks are defined for dataset {dataset_id!r}")
    if replay not in REPLAY_MODES:
        raise ValueError(f"replay must be one of {REPLAY_MODES}, got {replay!r}")
    ctx = _Context(store, identity, replay, dataset_id)
    results: dict[str, _Result] = {}
    try:
        results = _EVALUATORS[dataset_id](ctx)
    except (ArrivalError, OSError, pl.exceptions.PolarsError) as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, ArrivalError) else f"cannot be read: {exc}"
        results = {}
        for spec in specs:
            results[spec.name] = _Result()
            results[spec.name].fail(reason)
    out = []
    for spec in specs:
        result = results.get(spec.name)
        if result is None:
            result = _Result()
            result.fail("not evaluated")
        out.append(_outcome(spec, result))
    return out



_EVALUATORS: dict[str, Callable[[_Context], dict[str, _Result]]] = {
    "sealed_inputs_5B": _sealed_inputs,
    "s0_gate_receipt_5B": _receipt,
    "s1_time_grid_5B": _time_grid,
    "s1_grouping_5B": _grouping,
    "s2_realised_intensity_5B": _realised,
    "s2_latent_field_5B": _latent_field,
    "rng_event_arrival_lgcp_gaussian": _latent_events,
    "rng_trace_arrival_lgcp_gaussian": lambda ctx: _trace(ctx, "rng_trace_arrival_lgcp_gaussian", 0),
    "s3_bucket_counts_5B": _counts,
    "rng_event_arrival_bucket_count": _count_events,
    "rng_trace_arrival_bucket_count": lambda ctx: _trace(ctx, "rng_trace_arrival_bucket_count", 1),
    "rng_audit_log_5B": _audit_log,
}

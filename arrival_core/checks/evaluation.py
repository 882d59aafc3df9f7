"""`evaluate`: read a dataset once and return one outcome per check spec."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import numpy as np
import polars as pl
import pyarrow as pa

from .. import grid_kernels, memory, parallel, pipeline, warmup
from ..encoding import jsonable
from ..errors import ArrivalError
from ..identity import Identity
from ..store import Store
from . import (
    count_kernels,
    count_row_kernels,
    event_kernels,
    intensity_kernels,
    latent_kernels,
    reference_loops,
)
from .compiled import PHASE
from .context import CheckContext, CheckResult, to_outcome
from .counting import check_audit_log
from .intensity import check_latent_events, check_trace
from .plan import check_grouping, check_receipt, check_sealed_inputs, check_time_grid
from .rowgroups import StreamChecks, check_stored
from .specs import REPLAY_MODES, CheckOutcome, checks_for


def evaluate(store: Store, identity: Identity, dataset_id: str, *, replay: str = "sample",
             shared: CheckContext | None = None) -> list[CheckOutcome]:
    """Run every check of one dataset for one partition; a dataset that cannot be read fails all its checks.
    `shared` (`new_context`) shares what the partition's datasets have in common (policies, grouping, the
    reference's replay) across several calls, so a state's step derives each of them once."""
    specs = checks_for(dataset_id)
    if not specs:
        raise ValueError(f"no checks are defined for dataset {dataset_id!r}")
    if replay not in REPLAY_MODES:
        raise ValueError(f"replay must be one of {REPLAY_MODES}, got {replay!r}")
    memory.keep_freed_memory()
    if shared is None or (shared.store, shared.identity, shared.replay) != (store, identity, replay):
        shared = new_context(store, identity, replay=replay)
    ctx = shared.view(dataset_id)
    return _outcomes(dataset_id, lambda: _EVALUATORS[dataset_id](ctx))


def _outcomes(dataset_id: str, results_of: Callable[[], dict[str, CheckResult]]) -> list[CheckOutcome]:
    """One outcome per check spec of a dataset from its results; a dataset that cannot be read fails them all."""
    specs = checks_for(dataset_id)
    results: dict[str, CheckResult] = {}
    try:
        results = results_of()
    except (ArrivalError, OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, ArrivalError) else f"cannot be read: {exc}"
        results = {}
        for spec in specs:
            results[spec.name] = CheckResult()
            results[spec.name].fail(reason)
    out = []
    for spec in specs:
        result = results.get(spec.name)
        if result is None:
            result = CheckResult()
            result.fail("not evaluated")
        out.append(to_outcome(spec, result))
    return out


def new_context(store: Store, identity: Identity, *, replay: str = "sample",
                known: Mapping[str, object] | None = None) -> CheckContext:
    """A context for evaluating several datasets of one partition (see `evaluate`), holding what is `known`
    already (a state's step: what the state read, by the name of the context's value, such as
    `surface_entities`)."""
    ctx = CheckContext(store, identity, replay)
    for name, value in (known or {}).items():
        ctx.derived.get(name, lambda value=value: value)
    return ctx


_EVALUATORS: dict[str, Callable[[CheckContext], dict[str, CheckResult]]] = {
    "sealed_inputs_5B": check_sealed_inputs,
    "s0_gate_receipt_5B": check_receipt,
    "s1_time_grid_5B": check_time_grid,
    "s1_grouping_5B": check_grouping,
    "s2_realised_intensity_5B": lambda ctx: check_stored(ctx, "s2_realised_intensity_5B"),
    "s2_latent_field_5B": lambda ctx: check_stored(ctx, "s2_latent_field_5B"),
    "rng_event_arrival_lgcp_gaussian": check_latent_events,
    "rng_trace_arrival_lgcp_gaussian": lambda ctx: check_trace(ctx, "rng_trace_arrival_lgcp_gaussian", 0),
    "s3_bucket_counts_5B": lambda ctx: check_stored(ctx, "s3_bucket_counts_5B"),
    "rng_event_arrival_bucket_count": lambda ctx: check_stored(ctx, "rng_event_arrival_bucket_count"),
    "rng_trace_arrival_bucket_count": lambda ctx: check_trace(ctx, "rng_trace_arrival_bucket_count", 1),
    "rng_audit_log_5B": check_audit_log,
}


def evaluate_recorded(store: Store, identity: Identity, dataset_id: str, *, state: str,
                      recall: bool, record: bool = True, shared: CheckContext | None = None
                      ) -> tuple[list[CheckOutcome], bool]:
    """A check step's outcomes (sampled replay): re-recorded from its check record when `recall` (the state's
    files were verified or recomputed in this run) and the record's basis, the partition's commit records up to
    `state`, still holds; else evaluated, and recorded on that basis when `record` and no ERROR check failed
    (a check-only run records nothing: it reports on the store without changing it). Returns
    (outcomes, recalled)."""
    basis = pipeline.check_basis(store, identity, upto=state)
    if recall and basis is not None:
        recorded = pipeline.recorded_outcomes(store, dataset_id, identity, basis,
                                              [spec.name for spec in checks_for(dataset_id)])
        if recorded is not None:
            return [CheckOutcome(**o) for o in recorded], True
    outcomes = evaluate(store, identity, dataset_id, replay="sample", shared=shared)
    _record(store, identity, dataset_id, basis if record else None, outcomes, state)
    return outcomes, False


def _record(store: Store, identity: Identity, dataset_id: str, basis: str | None, outcomes: list[CheckOutcome],
            state: str) -> None:
    """Record a dataset's outcomes on the basis of the partition's commit records (None: record nothing).

    A failed ERROR check may come from the moment (a policy edited meanwhile, an unreadable file), not from the
    files the basis pins: only outcomes without one are recorded, so a failure is always evaluated again."""
    if basis is not None and all(o.passed or o.severity != "ERROR" for o in outcomes):
        pipeline.write_check_record(store, dataset_id, identity, basis, [jsonable(asdict(o)) for o in outcomes],
                                    state=state)


def evaluate_datasets(store: Store, identity: Identity, dataset_ids: Sequence[str], *, state: str, recall: bool,
                      record: bool = True, shared: CheckContext | None = None, streamed: StreamChecks | None = None
                      ) -> list[tuple[list[CheckOutcome], bool]]:
    """`evaluate_recorded` of several datasets of one partition (a state's step), at once on the engine's threads:
    each dataset read once for all of its checks, what they share derived once (`shared`), and the results in
    the order of `dataset_ids` whatever the threads. A dataset `streamed` checked while its state streamed takes
    those outcomes (recorded like the others), and what the stream derived is shared."""
    done = streamed.streamed() if streamed is not None else ()
    if done:
        if streamed.ctx.identity != identity:
            raise ValueError(f"the stream's checks are of {streamed.ctx.identity}, not {identity}")
        shared = streamed.ctx
    shared = shared or new_context(store, identity)

    def one(dataset_id: str) -> tuple[list[CheckOutcome], bool]:
        if dataset_id in done:
            outcomes = _outcomes(dataset_id, lambda: streamed.results(dataset_id))
            basis = pipeline.check_basis(store, identity, upto=state) if record else None
            _record(store, identity, dataset_id, basis, outcomes, state)
            return outcomes, False
        return evaluate_recorded(store, identity, dataset_id, state=state, recall=recall, record=record,
                                 shared=shared)

    return list(parallel.ordered(one, dataset_ids, ahead=max(1, len(dataset_ids))))


def check_kernels() -> tuple:
    """The compiled kernels of the checks (the same for every law and model)."""
    return (count_kernels._moment_sums, count_row_kernels._count_mismatches, event_kernels._event_mismatches,
            intensity_kernels._realised_mismatches, latent_kernels._latent_mismatches, grid_kernels._misaligned,
            reference_loops.philox_each, reference_loops.libm_each)


def compile_check_kernels() -> None:
    """Call each of `check_kernels` through its wrapper (which fixes the argument types) on a few elements."""
    words = np.arange(1, 3, dtype=np.uint64)
    count_kernels.moment_sums(np.ones(2), np.ones(2, dtype=np.int64), None)
    count_row_kernels.count_mismatches(np.ones(2), np.ones(2), np.ones(2), np.ones(2, dtype=np.int64),
                                       np.zeros(2, dtype=bool), None, 1, 0.0)
    index = np.zeros(2, dtype=np.int64)
    coded = (np.zeros(2, dtype=np.int32),) * 2
    event_kernels.event_mismatches(index, 0, 2, words, (index.astype(np.int32),) * 3, (words,) * 3,
                                   index.astype(np.int32), words, (coded,) * 3, (*(words,) * 5, index, index), draws=1)
    intensity_kernels.realised_mismatches(np.ones(2), np.ones(2), np.ones(2), np.ones(2), 0.0, 1.0, None, None,
                                          np.zeros(1, dtype=np.int32), 2, 0)
    two = np.ones(2)
    latent_kernels.latent_mismatches(0, 2, 0, (np.zeros(2, dtype=np.int32),) * 2, np.zeros(2, dtype=np.int32),
                                     *(two,) * 4, np.zeros(2, dtype=bool), None, np.ones(1), np.ones(1), 0.0, 1.0,
                                     np.zeros(1, dtype=np.int64), np.zeros((1, 2)), np.zeros((1, 2)))
    grid_kernels.compile_misaligned()
    reference_loops.compile_loops()


def warmup_phases() -> tuple[warmup.Phase, ...]:
    """The phase compiling the check kernels ahead of a run; their first call waits for it (`compiled.ready`)."""
    return (warmup.Phase(PHASE, f"{__name__}:compile_check_kernels", (), check_kernels()),)

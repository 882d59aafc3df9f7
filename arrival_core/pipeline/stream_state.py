"""The one streaming skeleton of S2 and S3: load the partition, let the state's body prepare, then stream its input
in whole-entity chunks through the body into the state's outputs, in one transaction (`stream_state`)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from .. import entity_grid, parallel, sink
from ..errors import error_code
from ..gate import Gate
from ..identity import Identity
from ..rng import ledger
from ..store import Published
from . import compiling
from .shell import StateRun
from .streaming import default_chunk_entities, read_s1, streamed_outputs


@dataclass
class Summary:
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

    def merge(self, other: Summary) -> None:
        """Add another summary's values (of a later chunk, summarised on a worker thread)."""
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        """The summary of one chunk's values."""
        summary = cls()
        summary.add(values)
        return summary

    def metrics(self, name: str) -> dict[str, float | None]:
        empty = self.count == 0
        return {f"{name}_min": None if empty else self.low, f"{name}_max": None if empty else self.high,
                f"{name}_mean": None if empty else self.total / self.count}


@dataclass(frozen=True)
class Partition:
    """What the skeleton has loaded for a body: the run, the partition's identity, gate and RNG policy, the S1
    grouping and its entity × bucket domain, and the entities per chunk."""

    run: StateRun
    identity: Identity
    gate: Gate
    rng: ledger.RngPolicy
    groups: pl.DataFrame
    domain: entity_grid.Domain
    step: int


class StreamBody(Protocol):
    """One state's part of the stream: its outputs, its chunks, what it computes per chunk (`compute`, on a worker
    thread, touching no shared state) and what it merges and writes per chunk, in chunk order (`take`)."""

    outputs: tuple[tuple[str, str], ...]  # (dataset_id, error category of its validation), in `streamed_outputs` order

    def load(self, part: Partition) -> dict: ...  # after the grouping is read: the state's inputs; its metrics
    def prepare(self) -> None: ...  # before the stream: what the whole partition draws at once
    def drawn(self) -> Mapping[str, np.ndarray]: ...  # after `prepare`: what it drew, by name, for the observer
    def begin(self, outputs: list) -> None: ...  # the outputs written before the first chunk
    def chunks(self) -> Iterator[tuple[int, int, pa.Table]]: ...
    def compute(self, e0: int, e1: int, chunk: pa.Table) -> object: ...
    def take(self, result: object, outputs: list) -> None: ...
    def end(self, outputs: list) -> dict: ...  # the outputs written after the last chunk; the state's metrics


class StreamObserver(Protocol):
    """What watches a streamed state from above the pipeline (the checks): told the loaded partition, it gives an
    inspection for each output whose row groups it examines on the workers that encode them, and told what the
    partition drew at once before any row group is encoded."""

    def inspections(self, part: Partition) -> Mapping[str, sink.Inspector]: ...
    def drawn(self, values: Mapping[str, np.ndarray]) -> None: ...


def stream_state(run: StateRun, chunk_entities: int | None, parse_policy: Callable[[Gate], StreamBody],
                 observe: StreamObserver | None = None) -> Sequence[Published]:
    """S2 and S3: load the partition, let the body prepare, then stream the input in whole-entity chunks through
    the body into the state's outputs, in one transaction; `observe` inspects the outputs' row groups as they are
    encoded."""
    store, state = run.store, run.state
    run.metrics |= {"scenario_count_requested": 1, "scenario_count_succeeded": 0, "scenario_count_failed": 1}
    loaded = parallel.soon(lambda: compiling.load_kernels(store.config_dir))  # while the inputs are read
    with run.timed("load"):
        identity, g = run.open_gate()
        body = parse_policy(g)
        rng = ledger.parse_rng_policy(g.policy("arrival_rng_policy_5B"))
        time_grid, groups = read_s1(store, identity, state)
        domain = entity_grid.build_domain(groups, time_grid.height, tuple(groups["group_id"].unique().sort().to_list()))
        step = chunk_entities or default_chunk_entities(domain.buckets)
        part = Partition(run, identity, g, rng, groups, domain, step)
        run.metrics |= body.load(part)
        inspections = {} if observe is None else observe.inspections(part)
    run.metrics |= {"total_bucket_count": domain.buckets, "total_entity_bucket_count": domain.rows,
                    "total_entity_count": domain.size, "total_group_count": len(domain.group_ids),
                    "chunk_entities": step}
    # What the whole partition draws at once, on a thread of its own (it spreads over the pool), while the outputs
    # open and the input's first chunks are read ahead.
    prepared = parallel.soon(lambda: (loaded(), body.prepare()), own_thread=True)
    tokens = identity.tokens()
    specs = [(d, store.path(d, **tokens), error_code(state, category)) for d, category in body.outputs]
    with run.timed("stream"), store.transaction(state) as tx, streamed_outputs(tx, store, specs) as outputs:
        for out in outputs:
            if out.dataset_id in inspections:
                out.inspect(inspections[out.dataset_id])
        try:
            chunks = body.chunks()
        finally:
            prepared()  # its failure first, as when it ran before the chunks were opened
        if observe is not None:
            observe.drawn(body.drawn())
        body.begin(outputs)
        def compute(item: tuple[int, int, pa.Table]) -> tuple[int, object]:
            e0, e1, chunk = item
            return chunk.num_rows, body.compute(e0, e1, chunk)

        for rows, result in parallel.ordered(compute, chunks):  # computed on the pool, taken in chunk order
            body.take(result, outputs)
            run.advance(rows, domain.rows)
        run.metrics |= body.end(outputs)
        run.diagnostics["bucket_start_utc"] = time_grid["bucket_start_utc"].to_numpy()  # the pictures' time axis
        if run.diagnosed is not None:  # complete now: what shows them starts while the outputs finish and publish
            run.diagnosed(dict(run.diagnostics))
    run.metrics |= {"scenario_count_succeeded": 1, "scenario_count_failed": 0}
    return tx.published

"""RNG accounting of the streamed states: the policy view, uniform traces and reconciliation of family totals.

Row-level ledgers (event frames, audit records, replay) live in `rng.ledger`; this module covers what S2/S3
need while streaming, where an event log is never held whole.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from .errors import ArrivalError

FAMILIES = ("S2.latent_vector.v1", "S3.bucket_count.v1")


@dataclass(frozen=True)
class RngPolicy:
    """The parts of a schema-valid `arrival_rng_policy_5B` the states use."""

    version: str
    algorithm: str
    domain_sep: str
    trace_append_events: int
    replay_sample_events: int
    families: Mapping[str, Mapping]

    def module(self, family_id: str) -> str:
        return self.families[family_id]["module"]

    def substream(self, family_id: str) -> str:
        return self.families[family_id]["substream_label"]


def parse_rng_policy(doc: Mapping) -> RngPolicy:
    """Read a schema-valid RNG policy (the schema pins the laws; this keeps what the states need)."""
    return RngPolicy(
        version=doc["version"],
        algorithm=doc["algorithm"],
        domain_sep=doc["derivation"]["domain_sep"],
        trace_append_events=int(doc["trace_append_events"]),
        replay_sample_events=int(doc["replay_sample_events"]),
        families={fid: dict(spec) for fid, spec in doc["families"].items()},
    )


@dataclass(frozen=True)
class FamilyTotals:
    """What one family's events add up to: events, draws and blocks."""

    events: int = 0
    draws: int = 0
    blocks: int = 0

    def __add__(self, other: FamilyTotals) -> FamilyTotals:
        return FamilyTotals(self.events + other.events, self.draws + other.draws, self.blocks + other.blocks)


def uniform_trace_frame(events: int, draws_per_event: int, blocks_per_event: int, *, append_events: int) -> pl.DataFrame:
    """The trace columns of `events` events of equal cost, as `ledger.trace_from_events` would give them, without
    the per-event frame (S3 logs tens of millions of events and streams them)."""
    appends = -(-events // append_events)
    sizes = np.full(appends, append_events, dtype=np.int64)
    if appends:
        sizes[-1] = events - append_events * (appends - 1)
    return _with_totals(pl.DataFrame({
        "append_index": np.arange(appends, dtype=np.int32), "events": sizes,
        "draws": sizes * draws_per_event, "blocks": sizes * blocks_per_event,
    }))


def _with_totals(per_append: pl.DataFrame) -> pl.DataFrame:
    return per_append.select(
        "append_index", "events", "draws", "blocks",
        pl.col("events").cum_sum().alias("events_total"),
        pl.col("draws").cum_sum().alias("draws_total"),
        pl.col("blocks").cum_sum().alias("blocks_total"),
    )


def trace_totals(trace: pl.DataFrame) -> FamilyTotals:
    """The totals a trace claims (its last row's running totals; zero when empty)."""
    if trace.height == 0:
        return FamilyTotals()
    last = trace.row(trace.height - 1, named=True)
    return FamilyTotals(int(last["events_total"]), int(last["draws_total"]), int(last["blocks_total"]))


def trace_problems(trace: pl.DataFrame, *, append_events: int) -> list[str]:
    """Inconsistencies inside a trace: gaps in append_index, oversized appends, running totals that do not add up."""
    if trace.height == 0:
        return []
    problems = []
    if trace["append_index"].to_numpy().tolist() != list(range(trace.height)):
        problems.append("append_index is not 0, 1, 2, ...")
    sizes = trace["events"].to_numpy()
    if (sizes > append_events).any() or (sizes[:-1] != append_events).any():
        problems.append(f"appends are not batches of {append_events} events in writer order")
    for column in ("events", "draws", "blocks"):
        if not np.array_equal(np.cumsum(trace[column].to_numpy()), trace[f"{column}_total"].to_numpy()):
            problems.append(f"{column}_total is not the running sum of {column}")
    return problems


def reconcile(family_id: str, *, events: FamilyTotals, trace: FamilyTotals, expected: FamilyTotals,
              trace_issues: list[str], code: str, where: str) -> None:
    """Require event log = trace = what the outputs imply; raise `code` naming the family and the first difference."""
    problems = list(trace_issues)
    for name, other in (("trace", trace), ("outputs", expected)):
        if other != events:
            problems.append(f"event log {events} but {name} {other}")
    if problems:
        raise ArrivalError(code, f"{where}: RNG family {family_id} does not reconcile: " + "; ".join(problems),
                           family_id=family_id, file=where)

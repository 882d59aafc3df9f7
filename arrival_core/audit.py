"""RNG accounting: the per-append trace of an event log, the per-partition audit record, and their reconciliation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import polars as pl

from .errors import ArrivalError
from .identity import Identity

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

    def __add__(self, other: "FamilyTotals") -> "FamilyTotals":
        return FamilyTotals(self.events + other.events, self.draws + other.draws, self.blocks + other.blocks)


def trace_frame(event_draws: np.ndarray, event_blocks: np.ndarray, *, append_events: int) -> pl.DataFrame:
    """One trace row per append of `append_events` consecutive events (writer order) with running totals."""
    n = len(event_draws)
    append = np.arange(n, dtype=np.int64) // append_events
    per = pl.DataFrame({"append_index": append.astype(np.int32), "draws": event_draws.astype(np.int64),
                        "blocks": event_blocks.astype(np.int64)})
    return _with_totals(per.group_by("append_index", maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("events"), pl.col("draws").sum(), pl.col("blocks").sum()))


def uniform_trace_frame(events: int, draws_per_event: int, blocks_per_event: int, *, append_events: int) -> pl.DataFrame:
    """The trace of `events` events that each cost the same draws and blocks (no per-event arrays needed)."""
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
    if not trace["append_index"].to_numpy().tolist() == list(range(trace.height)):
        problems.append("append_index is not 0, 1, 2, ...")
    sizes = trace["events"].to_numpy()
    if (sizes > append_events).any() or (sizes[:-1] != append_events).any():
        problems.append(f"appends are not batches of {append_events} events in writer order")
    for column in ("events", "draws", "blocks"):
        if not np.array_equal(np.cumsum(trace[column].to_numpy()), trace[f"{column}_total"].to_numpy()):
            problems.append(f"{column}_total is not the running sum of {column}")
    return problems


def audit_record(policy: RngPolicy, policy_sha256: str, identity: Identity,
                 families: Mapping[str, tuple[FamilyTotals, int]]) -> dict:
    """The `rng_audit_log_5B` record: policy, identity and per-family totals with their trace append counts."""
    return {
        "algorithm": policy.algorithm,
        "policy_id": "arrival_rng_policy_5B",
        "policy_version": policy.version,
        "policy_sha256": policy_sha256,
        "manifest_fingerprint": identity.manifest_fingerprint,
        "parameter_hash": identity.parameter_hash,
        "seed": identity.seed,
        "scenario_id": identity.scenario_id,
        "families": {
            fid: {"module": policy.module(fid), "substream_label": policy.substream(fid), "events": totals.events,
                  "draws": totals.draws, "blocks": totals.blocks, "trace_appends": appends}
            for fid, (totals, appends) in sorted(families.items())
        },
    }


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

"""RNG accounting (the RNG law's ledger): the policy's family view, traces, family totals, their reconciliation,
the audit record and the replay of logged events from their streams."""
from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from . import philox, streams
from .errors import CounterWrapError

IDENTITY_COLUMNS = ("manifest_fingerprint", "parameter_hash", "seed", "scenario_id")
_EXAMPLES = 3  # offending keys quoted per discrepancy

INDEPENDENT, COMMON = "independent_v1", "common_v1"
COUPLINGS = (INDEPENDENT, COMMON)  # scenario_coupling of the RNG policy; absent means independent_v1
# Domain-key templates that replace the policy's under common_v1 (the other families keep theirs), and the
# fields they use that are derived from an event's columns rather than read from one.
COUPLED_DOMAIN_KEYS = {"S2.latent_vector.v1": "coupled_group={coupled_group}"}
_DERIVED_FIELDS = {"coupled_group": lambda: pl.col("group_id").cast(pl.String).str.splitn("|", 2).struct.field("field_1")}


@dataclass(frozen=True)
class RngPolicy:
    """The parts of a schema-valid `arrival_rng_policy_5B` the states use."""

    version: str
    algorithm: str
    domain_sep: str
    trace_append_events: int
    replay_sample_events: int
    families: Mapping[str, Mapping]
    scenario_coupling: str = INDEPENDENT

    @property
    def coupled(self) -> bool:
        """True under scenario coupling `common_v1`: streams are derived with `*` for the scenario id."""
        return self.scenario_coupling == COMMON

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
        scenario_coupling=scenario_coupling(doc),
    )


def scenario_coupling(doc: Mapping) -> str:
    """The policy's `scenario_coupling` (`independent_v1` when absent); anything else is a ValueError."""
    value = doc.get("scenario_coupling", INDEPENDENT)
    if value not in COUPLINGS:
        raise ValueError(f"arrival_rng_policy_5B: scenario_coupling {value!r} is not one of {list(COUPLINGS)}")
    return value


def domain_key_template(doc: Mapping, family_id: str) -> str:
    """A family's domain-key template under the policy: its own, or the coupled one under `common_v1`."""
    if scenario_coupling(doc) == COMMON and family_id in COUPLED_DOMAIN_KEYS:
        return COUPLED_DOMAIN_KEYS[family_id]
    return doc["families"][family_id]["domain_key"]


def coupled_group(group_id: str) -> str:
    """The coupled S2 group: the group id without its leading scenario_band field and its `|`."""
    band, sep, rest = group_id.partition("|")
    if not (band and sep and rest):
        raise ValueError(f"coupled_group: group id {group_id!r} has no leading scenario_band field")
    return rest


@dataclass(frozen=True)
class FamilyTotals:
    """What one family's events add up to: events, draws and blocks."""

    events: int = 0
    draws: int = 0
    blocks: int = 0

    def __add__(self, other: FamilyTotals) -> FamilyTotals:
        return FamilyTotals(self.events + other.events, self.draws + other.draws, self.blocks + other.blocks)


def trace_frame(events: int, draws_per_event: int | np.ndarray, blocks_per_event: int | np.ndarray, *,
                append_events: int) -> pl.DataFrame:
    """The trace columns of `events` consecutive events: one row per append of `append_events` events in writer
    order with running totals. A cost is one integer for events of equal cost (computed from counts, never from a
    per-event frame) or an array with one entry per event (S2 stationary fields, whose events differ in size)."""
    appends = -(-events // append_events)
    sizes = np.full(appends, append_events, dtype=np.int64)
    if appends:
        sizes[-1] = events - append_events * (appends - 1)
    return _with_totals(pl.DataFrame({
        "append_index": np.arange(appends, dtype=np.int32), "events": sizes,
        "draws": _per_append(draws_per_event, sizes, events, append_events),
        "blocks": _per_append(blocks_per_event, sizes, events, append_events),
    }))


def _per_append(cost: int | np.ndarray, sizes: np.ndarray, events: int, append_events: int) -> np.ndarray:
    """Σ of a per-event cost over each append (int64)."""
    if np.ndim(cost) == 0:
        return sizes * cost
    per_event = np.asarray(cost, dtype=np.int64).reshape(-1)
    if per_event.shape[0] != events:
        raise ValueError(f"trace_frame: {per_event.shape[0]} per-event costs for {events} events")
    if events == 0:
        return np.zeros(0, dtype=np.int64)
    return np.add.reduceat(per_event, np.arange(0, events, append_events)).astype(np.int64)


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


def reconcile(events: FamilyTotals, trace: pl.DataFrame, expected: FamilyTotals, *, append_events: int,
              audit_entry: Mapping[str, Any] | None = None) -> list[str]:
    """Every way a family's event-log totals, its trace, what the outputs imply and (when given) its audit entry
    disagree, as readable strings; [] means the family reconciles."""
    problems = trace_problems(trace, append_events=append_events)
    for name, other in (("trace", trace_totals(trace)), ("outputs", expected)):
        if other != events:
            problems.append(f"event log {events} but {name} {other}")
    if audit_entry is not None:
        logged = FamilyTotals(*(audit_entry.get(k) for k in ("events", "draws", "blocks")))
        if logged != events or audit_entry.get("trace_appends") != trace.height:
            problems.append(f"audit record {dict(audit_entry)} differs from the event log {events} "
                            f"({trace.height} trace appends)")
    return problems


def audit_record(policy: Mapping[str, Any], policy_sha256: str, identity: Mapping[str, Any],
                 traces: Mapping[str, pl.DataFrame]) -> dict[str, Any]:
    """The partition's RNG audit: algorithm, policy id/version/sha256, identity and per-family trace totals."""
    families = {}
    for family_id in sorted(traces):
        trace = traces[family_id]
        entry = policy["families"][family_id]
        last = trace.tail(1)
        families[family_id] = {
            "module": entry["module"],
            "substream_label": entry["substream_label"],
            "events": int(last["events_total"][0]) if trace.height else 0,
            "draws": int(last["draws_total"][0]) if trace.height else 0,
            "blocks": int(last["blocks_total"][0]) if trace.height else 0,
            "trace_appends": trace.height,
        }
    return {
        "algorithm": policy["algorithm"],
        "policy_id": policy["policy_id"],
        "policy_version": policy["version"],
        "policy_sha256": policy_sha256,
        "manifest_fingerprint": identity["manifest_fingerprint"],
        "parameter_hash": identity["parameter_hash"],
        "seed": int(identity["seed"]),
        "scenario_id": identity["scenario_id"],
        "families": families,
    }


@dataclass(frozen=True)
class Replay:
    """Blocks re-derived for a set of events: event i owns x0/x1[event_start[i]:event_start[i+1]]."""

    event_start: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    mismatches: tuple[str, ...]  # logged key/counter/identity that disagree with the re-derivation


def replay(policy: Mapping[str, Any], family_id: str, events: pl.DataFrame, identity: Mapping[str, Any]) -> Replay:
    """Re-derive each event's stream (key, base) from the policy and identity, and return its raw Philox blocks.

    The domain key is the family's template (`domain_key_template`: the coupled one under `common_v1`) filled
    from the event's columns, and the stream is derived with `*` for the scenario under `common_v1`; the first
    block is at base + the family's `block_offset` column (0 when it has none), and the event's `blocks` follow it.
    The blocks come from the re-derived counters, not the logged ones, so callers can recompute values and
    compare them with the outputs; logged keys or counters that differ are listed in `mismatches`.
    """
    family = policy["families"][family_id]
    ident = {c: identity[c] for c in IDENTITY_COLUMNS}
    mismatches = [f"{family_id}: event {c} is {_examples(v)}, identity says {ident[c]!r}"
                  for c in IDENTITY_COLUMNS if events.height and (v := _distinct(events, c)) != [ident[c]]]
    keys = events.select(_domain_key_expr(domain_key_template(policy, family_id)).alias("k"))["k"]
    unique_keys, inverse = np.unique(keys.to_numpy().astype(str), return_inverse=True)
    base_key, base_hi, base_lo = streams.stream_bases(
        family_id, identity["manifest_fingerprint"], identity["parameter_hash"], identity["seed"],
        identity["scenario_id"], unique_keys.tolist(), domain_sep=policy["derivation"]["domain_sep"],
        coupled=scenario_coupling(policy) == COMMON)
    key, hi, lo = base_key[inverse], base_hi[inverse], base_lo[inverse]
    offset_col = family.get("block_offset")
    offset = (events[offset_col].to_numpy().astype(np.uint64) if offset_col
              else np.zeros(events.height, dtype=np.uint64))
    before_hi, before_lo, wrapped = philox.add_counter(hi, lo, offset)
    if wrapped.any():
        first = int(np.argmax(wrapped))
        raise CounterWrapError("replay", int(key[first]), int(offset[first]), first)
    for name, got, want in (("rng_key", events["rng_key"].to_numpy(), key),
                            ("rng_counter_before_hi", events["rng_counter_before_hi"].to_numpy(), before_hi),
                            ("rng_counter_before_lo", events["rng_counter_before_lo"].to_numpy(), before_lo)):
        bad = np.flatnonzero(got != want)
        if len(bad):
            mismatches.append(f"{family_id}: {len(bad)} events log a {name} that the derivation does not give, "
                              f"e.g. domain {keys[int(bad[0])]!r}: logged {int(got[bad[0]])}, derived {int(want[bad[0]])}")
    counts = events["blocks"].to_numpy().astype(np.int64)
    start = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    owner = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(start[-1], dtype=np.int64) - start[owner]
    x0, x1 = streams.blocks(key[owner], hi[owner], lo[owner], offset[owner] + within.astype(np.uint64))
    return Replay(start, x0, x1, tuple(mismatches))


# ---- helpers --------------------------------------------------------------------------------------------------

def _distinct(frame: pl.DataFrame, column: str) -> list[Any]:
    return frame[column].unique(maintain_order=True).to_list()


def _domain_key_expr(template: str) -> pl.Expr:
    """The policy's domain-key template (e.g. "group_id={group_id}") as a vectorised string expression."""
    parts: list[pl.Expr] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if field:
            parts.append(_DERIVED_FIELDS[field]() if field in _DERIVED_FIELDS else pl.col(field).cast(pl.String))
    return pl.concat_str(parts)


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_EXAMPLES])
    return shown + (", …" if len(values) > _EXAMPLES else "")

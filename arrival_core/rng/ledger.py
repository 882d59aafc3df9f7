"""The RNG ledger (DESIGN §7): event tables, trace appends, the audit record, reconciliation and replay."""
from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl

from ..errors import ArrivalError
from . import philox, streams

IDENTITY_COLUMNS = ("manifest_fingerprint", "parameter_hash", "seed", "scenario_id")
COUNTER_COLUMNS = ("rng_key", "rng_counter_before_lo", "rng_counter_before_hi",
                   "rng_counter_after_lo", "rng_counter_after_hi")
TRACE_COLUMNS = ("module", "substream_label", *IDENTITY_COLUMNS, "append_index",
                 "events", "draws", "blocks", "events_total", "draws_total", "blocks_total")
_EXAMPLES = 3  # offending keys quoted per discrepancy


def event_frame(family_id: str, family: Mapping[str, Any], identity: Mapping[str, Any], domain: pl.DataFrame,
                key: np.ndarray, counter_hi: np.ndarray, counter_lo: np.ndarray,
                draws: object, blocks: object) -> pl.DataFrame:
    """Event rows in the caller's (writer) order: family, identity, domain columns, counters before/after, costs.

    `family` is the policy's entry for `family_id` (module, substream_label); `counter_hi/lo` are the counters
    before the event's first block; the after-counters are before + blocks, a 128-bit wrap being an accounting
    failure of the family's state.
    """
    n = domain.height
    draws_a = np.broadcast_to(np.asarray(draws, dtype=np.int64), (n,))
    blocks_a = np.broadcast_to(np.asarray(blocks, dtype=np.int64), (n,))
    after_hi, after_lo, wrapped = philox.add_counter(counter_hi, counter_lo, blocks_a.astype(np.uint64))
    if wrapped.any():
        first = int(np.flatnonzero(wrapped)[0])
        raise ArrivalError(f"{family['module']}.RNG_ACCOUNTING_MISMATCH",
                           f"{family_id}: event {first} ({domain.row(first, named=True)}) wraps the 128-bit counter",
                           family_id=family_id, event=first)
    head = pl.DataFrame({
        "module": pl.Series([family["module"]] * n, dtype=pl.String),
        "substream_label": pl.Series([family["substream_label"]] * n, dtype=pl.String),
        "family_id": pl.Series([family_id] * n, dtype=pl.String),
    })
    ident = _identity_frame(identity, n)
    tail = pl.DataFrame({
        "rng_key": pl.Series(np.asarray(key, dtype=np.uint64), dtype=pl.UInt64),
        "rng_counter_before_lo": pl.Series(np.asarray(counter_lo, dtype=np.uint64), dtype=pl.UInt64),
        "rng_counter_before_hi": pl.Series(np.asarray(counter_hi, dtype=np.uint64), dtype=pl.UInt64),
        "rng_counter_after_lo": pl.Series(after_lo, dtype=pl.UInt64),
        "rng_counter_after_hi": pl.Series(after_hi, dtype=pl.UInt64),
        "draws": pl.Series(np.ascontiguousarray(draws_a), dtype=pl.Int64),
        "blocks": pl.Series(np.ascontiguousarray(blocks_a), dtype=pl.Int64),
    })
    return pl.concat([head, ident, domain, tail], how="horizontal")


def trace_from_events(events: pl.DataFrame, *, append_events: int, module: str, substream_label: str,
                      manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str) -> pl.DataFrame:
    """One trace row per append of ≤ `append_events` consecutive events in writer order, with running totals."""
    if append_events < 1:
        raise ValueError(f"trace_from_events: append_events must be >= 1, got {append_events}")
    n = events.height
    starts = np.arange(0, n, append_events, dtype=np.int64)
    ev = np.diff(np.append(starts, n)).astype(np.int64)
    draws = _segment_sums(events["draws"].to_numpy().astype(np.int64), starts)
    blocks = _segment_sums(events["blocks"].to_numpy().astype(np.int64), starts)
    k = len(starts)
    identity = {"manifest_fingerprint": manifest_fingerprint, "parameter_hash": parameter_hash,
                "seed": seed, "scenario_id": scenario_id}
    return pl.concat([
        pl.DataFrame({"module": pl.Series([module] * k, dtype=pl.String),
                      "substream_label": pl.Series([substream_label] * k, dtype=pl.String)}),
        _identity_frame(identity, k),
        pl.DataFrame({
            "append_index": pl.Series(np.arange(k, dtype=np.int32), dtype=pl.Int32),
            "events": pl.Series(ev, dtype=pl.Int64),
            "draws": pl.Series(draws, dtype=pl.Int64),
            "blocks": pl.Series(blocks, dtype=pl.Int64),
            "events_total": pl.Series(np.cumsum(ev), dtype=pl.Int64),
            "draws_total": pl.Series(np.cumsum(draws), dtype=pl.Int64),
            "blocks_total": pl.Series(np.cumsum(blocks), dtype=pl.Int64),
        }),
    ], how="horizontal")


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


def expected_per_event(family: Mapping[str, Any], *, horizon_buckets: int | None = None,
                       count_law_id: str | None = None) -> tuple[int, int]:
    """(draws, blocks) per event from the policy's family laws: "2*H"/"H" with H buckets, or {law: n} / n."""
    def value(law: Any) -> int:
        if isinstance(law, Mapping):
            return value(law[count_law_id])
        if isinstance(law, int):
            return law
        factor, _, symbol = str(law).rpartition("*")
        if symbol.strip() != "H" or horizon_buckets is None:
            raise ValueError(f"expected_per_event: cannot evaluate law {law!r} (H={horizon_buckets})")
        return (int(factor) if factor else 1) * horizon_buckets
    return value(family["draws_per_event"]), value(family["blocks_per_event"])


def reconcile(family_id: str, events: pl.DataFrame, trace: pl.DataFrame, audit: Mapping[str, Any],
              expected: Mapping[str, Any] | None = None) -> list[str]:
    """Every discrepancy between events, trace, audit and expectations, as readable strings ([] = reconciled).

    `expected` may give: events (count), draws_per_event / blocks_per_event (scalar or per event),
    append_events (the policy's batch size), and stream_key / stream_counter_hi / stream_counter_lo /
    block_offset (per event) to check each event's counter_before = its stream base + its block offset.
    """
    expected = dict(expected or {})
    out: list[str] = []
    out += _check_labels(family_id, events, trace, audit)
    out += _check_trace(family_id, events, trace, expected.get("append_events"))
    out += _check_audit(family_id, trace, audit)
    out += _check_costs(family_id, events, expected)
    out += _check_counters(family_id, events, expected)
    return out


@dataclass(frozen=True)
class Replay:
    """Blocks re-derived for a set of events: event i owns x0/x1[event_start[i]:event_start[i+1]]."""

    event_start: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    mismatches: tuple[str, ...]  # logged key/counter/identity that disagree with the re-derivation


def replay(policy: Mapping[str, Any], family_id: str, events: pl.DataFrame, identity: Mapping[str, Any]) -> Replay:
    """Re-derive each event's stream (key, base) from the policy and identity, and return its raw Philox blocks.

    The domain key is the family's template filled from the event's columns; the first block is at
    base + the family's `block_offset` column (0 when it has none), and the event's `blocks` follow it.
    The blocks come from the re-derived counters, not the logged ones, so callers can recompute values and
    compare them with the outputs; logged keys or counters that differ are listed in `mismatches`.
    """
    family = policy["families"][family_id]
    state = family["module"].split(".")[-1]
    ident = {c: int(identity[c]) if c == "seed" else identity[c] for c in IDENTITY_COLUMNS}
    mismatches = [f"{family_id}: event {c} is {_examples(v)}, identity says {ident[c]!r}"
                  for c in IDENTITY_COLUMNS if events.height and (v := _distinct(events, c)) != [ident[c]]]
    keys = events.select(_domain_key_expr(family["domain_key"]).alias("k"))["k"]
    unique_keys, inverse = np.unique(keys.to_numpy().astype(str), return_inverse=True)
    base_key, base_hi, base_lo = streams.stream_bases(
        family_id, identity["manifest_fingerprint"], identity["parameter_hash"], identity["seed"],
        identity["scenario_id"], unique_keys.tolist(), domain_sep=policy["derivation"]["domain_sep"])
    key, hi, lo = base_key[inverse], base_hi[inverse], base_lo[inverse]
    offset_col = family.get("block_offset")
    offset = (events[offset_col].to_numpy().astype(np.uint64) if offset_col
              else np.zeros(events.height, dtype=np.uint64))
    before_hi, before_lo, wrapped = philox.add_counter(hi, lo, offset)
    if wrapped.any():
        raise ArrivalError(f"5B.{state}.RNG_ACCOUNTING_MISMATCH",
                           f"{family_id}: replayed event {int(np.argmax(wrapped))} wraps the 128-bit counter")
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
    x0, x1 = streams.blocks(key[owner], hi[owner], lo[owner], offset[owner] + within.astype(np.uint64), state=state)
    return Replay(start, x0, x1, tuple(mismatches))


# ---- helpers --------------------------------------------------------------------------------------------------

def _identity_frame(identity: Mapping[str, Any], n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "manifest_fingerprint": pl.Series([identity["manifest_fingerprint"]] * n, dtype=pl.String),
        "parameter_hash": pl.Series([identity["parameter_hash"]] * n, dtype=pl.String),
        "seed": pl.Series(np.full(n, int(identity["seed"]), dtype=np.uint64), dtype=pl.UInt64),
        "scenario_id": pl.Series([identity["scenario_id"]] * n, dtype=pl.String),
    })


def _segment_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts) if len(starts) else np.zeros(0, dtype=np.int64)


def _distinct(frame: pl.DataFrame, column: str) -> list[Any]:
    return frame[column].unique(maintain_order=True).to_list()


def _domain_key_expr(template: str) -> pl.Expr:
    """The policy's domain-key template (e.g. "group_id={group_id}") as a vectorised string expression."""
    parts: list[pl.Expr] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if field:
            parts.append(pl.col(field).cast(pl.String))
    return pl.concat_str(parts)


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_EXAMPLES])
    return shown + (", …" if len(values) > _EXAMPLES else "")


def _check_labels(family_id: str, events: pl.DataFrame, trace: pl.DataFrame, audit: Mapping[str, Any]) -> list[str]:
    out = []
    entry = audit.get("families", {}).get(family_id, {})
    want = {"family_id": family_id, "module": entry.get("module"), "substream_label": entry.get("substream_label")}
    for column, value in want.items():
        if value is None or not events.height:
            continue
        got = _distinct(events, column)
        if got != [value]:
            out.append(f"{family_id}: events {column} is {_examples(got)}, expected {value!r}")
        if column != "family_id" and trace.height and (got := _distinct(trace, column)) != [value]:
            out.append(f"{family_id}: trace {column} is {_examples(got)}, expected {value!r}")
    for column in IDENTITY_COLUMNS:
        value = audit.get(column)
        for name, frame in (("events", events), ("trace", trace)):
            if frame.height and value is not None and (got := _distinct(frame, column)) != [value]:
                out.append(f"{family_id}: {name} {column} is {_examples(got)}, audit says {value!r}")
    return out


def _check_trace(family_id: str, events: pl.DataFrame, trace: pl.DataFrame, append_events: int | None) -> list[str]:
    out = []
    ev, dr, bl = (trace[c].to_numpy().astype(np.int64) for c in ("events", "draws", "blocks"))
    if not np.array_equal(trace["append_index"].to_numpy(), np.arange(trace.height)):
        out.append(f"{family_id}: trace append_index is not 0..{trace.height - 1} in order")
    if trace.height and ev.min() < 1:
        out.append(f"{family_id}: trace has appends with no events (append_index {_examples(np.flatnonzero(ev < 1).tolist())})")
    for part, total in (("events", "events_total"), ("draws", "draws_total"), ("blocks", "blocks_total")):
        running = np.cumsum(trace[part].to_numpy().astype(np.int64))
        bad = np.flatnonzero(running != trace[total].to_numpy())
        if len(bad):
            out.append(f"{family_id}: trace {total} is not the running sum of {part} "
                       f"from append_index {int(bad[0])} ({int(trace[total][int(bad[0])])} != {int(running[bad[0]])})")
    if append_events is not None and trace.height and ((ev[:-1] != append_events).any() or ev[-1] > append_events):
        out.append(f"{family_id}: trace appends are not batches of {append_events} events (sizes {_examples(ev.tolist())})")
    n, draws, blocks = events.height, int(events["draws"].sum() or 0), int(events["blocks"].sum() or 0)
    for what, got, want in (("events", n, int(ev.sum())), ("draws", draws, int(dr.sum())), ("blocks", blocks, int(bl.sum()))):
        if got != want:
            out.append(f"{family_id}: the event log has {got} {what} but the trace totals {want}")
    if n == int(ev.sum()) and trace.height:
        starts = np.concatenate(([0], np.cumsum(ev)[:-1])).astype(np.int64)
        for part, per in (("draws", dr), ("blocks", bl)):
            sums = _segment_sums(events[part].to_numpy().astype(np.int64), starts)
            bad = np.flatnonzero(sums != per)
            if len(bad):
                out.append(f"{family_id}: trace {part} of append(s) {_examples(bad.tolist())} differ from their events "
                           f"({int(per[bad[0]])} logged, {int(sums[bad[0]])} in the events)")
    return out


def _check_audit(family_id: str, trace: pl.DataFrame, audit: Mapping[str, Any]) -> list[str]:
    entry = audit.get("families", {}).get(family_id)
    if entry is None:
        return [f"{family_id}: the audit record has no entry for this family"]
    totals = {"events": "events_total", "draws": "draws_total", "blocks": "blocks_total"}
    out = []
    for field, column in totals.items():
        want = int(trace[column][-1]) if trace.height else 0
        if entry.get(field) != want:
            out.append(f"{family_id}: audit {field} = {entry.get(field)!r} but the trace totals {want}")
    if entry.get("trace_appends") != trace.height:
        out.append(f"{family_id}: audit trace_appends = {entry.get('trace_appends')!r} but the trace has {trace.height} rows")
    return out


def _check_costs(family_id: str, events: pl.DataFrame, expected: Mapping[str, Any]) -> list[str]:
    out = []
    if "events" in expected and events.height != int(expected["events"]):
        out.append(f"{family_id}: {events.height} events logged, {int(expected['events'])} expected")
    for column, key in (("draws", "draws_per_event"), ("blocks", "blocks_per_event")):
        if key not in expected:
            continue
        got = events[column].to_numpy()
        want = np.asarray(expected[key], dtype=np.int64)
        if want.ndim and len(want) != len(got):
            out.append(f"{family_id}: {key} is given for {len(want)} events but {len(got)} are logged")
            continue
        want = np.broadcast_to(want, got.shape)
        bad = np.flatnonzero(got != want)
        if len(bad):
            out.append(f"{family_id}: {len(bad)} events have {column} != {key} "
                       f"(rows {_examples(bad.tolist())}; e.g. {int(got[bad[0]])} vs {int(want[bad[0]])})")
    return out


@numba.njit(cache=True, nogil=True)
def _overlapping(key, s_hi, s_lo, e_hi, e_lo, blocks):  # pragma: no cover - compiled
    """Rows (sorted by key, start) whose range starts before the furthest end seen so far in the same stream."""
    out = np.zeros(key.shape[0], dtype=np.bool_)
    m_hi = np.uint64(0)
    m_lo = np.uint64(0)
    for i in range(key.shape[0]):
        if i == 0 or key[i] != key[i - 1]:
            m_hi = np.uint64(0)
            m_lo = np.uint64(0)
        elif blocks[i] > 0 and (s_hi[i] < m_hi or (s_hi[i] == m_hi and s_lo[i] < m_lo)):
            out[i] = True
        if blocks[i] > 0 and (e_hi[i] > m_hi or (e_hi[i] == m_hi and e_lo[i] > m_lo)):
            m_hi = e_hi[i]
            m_lo = e_lo[i]
    return out


def _check_counters(family_id: str, events: pl.DataFrame, expected: Mapping[str, Any]) -> list[str]:
    out = []
    key = events["rng_key"].to_numpy()
    b_hi, b_lo = events["rng_counter_before_hi"].to_numpy(), events["rng_counter_before_lo"].to_numpy()
    a_hi, a_lo = events["rng_counter_after_hi"].to_numpy(), events["rng_counter_after_lo"].to_numpy()
    blocks = events["blocks"].to_numpy().astype(np.int64)
    if (blocks < 0).any():
        return [f"{family_id}: negative blocks in rows {_examples(np.flatnonzero(blocks < 0).tolist())}"]
    want_hi, want_lo, wrapped = philox.add_counter(b_hi, b_lo, blocks.astype(np.uint64))
    bad = np.flatnonzero((want_hi != a_hi) | (want_lo != a_lo) | wrapped)
    if len(bad):
        out.append(f"{family_id}: counter_after != counter_before + blocks in {len(bad)} events "
                   f"(rows {_examples(bad.tolist())})")
    order = np.lexsort((b_lo, b_hi, key))
    overlap = _overlapping(key[order], b_hi[order], b_lo[order], want_hi[order], want_lo[order], blocks[order])
    if overlap.any():
        rows = np.sort(order[overlap])
        out.append(f"{family_id}: {len(rows)} events reuse counters of an earlier event in the same stream "
                   f"(rows {_examples(rows.tolist())}; key {int(key[rows[0]])})")
    if "stream_key" in expected:
        s_key = np.asarray(expected["stream_key"], dtype=np.uint64)
        if len(s_key) != len(key):
            out.append(f"{family_id}: stream bases are given for {len(s_key)} events but {len(key)} are logged")
            return out
        offset = np.asarray(expected.get("block_offset", 0), dtype=np.uint64)
        base_hi, base_lo, _ = philox.add_counter(expected["stream_counter_hi"], expected["stream_counter_lo"], offset)
        bad = np.flatnonzero((s_key != key) | (base_hi != b_hi) | (base_lo != b_lo))
        if len(bad):
            out.append(f"{family_id}: {len(bad)} events do not start at their stream base + block offset "
                       f"(rows {_examples(bad.tolist())})")
    return out

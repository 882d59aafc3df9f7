"""The RNG ledger: traces, the audit record, reconcile (one injected defect per test) and replay.

Event logs here are built by the test from the stream law itself (stream base + block offset), not by the code
under test, so replay and reconciliation are checked against an independent construction.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts
from arrival_core.contracts import DEFAULT_CONFIG_DIR
from arrival_core.rng import ledger
from arrival_core.rng.errors import CounterWrapError
from arrival_core.rng.philox import add_counter
from arrival_core.rng.streams import blocks, stream_bases

S2, S3 = "S2.latent_vector.v1", "S3.bucket_count.v1"
IDENTITY = {"manifest_fingerprint": "7e" * 32, "parameter_hash": "19" * 32, "seed": 2**64 - 5,
            "scenario_id": "baseline_v1"}
T = ledger.FamilyTotals


@pytest.fixture(scope="module")
def policy() -> dict:
    return yaml.safe_load((DEFAULT_CONFIG_DIR / "arrival_rng_policy_5B.yaml").read_text())


def s3_events() -> pl.DataFrame:
    """Poisson count events of three entities (two share a merchant across channels), in writer order."""
    rows = [(11, "GB", "Europe/London", "card_present", b) for b in (0, 1, 2, 5, 6)]
    rows += [(11, "GB", "Europe/London", "card_not_present", b) for b in (0, 3)]
    rows += [(2**64 - 59, "US", "America/New_York", "card_present", b) for b in range(7)]
    domain = pl.DataFrame(rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String, "tzid": pl.String,
                                        "channel_group": pl.String, "bucket_index": pl.Int32}, orient="row")
    keys = [f"merchant_id={m}|legal_country_iso={c}|tzid={z}|channel_group={g}" for m, c, z, g, _ in rows]
    key, hi, lo = stream_bases(S3, IDENTITY["manifest_fingerprint"], IDENTITY["parameter_hash"], IDENTITY["seed"],
                               IDENTITY["scenario_id"], keys)
    before_hi, before_lo, _ = add_counter(hi, lo, domain["bucket_index"].to_numpy().astype(np.uint64))
    after_hi, after_lo, _ = add_counter(before_hi, before_lo, np.ones(len(rows), dtype=np.uint64))
    return domain.with_columns(
        pl.Series("rng_key", key), pl.Series("rng_counter_before_hi", before_hi),
        pl.Series("rng_counter_before_lo", before_lo), pl.Series("rng_counter_after_hi", after_hi),
        pl.Series("rng_counter_after_lo", after_lo), pl.lit(1, pl.Int64).alias("draws"),
        pl.lit(1, pl.Int64).alias("blocks"), *(pl.lit(v).alias(k) for k, v in IDENTITY.items()))


def test_trace_rows_are_batches_of_append_events_with_running_totals():
    trace = ledger.trace_frame(14, 2, 1, append_events=4)
    assert trace["append_index"].to_list() == [0, 1, 2, 3]
    assert trace["events"].to_list() == [4, 4, 4, 2]
    assert trace["events_total"].to_list() == [4, 8, 12, 14]
    assert trace["draws_total"].to_list() == [8, 16, 24, 28]
    assert trace["blocks_total"][-1] == 14
    assert ledger.trace_frame(0, 1, 1, append_events=4).height == 0


def test_audit_record_carries_the_trace_totals_and_fits_its_schema(policy):
    record = ledger.audit_record(policy, "ab" * 32, IDENTITY, {S3: ledger.trace_frame(14, 1, 1, append_events=4)})
    assert record["families"][S3] == {"module": "5B.S3", "substream_label": "bucket_count", "events": 14,
                                      "draws": 14, "blocks": 14, "trace_appends": 4}
    assert (record["seed"], record["algorithm"], record["policy_version"]) == (2**64 - 5, "philox2x64-10", "v1.0.0")
    contracts.validate_document(record, "schemas.5B.yaml#/rng/rng_audit_log_5B", code="5B.S3.RNG_ACCOUNTING_MISMATCH",
                                where="audit")


def clean() -> tuple[ledger.FamilyTotals, pl.DataFrame, dict]:
    trace = ledger.trace_frame(14, 1, 1, append_events=4)
    return T(14, 14, 14), trace, {"events": 14, "draws": 14, "blocks": 14, "trace_appends": 4}


def test_a_clean_family_reconciles():
    events, trace, entry = clean()
    assert ledger.reconcile(events, trace, events, append_events=4, audit_entry=entry) == []


def test_reconcile_catches_a_missing_event():
    events, trace, _ = clean()
    found = ledger.reconcile(T(13, 13, 13), trace, events, append_events=4)
    assert any("trace" in p for p in found) and any("outputs" in p for p in found)


def test_reconcile_catches_a_wrong_draws_total():
    events, trace, _ = clean()
    found = ledger.reconcile(T(14, 15, 14), trace, events, append_events=4)
    assert found and all("draws=15" in p for p in found)


def test_reconcile_catches_a_running_total_off_by_one():
    events, trace, _ = clean()
    off = trace.with_columns(pl.when(pl.col("append_index") == 2).then(pl.col("events_total") + 1)
                             .otherwise(pl.col("events_total")).alias("events_total"))
    assert ledger.reconcile(events, off, events, append_events=4) == ["events_total is not the running sum of events"]


def test_reconcile_catches_appends_that_are_not_full_batches():
    events, trace, _ = clean()
    assert ledger.reconcile(events, trace, events, append_events=5) == [
        "appends are not batches of 5 events in writer order"]


def test_reconcile_catches_a_gap_in_append_index():
    events, trace, _ = clean()
    gap = trace.with_columns(pl.col("append_index").replace(3, 4))
    assert ledger.reconcile(events, gap, events, append_events=4) == ["append_index is not 0, 1, 2, ..."]


def test_reconcile_catches_an_audit_total_mismatch():
    events, trace, entry = clean()
    found = ledger.reconcile(events, trace, events, append_events=4, audit_entry=entry | {"blocks": 13})
    assert len(found) == 1 and found[0].startswith("audit record")
    assert ledger.reconcile(events, trace, events, append_events=4, audit_entry=entry | {"trace_appends": 3})


def test_replay_rederives_the_blocks_of_a_sample_of_events(policy):
    sample = s3_events()[[1, 8, 13]]
    replayed = ledger.replay(policy, S3, sample, IDENTITY)
    assert replayed.mismatches == ()
    assert replayed.event_start.tolist() == [0, 1, 2, 3]
    x0, x1 = blocks(sample["rng_key"].to_numpy(), sample["rng_counter_before_hi"].to_numpy(),
                    sample["rng_counter_before_lo"].to_numpy(), 0)
    assert replayed.x0.tolist() == x0.tolist() and replayed.x1.tolist() == x1.tolist()


def test_replay_reports_a_logged_counter_the_derivation_does_not_give(policy):
    events = s3_events()
    shifted = events.with_columns((pl.col("bucket_index") + 1).alias("bucket_index"))[[3]]
    replayed = ledger.replay(policy, S3, shifted, IDENTITY)
    assert len(replayed.mismatches) == 1 and "rng_counter_before_lo" in replayed.mismatches[0]
    other_seed = ledger.replay(policy, S3, events[[3]], {**IDENTITY, "seed": 1})
    assert any("seed" in m for m in other_seed.mismatches) and any("rng_key" in m for m in other_seed.mismatches)


def test_replay_of_a_latent_event_expands_its_h_blocks(policy):
    horizon = 6
    groups = ["baseline|retail_daytime|card_present|physical|zg01|b03",
              "baseline|nightlife|card_not_present|virtual|zg15|b30"]
    key, hi, lo = stream_bases(S2, IDENTITY["manifest_fingerprint"], IDENTITY["parameter_hash"], IDENTITY["seed"],
                               IDENTITY["scenario_id"], [f"group_id={g}" for g in groups])
    events = pl.DataFrame({"group_id": groups, "rng_key": key, "rng_counter_before_hi": hi,
                           "rng_counter_before_lo": lo, "blocks": [horizon, horizon]}).with_columns(
        *(pl.lit(v).alias(k) for k, v in IDENTITY.items()))
    replayed = ledger.replay(policy, S2, events, IDENTITY)
    assert replayed.mismatches == () and replayed.event_start.tolist() == [0, 6, 12]
    x0, _ = blocks(key[1], hi[1], lo[1], np.arange(horizon, dtype=np.uint64))
    assert replayed.x0[6:].tolist() == x0.tolist()


def test_blocks_past_the_top_of_the_128_bit_counter_raise_a_wrap():
    top = np.uint64(2**64 - 1)
    with pytest.raises(CounterWrapError, match="wraps past 2\\*\\*128") as err:
        blocks(np.array([1, 9], dtype=np.uint64), top, top - np.uint64(2), np.array([1, 4], dtype=np.uint64))
    assert (err.value.rng_key, err.value.offset, err.value.element) == (9, 4, 1)

"""The RNG ledger: event and trace tables, the audit record, reconcile (one injected defect per test), replay."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts
from arrival_core.contracts import DEFAULT_CONFIG_DIR
from arrival_core.errors import ArrivalError
from arrival_core.rng import ledger
from arrival_core.rng.philox import add_counter
from arrival_core.rng.streams import blocks, stream_bases

S2, S3 = "S2.latent_vector.v1", "S3.bucket_count.v1"
IDENTITY = {"manifest_fingerprint": "7e" * 32, "parameter_hash": "19" * 32, "seed": 2**64 - 5,
            "scenario_id": "baseline_v1"}


@pytest.fixture(scope="module")
def policy() -> dict:
    return yaml.safe_load((DEFAULT_CONFIG_DIR / "arrival_rng_policy_5B.yaml").read_text())


def s3_domain() -> pl.DataFrame:
    """Three entities (two share a merchant across channels), drawing at a few buckets each, in writer order."""
    rows = [(11, "GB", "Europe/London", "card_present", b) for b in (0, 1, 2, 5, 6)]
    rows += [(11, "GB", "Europe/London", "card_not_present", b) for b in (0, 3)]
    rows += [(2**64 - 59, "US", "America/New_York", "card_present", b) for b in range(7)]
    return pl.DataFrame(rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String, "tzid": pl.String,
                                      "channel_group": pl.String, "bucket_index": pl.Int32}, orient="row")


def s3_ledger(policy: dict, append_events: int = 4) -> tuple[pl.DataFrame, pl.DataFrame, dict, dict]:
    """(events, trace, audit, expected) of a clean Poisson S3 partition."""
    family = policy["families"][S3]
    domain = s3_domain()
    keys = domain.select(pl.format("merchant_id={}|legal_country_iso={}|tzid={}|channel_group={}",
                                   "merchant_id", "legal_country_iso", "tzid", "channel_group"))[:, 0].to_list()
    key, hi, lo = stream_bases(S3, IDENTITY["manifest_fingerprint"], IDENTITY["parameter_hash"], IDENTITY["seed"],
                               IDENTITY["scenario_id"], keys)
    offset = domain["bucket_index"].to_numpy().astype(np.uint64)
    before_hi, before_lo, _ = add_counter(hi, lo, offset)
    events = ledger.event_frame(S3, family, IDENTITY, domain, key, before_hi, before_lo, draws=1, blocks=1)
    trace = ledger.trace_from_events(events, append_events=append_events, module=family["module"],
                                     substream_label=family["substream_label"], **IDENTITY)
    audit = ledger.audit_record(policy, "ab" * 32, IDENTITY, {S3: trace})
    expected = {"events": domain.height, "draws_per_event": 1, "blocks_per_event": 1, "append_events": append_events,
                "stream_key": key, "stream_counter_hi": hi, "stream_counter_lo": lo, "block_offset": offset}
    return events, trace, audit, expected


def test_event_trace_and_audit_conform_to_their_schemas(policy):
    events, trace, audit, _ = s3_ledger(policy)
    assert not contracts.table_violations(events, "schemas.5B.yaml#/rng/rng_event_arrival_bucket_count")
    assert list(events.columns) == list(contracts.polars_schema("schemas.5B.yaml#/rng/rng_event_arrival_bucket_count"))
    assert not contracts.table_violations(trace, "schemas.5B.yaml#/rng/rng_trace")
    assert list(trace.columns) == list(ledger.TRACE_COLUMNS)
    contracts.validate_document(audit, "schemas.5B.yaml#/rng/rng_audit_log_5B", code="5B.S3.RNG_ACCOUNTING_MISMATCH",
                                where="audit")


def test_trace_rows_are_batches_of_append_events_with_running_totals(policy):
    _, trace, audit, _ = s3_ledger(policy, append_events=4)
    assert trace["append_index"].to_list() == [0, 1, 2, 3]
    assert trace["events"].to_list() == [4, 4, 4, 2]
    assert trace["events_total"].to_list() == [4, 8, 12, 14]
    assert trace["draws_total"][-1] == trace["blocks_total"][-1] == 14
    assert audit["families"][S3] == {"module": "5B.S3", "substream_label": "bucket_count", "events": 14,
                                     "draws": 14, "blocks": 14, "trace_appends": 4}
    assert (audit["seed"], audit["algorithm"], audit["policy_version"]) == (2**64 - 5, "philox2x64-10", "v1.0.0")


def test_a_clean_ledger_reconciles(policy):
    events, trace, audit, expected = s3_ledger(policy)
    assert ledger.reconcile(S3, events, trace, audit, expected) == []


def test_reconcile_catches_a_missing_event(policy):
    events, trace, audit, expected = s3_ledger(policy)
    found = ledger.reconcile(S3, events.filter(pl.int_range(pl.len()) != 5), trace, audit, expected)
    assert any("the event log has 13 events but the trace totals 14" in f for f in found)
    assert any("13 events logged, 14 expected" in f for f in found)


def test_reconcile_catches_a_wrong_draws_value(policy):
    events, trace, audit, expected = s3_ledger(policy)
    wrong = events.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(2).otherwise(pl.col("draws")).alias("draws"))
    found = ledger.reconcile(S3, wrong, trace, audit, expected)
    assert any("1 events have draws != draws_per_event (rows 9" in f for f in found)
    assert any("trace draws of append(s) 2 differ from their events" in f for f in found)


def test_reconcile_catches_a_trace_total_off_by_one(policy):
    events, trace, audit, expected = s3_ledger(policy)
    off = trace.with_columns(pl.when(pl.col("append_index") == 2).then(pl.col("blocks_total") + 1)
                             .otherwise(pl.col("blocks_total")).alias("blocks_total"))
    found = ledger.reconcile(S3, events, off, audit, expected)
    assert found == [f"{S3}: trace blocks_total is not the running sum of blocks from append_index 2 (13 != 12)"]


def test_reconcile_catches_overlapping_counters(policy):
    events, trace, audit, expected = s3_ledger(policy)
    # event 8 (the US entity, bucket 1) re-uses the counter of event 7 (bucket 0): same stream, same block
    reused = events.with_columns(
        pl.when(pl.int_range(pl.len()) == 8).then(pl.col("rng_counter_before_lo").shift(1))
        .otherwise(pl.col("rng_counter_before_lo")).alias("rng_counter_before_lo"),
        pl.when(pl.int_range(pl.len()) == 8).then(pl.col("rng_counter_after_lo").shift(1))
        .otherwise(pl.col("rng_counter_after_lo")).alias("rng_counter_after_lo"))
    found = ledger.reconcile(S3, reused, trace, audit, {})
    assert len(found) == 1 and "1 events reuse counters of an earlier event in the same stream" in found[0]
    found = ledger.reconcile(S3, reused, trace, audit, expected)
    assert any("do not start at their stream base + block offset (rows 8)" in f for f in found)


def test_reconcile_catches_an_audit_total_mismatch(policy):
    events, trace, audit, expected = s3_ledger(policy)
    audit["families"][S3]["draws"] += 1
    assert ledger.reconcile(S3, events, trace, audit, expected) == [
        f"{S3}: audit draws = 15 but the trace totals 14"]


def test_reconcile_catches_counter_after_that_is_not_before_plus_blocks(policy):
    events, trace, audit, expected = s3_ledger(policy)
    bad = events.with_columns((pl.col("rng_counter_after_lo") + 1).alias("rng_counter_after_lo"))
    found = ledger.reconcile(S3, bad, trace, audit, expected)
    assert found == [f"{S3}: counter_after != counter_before + blocks in 14 events (rows 0, 1, 2, …)"]


def test_replay_rederives_the_blocks_of_a_sample_of_events(policy):
    events, *_ = s3_ledger(policy)
    sample = events[[1, 8, 13]]
    replayed = ledger.replay(policy, S3, sample, IDENTITY)
    assert replayed.mismatches == ()
    assert replayed.event_start.tolist() == [0, 1, 2, 3]
    x0, x1 = blocks(sample["rng_key"].to_numpy(), sample["rng_counter_before_hi"].to_numpy(),
                    sample["rng_counter_before_lo"].to_numpy(), 0)
    assert replayed.x0.tolist() == x0.tolist() and replayed.x1.tolist() == x1.tolist()


def test_replay_reports_a_logged_counter_the_derivation_does_not_give(policy):
    events, *_ = s3_ledger(policy)
    shifted = events.with_columns((pl.col("bucket_index") + 1).alias("bucket_index"))[[3]]
    replayed = ledger.replay(policy, S3, shifted, IDENTITY)
    assert len(replayed.mismatches) == 1 and "rng_counter_before_lo" in replayed.mismatches[0]
    other_seed = ledger.replay(policy, S3, events[[3]], {**IDENTITY, "seed": 1})
    assert any("seed" in m for m in other_seed.mismatches) and any("rng_key" in m for m in other_seed.mismatches)


def test_replay_of_a_latent_event_expands_its_h_blocks(policy):
    family = policy["families"][S2]
    horizon = 6
    groups = pl.DataFrame({"group_id": ["baseline|retail_daytime|card_present|physical|zg01|b03",
                                        "baseline|nightlife|card_not_present|virtual|zg15|b30"]})
    key, hi, lo = stream_bases(S2, IDENTITY["manifest_fingerprint"], IDENTITY["parameter_hash"], IDENTITY["seed"],
                               IDENTITY["scenario_id"], [f"group_id={g}" for g in groups["group_id"]])
    draws, n_blocks = ledger.expected_per_event(family, horizon_buckets=horizon)
    assert (draws, n_blocks) == (12, 6)
    events = ledger.event_frame(S2, family, IDENTITY, groups, key, hi, lo, draws=draws, blocks=n_blocks)
    assert not contracts.table_violations(events, "schemas.5B.yaml#/rng/rng_event_arrival_lgcp_gaussian")
    replayed = ledger.replay(policy, S2, events, IDENTITY)
    assert replayed.mismatches == () and replayed.event_start.tolist() == [0, 6, 12]
    x0, _ = blocks(key[1], hi[1], lo[1], np.arange(horizon, dtype=np.uint64), state="S2")
    assert replayed.x0[6:].tolist() == x0.tolist()


def test_expected_per_event_reads_the_count_law(policy):
    family = policy["families"][S3]
    assert ledger.expected_per_event(family, count_law_id="poisson") == (1, 1)
    assert ledger.expected_per_event(family, count_law_id="nb2") == (2, 1)
    with pytest.raises(ValueError):
        ledger.expected_per_event(policy["families"][S2])


def test_event_frame_refuses_a_counter_that_wraps(policy):
    domain = pl.DataFrame({"group_id": ["g"]})
    top = np.array([2**64 - 1], dtype=np.uint64)
    with pytest.raises(ArrivalError) as err:
        ledger.event_frame(S2, policy["families"][S2], IDENTITY, domain, np.array([1], dtype=np.uint64), top,
                           top - np.uint64(2), draws=8, blocks=4)
    assert err.value.code == "5B.S2.RNG_ACCOUNTING_MISMATCH"

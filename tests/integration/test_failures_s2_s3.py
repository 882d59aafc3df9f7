"""S2/S3/audit failure matrix: each defect fails with its exact code, leaves no output or temp file, reports FAIL."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from s2s3lib import edited_config, identity, outputs, path, revalidate_5a, run_all, store, world_root_of

from arrival_core import gate, pipeline
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo


def _expect_failure(st: Store, runner: Callable, code: str, *, scenario_id: str = "baseline_v1",
                    seed: int = 42) -> ArrivalError:
    """Run a state that must fail: its code, no new or changed output, no temp file, and a FAIL report."""
    before = outputs(st.run_root)
    run_id = f"expected-failure-{code.replace('.', '-')}"
    with pytest.raises(ArrivalError) as err:
        runner(st, PartitionKey(seed, scenario_id), pipeline.RunOptions(run_id=run_id))
    assert err.value.code == code, err.value.message
    assert outputs(st.run_root) == before
    assert not [p for p in (st.run_root / "data").rglob("*") if ".tmp-" in p.name]
    state = runner.__name__.removeprefix("run_").upper()
    report = json.loads(st.path("run_report_5B", state=state, seed=seed, scenario_id=scenario_id,
                                run_id=run_id).read_bytes())
    assert (report["status"], report["error_code"], report["metrics"]["scenario_count_succeeded"]) == ("FAIL", code, 0) \
        if state != "AUDIT" else (report["status"], report["error_code"]) == ("FAIL", code)
    return err.value


def _surface_file(st: Store, world: WorldInfo, scenario_id: str = "baseline_v1") -> Path:
    return st.path("merchant_zone_scenario_local_5A", manifest_fingerprint=world.manifest_fingerprint,
                   scenario_id=scenario_id)


def _rewrite(file: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    """Edit a table in place; an edited upstream table is re-validated by its bundle, as upstream would."""
    change(pl.read_parquet(file)).write_parquet(file)
    if "5A" in file.parts:
        revalidate_5a(world_root_of(file))


def _set_lambda(value: float) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def change(frame: pl.DataFrame) -> pl.DataFrame:
        row = pl.int_range(pl.len()) == 1000
        return frame.with_columns(pl.when(row).then(pl.lit(value)).otherwise("lambda_local_scenario")
                                  .alias("lambda_local_scenario"))
    return change


# ---- S2 --------------------------------------------------------------------------------------------------------

def test_s1_output_missing(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    pipeline.run_s0(st, PartitionKey(42, "baseline_v1"))
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.S1_OUTPUT_MISSING")
    assert "s1_time_grid_5B" in err.message


def test_receipt_digest_mismatch_fails_the_gate(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s1")
    receipt = path(st, "s0_gate_receipt_5B", ident)
    doc = json.loads(receipt.read_bytes())
    doc["sealed_inputs_digest"] = "0" * 64
    receipt.write_text(json.dumps(doc))
    _expect_failure(st, pipeline.run_s2, "5B.S2.S0_GATE_INVALID")


def test_a_lambda_row_with_no_group_is_domain_align_failed(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s1")
    grouping = path(st, "s1_grouping_5B", ident)
    dropped = pl.read_parquet(grouping).row(10, named=True)
    _rewrite(grouping, lambda f: f.filter(pl.int_range(pl.len()) != 10))
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.DOMAIN_ALIGN_FAILED")
    assert err.context["key"]["merchant_id"] == dropped["merchant_id"] and "no group" in err.message


def test_a_missing_bucket_is_bucket_set_inconsistent_naming_it(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    surface = _surface_file(st, tiny_world_copy)
    victim = pl.read_parquet(surface).row(500, named=True)
    _rewrite(surface, lambda f: f.filter(pl.int_range(pl.len()) != 500))
    run_all(st, upto="run_s1")
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.BUCKET_SET_INCONSISTENT")
    assert err.context["key"]["bucket_index"] == victim["local_horizon_bucket_index"]
    assert err.context["key"]["merchant_id"] == victim["merchant_id"]


@pytest.mark.parametrize("value", [math.nan, -0.5, math.inf], ids=["nan", "negative", "inf"])
def test_invalid_lambda_is_realised_numeric_invalid_naming_the_bucket(tiny_world_copy: WorldInfo, value):
    st = store(tiny_world_copy)
    surface = _surface_file(st, tiny_world_copy)
    victim = pl.read_parquet(surface).row(1000, named=True)
    _rewrite(surface, _set_lambda(value))
    run_all(st, upto="run_s1")
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.REALISED_NUMERIC_INVALID")
    assert err.context["key"]["local_horizon_bucket_index"] == victim["local_horizon_bucket_index"]
    assert err.context["column"] == "lambda_local_scenario"


def test_lambda_surface_changed_after_sealing_fails_the_gate(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    run_all(st, upto="run_s1")
    _rewrite(_surface_file(st, tiny_world_copy), _set_lambda(1.5))
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.S0_GATE_INVALID")
    assert "merchant_zone_scenario_local_5A" in err.message


def test_invalid_lgcp_config(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "arrival_lgcp_config_5B", lambda d: d["clipping"].update(min_factor=9.0))
    st = store(tiny_world_copy, config)
    run_all(st, upto="run_s1")
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.LGCP_CONFIG_INVALID")
    assert "clipping" in err.message


def _forge_gate_for(st: Store, sealed_ident, policy_id: str) -> None:
    """Re-seal the S0 outputs of `sealed_ident` under the store's (edited) policies, as if S0 had accepted them."""
    world = pipeline.read_world(st, "S2")
    rows = json.loads(path(st, "sealed_inputs_5B", sealed_ident).read_bytes())
    for row in rows:
        if row["artifact_id"] == policy_id:
            row["sha256_hex"] = hashlib.sha256(world.policy_bytes[policy_id]).hexdigest()
    receipt = json.loads(path(st, "s0_gate_receipt_5B", sealed_ident).read_bytes())
    receipt |= {"parameter_hash": world.parameter_hash, "sealed_inputs_digest": gate.sealed_inputs_digest(rows)}
    tokens = {"parameter_hash": world.parameter_hash, "manifest_fingerprint": world.manifest_fingerprint}
    for dataset_id, doc in (("sealed_inputs_5B", rows), ("s0_gate_receipt_5B", receipt)):
        target = st.path(dataset_id, **tokens)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))


def test_invalid_rng_policy(tiny_world_copy: WorldInfo, tmp_path: Path):
    good = store(tiny_world_copy)
    sealed = run_all(good, upto="run_s1")
    config = edited_config(tmp_path, "arrival_rng_policy_5B", lambda d: d.update(trace_append_events=0))
    st = store(tiny_world_copy, config)
    _forge_gate_for(st, sealed, "arrival_rng_policy_5B")  # the gate is read before any S1 output
    err = _expect_failure(st, pipeline.run_s2, "5B.S2.RNG_POLICY_INVALID")
    assert "trace_append_events" in err.message


def test_existing_differing_output_is_a_write_conflict_left_untouched(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s2")
    realised = path(st, "s2_realised_intensity_5B", ident)
    _rewrite(realised, lambda f: f.with_columns(pl.col("lambda_realised") * 2))
    tampered = realised.read_bytes()
    _expect_failure(st, pipeline.run_s2, "5B.S2.IO_WRITE_CONFLICT")
    assert realised.read_bytes() == tampered


# ---- S3 and the audit ------------------------------------------------------------------------------------------

def test_s2_output_missing(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    run_all(st, upto="run_s1")
    err = _expect_failure(st, pipeline.run_s3, "5B.S3.S2_OUTPUT_MISSING")
    assert "s2_realised_intensity_5B" in err.message


def test_s2_rows_regrouped_are_s3_domain_align_failed(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s2")
    other = pl.read_parquet(path(st, "s1_grouping_5B", identity(st)))["group_id"].unique().sort()[0]
    _rewrite(path(st, "s2_realised_intensity_5B", ident),
             lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 3000).then(pl.lit(other))
                                      .otherwise("group_id").alias("group_id")))
    err = _expect_failure(st, pipeline.run_s3, "5B.S3.DOMAIN_ALIGN_FAILED")
    assert "group_id" in err.message


def test_s2_row_missing_is_s3_bucket_set_inconsistent(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s2")
    _rewrite(path(st, "s2_realised_intensity_5B", ident), lambda f: f.filter(pl.int_range(pl.len()) != 42))
    _expect_failure(st, pipeline.run_s3, "5B.S3.BUCKET_SET_INCONSISTENT")


def test_invalid_count_config(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "arrival_count_config_5B", lambda d: d["nb2"].update(kappa_bounds=[9, 1]))
    st = store(tiny_world_copy, config)
    run_all(st, upto="run_s2")
    _expect_failure(st, pipeline.run_s3, "5B.S3.COUNT_CONFIG_INVALID")


def test_existing_differing_counts_are_a_write_conflict(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s3")
    _rewrite(path(st, "rng_event_arrival_bucket_count", ident), lambda f: f.with_columns(pl.col("draws") * 1))
    _expect_failure(st, pipeline.run_s3, "5B.S3.IO_WRITE_CONFLICT")


def test_an_event_log_that_lost_a_row_fails_the_audit(tiny_world_copy: WorldInfo):
    st = store(tiny_world_copy)
    ident = run_all(st, upto="run_s3")
    _rewrite(path(st, "rng_event_arrival_bucket_count", ident), lambda f: f.filter(pl.int_range(pl.len()) != 7))
    err = _expect_failure(st, pipeline.run_audit, "5B.S3.RNG_ACCOUNTING_MISMATCH")
    assert "S3.bucket_count.v1" in err.message


def _counts_rows(**changes):
    """Three valid s3_bucket_counts_5B rows (strings dictionary-encoded, as S3 streams them), some columns changed."""
    import numpy as np
    import pyarrow as pa

    def text(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(3, np.int32)), pa.array([value]))

    columns = {
        "manifest_fingerprint": text("a" * 64), "parameter_hash": text("b" * 64),
        "seed": pa.array([42] * 3, pa.uint64()), "scenario_id": text("baseline_v1"),
        "merchant_id": pa.array([7] * 3, pa.uint64()), "legal_country_iso": text("GB"), "tzid": text("Europe/London"),
        "channel_group": text("card_present"), "bucket_index": pa.array([0, 1, 2], pa.int32()),
        "group_id": text("baseline|retail_daytime|card_present|physical|zg01|b02"),
        "lambda_realised": pa.array([0.0, 1.5, 2.0]), "mu": pa.array([0.0, 1.5, 2.0]),
        "count_N": pa.array([0, 1, 2], pa.int64()), "count_law_id": text("poisson"),
        "count_capped": pa.array([False] * 3),
    }
    columns |= {k: (text(v) if isinstance(v, str) else v) for k, v in changes.items()}
    return pa.table(columns)


def test_streamed_value_sets_refuse_nulls_nonfinite_and_off_contract_values(tmp_path: Path):
    import pyarrow as pa

    def value_sets() -> pipeline.ValueSets:
        return pipeline.ValueSets(store(tmp_path), "s3_bucket_counts_5B", tmp_path / "f", "5B.S3.COUNTS_SCHEMA_INVALID")

    sets = value_sets()
    sets.add(_counts_rows())
    sets.validate()
    for change, column, kind in (
        ({"mu": pa.array([0.0, float("nan"), 2.0])}, "mu", "nonfinite"),
        ({"count_law_id": "zipf"}, "count_law_id", "enum"),
        ({"count_N": pa.array([0, -4, 2], pa.int64())}, "count_N", "range"),
        ({"group_id": "not-a-group"}, "group_id", "pattern"),
    ):
        sets = value_sets()
        sets.add(_counts_rows())
        sets.add(_counts_rows(**change))  # a later chunk breaks the contract
        with pytest.raises(ArrivalError) as err:
            sets.validate()
        assert err.value.code == "5B.S3.COUNTS_SCHEMA_INVALID" and f"column '{column}': {kind}" in err.value.message
    with pytest.raises(ArrivalError) as err:
        value_sets().add(_counts_rows(mu=pa.array([0.0, None, 2.0])))
    assert err.value.context["column"] == "mu"


def test_columns_over_one_buffer_are_scanned_once_and_each_keeps_its_value_set(tmp_path: Path):
    """λ_realised and μ proven to be one array are one buffer: scanned once, both value sets are its extremes (an
    empty set would fail the validation as a null); a column over another buffer of the same length is its own."""
    import pyarrow as pa

    def value_sets() -> pipeline.ValueSets:
        return pipeline.ValueSets(store(tmp_path), "s3_bucket_counts_5B", tmp_path / "f", "5B.S3.COUNTS_SCHEMA_INVALID")

    shared = pa.array([0.0, 1.5, 2.0])
    sets = value_sets()
    sets.add(_counts_rows(lambda_realised=shared, mu=shared))
    sets.validate()
    sets = value_sets()
    sets.add(_counts_rows(lambda_realised=shared, mu=pa.array([0.0, float("nan"), 2.0])))
    with pytest.raises(ArrivalError) as err:
        sets.validate()
    assert "column 'mu': nonfinite" in err.value.message


def test_integer_extremes_come_from_the_footers_statistics_and_still_refuse_an_off_contract_value(tmp_path: Path):
    """A parquet footer's statistics give an integer column's extremes without decoding it: the same value sets
    as the decoded values, so a count below its range is refused either way; without statistics, the values."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def footer(table: pa.Table, **options) -> pq.FileMetaData:
        out = io.BytesIO()
        pq.write_table(table, out, row_group_size=2, **options)
        return pq.read_metadata(io.BytesIO(out.getvalue()))

    rows = _counts_rows(count_N=pa.array([5, -4, 2], pa.int64()))
    assert pipeline.integer_extremes(footer(rows))["count_N"] == (-4, 5)  # over both row groups
    assert "count_N" not in pipeline.integer_extremes(footer(rows, write_statistics=False))
    for options in ({}, {"write_statistics": False}):
        sets = pipeline.ValueSets(store(tmp_path), "s3_bucket_counts_5B", tmp_path / "f", "5B.S3.COUNTS_SCHEMA_INVALID")
        sets.add(rows, pipeline.integer_extremes(footer(rows, **options)))
        with pytest.raises(ArrivalError) as err:
            sets.validate()
        assert "column 'count_N': range" in err.value.message

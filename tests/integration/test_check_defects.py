"""The one-pass checks of the big tables catch each kind of defect in the published bytes: a row out of place, a
row of another partition, a value outside its contract, a wrong derived value, a missing or altered RNG event.

Each test edits one published file of a copy of a clean tiny partition (all its checks pass first) and asserts
which checks fail and which still pass, so a check that could not fail, or failed for the wrong reason, shows.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from s2s3lib import path, run_all, store

from arrival_core import checks
from arrival_core.world import WorldInfo

BASE = ("baseline_v1",)


@pytest.fixture(scope="module")
def clean(tiny_world: WorldInfo, tmp_path_factory: pytest.TempPathFactory):
    """A tiny world with S0 → audit run for seed 42, baseline (every check passes: asserted here once)."""
    root = tmp_path_factory.mktemp("defects") / "world"
    shutil.copytree(tiny_world.root, root)
    st = store(root)
    ident = run_all(st, seed=42, scenario_id="baseline_v1")
    for dataset in ("s2_realised_intensity_5B", "s2_latent_field_5B", "s3_bucket_counts_5B",
                    "rng_event_arrival_bucket_count"):
        failed = [o.name for o in checks.evaluate(st, ident, dataset) if not o.passed]
        assert failed == [], (dataset, failed)
    return st, ident


def _edited(clean, tmp_path: Path, dataset: str, edit: Callable[[pl.DataFrame], pl.DataFrame]) -> dict:
    """Evaluate `dataset`'s checks on a copy whose published file went through `edit`; {check: passed}."""
    st, ident = clean
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    edited = store(root)
    file = path(edited, dataset, ident)
    edit(pl.read_parquet(file)).write_parquet(file)
    outcomes = checks.evaluate(edited, ident, dataset)
    return {o.name: o.passed for o in outcomes} | {"_problems": [o.summary for o in outcomes if not o.passed]}


def _at(row: int, column: str, value) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def edit(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, frame[column].dtype))
                                  .otherwise(pl.col(column)).alias(column))
    return edit


def _swap(i: int, j: int) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def edit(frame: pl.DataFrame) -> pl.DataFrame:
        order = np.arange(frame.height)
        order[[i, j]] = order[[j, i]]
        return frame[order]
    return edit


def _failing(result: dict) -> set[str]:
    return {k for k, v in result.items() if k != "_problems" and not v}


@pytest.mark.parametrize("dataset", ["s2_realised_intensity_5B", "s3_bucket_counts_5B"])
def test_two_rows_out_of_place_fail_domain_and_key_only(clean, tmp_path, dataset):
    result = _edited(clean, tmp_path, dataset, _swap(5, 6))
    assert _failing(result) == {checks.DOMAIN_COMPLETE, checks.PRIMARY_KEY_UNIQUE}, result["_problems"]


@pytest.mark.parametrize("dataset", ["s2_realised_intensity_5B", "s3_bucket_counts_5B"])
def test_a_row_of_another_seed_fails_domain(clean, tmp_path, dataset):
    result = _edited(clean, tmp_path, dataset, _at(100, "seed", 43))
    assert checks.DOMAIN_COMPLETE in _failing(result) and "seed" in " ".join(result["_problems"])


def test_an_off_pattern_zone_fails_the_schema_check(clean, tmp_path):
    result = _edited(clean, tmp_path, "s3_bucket_counts_5B", _at(0, "legal_country_iso", "zz"))
    assert checks.SCHEMA_VALID in _failing(result), result["_problems"]


def test_a_negative_intensity_fails_schema_and_numeric_checks(clean, tmp_path):
    result = _edited(clean, tmp_path, "s2_realised_intensity_5B", _at(7, "lambda_realised", -1.0))
    assert {checks.SCHEMA_VALID, checks.NUMERIC_VALID} <= _failing(result), result["_problems"]
    assert checks.DOMAIN_COMPLETE not in _failing(result)


def test_a_count_above_its_cap_fails_the_numeric_check(clean, tmp_path):
    st, ident = clean
    cap = checks_policy_cap(st, ident)
    result = _edited(clean, tmp_path, "s3_bucket_counts_5B", _at(3, "count_N", cap + 1))
    assert checks.NUMERIC_VALID in _failing(result), result["_problems"]


def checks_policy_cap(st, ident) -> int:
    from arrival_core import counts, pipeline
    gate = pipeline.load_gate(st, ident, state="S3")
    return counts.parse_count_policy(gate.policy("arrival_count_config_5B")).max_count


def test_a_changed_latent_factor_fails_numeric_and_replay_checks(clean, tmp_path):
    result = _edited(clean, tmp_path, "s2_latent_field_5B", _at(2, "lambda_random_component", 1.2345))
    assert checks.NUMERIC_VALID in _failing(result) and checks.DOMAIN_COMPLETE not in _failing(result)


def test_a_latent_field_row_out_of_place_fails_its_key_and_domain(clean, tmp_path):
    result = _edited(clean, tmp_path, "s2_latent_field_5B", _swap(0, 1))
    assert {checks.DOMAIN_COMPLETE, checks.PRIMARY_KEY_UNIQUE} <= _failing(result), result["_problems"]


def test_a_missing_count_event_fails_key_and_accounting(clean, tmp_path):
    result = _edited(clean, tmp_path, "rng_event_arrival_bucket_count", lambda f: f.filter(pl.int_range(pl.len()) != 10))
    assert {checks.PRIMARY_KEY_UNIQUE, checks.RNG_ACCOUNTING} <= _failing(result), result["_problems"]
    assert checks.SCHEMA_VALID not in _failing(result)


def test_an_altered_counter_fails_accounting_naming_the_column(clean, tmp_path):
    edit = lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.col("rng_counter_after_lo") + 1)
        .otherwise(pl.col("rng_counter_after_lo")).alias("rng_counter_after_lo"))
    result = _edited(clean, tmp_path, "rng_event_arrival_bucket_count", edit)
    assert _failing(result) == {checks.RNG_ACCOUNTING}, result["_problems"]
    assert "rng_counter_after_lo" in " ".join(result["_problems"])


def test_a_changed_factor_in_the_realised_rows_fails_numeric_and_replay(clean, tmp_path):
    st, ident = clean
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    edited = store(root)
    file = path(edited, "s2_realised_intensity_5B", ident)
    _at(3, "lambda_random_component", 1.0001)(pl.read_parquet(file)).write_parquet(file)
    outcomes = {o.name: o for o in checks.evaluate(edited, ident, "s2_realised_intensity_5B", replay="full")}
    assert not outcomes[checks.NUMERIC_VALID].passed and not outcomes[checks.RNG_REPLAY].passed
    assert outcomes[checks.RNG_REPLAY].metadata["offending_keys"][0]["bucket_index"] == 3
    assert outcomes[checks.DOMAIN_COMPLETE].passed and outcomes[checks.SCHEMA_VALID].passed


def test_a_law_bug_in_the_engine_fails_the_replay_because_the_reference_shares_no_code(tiny_world_copy: WorldInfo,
                                                                                        monkeypatch):
    """The engine's normals off by one part in 10^9 — S2 and the checks both run with the bug, as a shared sampler
    would; the independent reference still derives the law's values, so both S2 replays fail."""
    from arrival_core.rng import variates
    true_normals = variates.box_muller
    monkeypatch.setattr(variates, "box_muller", lambda x0, x1: true_normals(x0, x1) * (1.0 + 1e-9))
    st = store(tiny_world_copy)
    ident = run_all(st, seed=42, scenario_id="baseline_v1", upto="run_s2")
    for dataset in ("s2_realised_intensity_5B", "s2_latent_field_5B"):
        outcomes = {o.name: o for o in checks.evaluate(st, ident, dataset)}
        assert not outcomes[checks.RNG_REPLAY].passed, dataset
        assert outcomes[checks.NUMERIC_VALID].passed, dataset


def test_a_latent_field_of_another_shape_fails_the_realised_rows_comparison_not_the_evaluation(clean, tmp_path):
    """The realised rows' ξ are compared with the published latent field only when it holds one ξ per group and
    bucket; a field of another shape fails that rule, by name, and the realised rows' other rules still run."""
    st, ident = clean
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    edited = store(root)
    file = path(edited, "s2_latent_field_5B", ident)
    pl.read_parquet(file).head(-1).write_parquet(file)
    outcomes = {o.name: o for o in checks.evaluate(edited, ident, "s2_realised_intensity_5B")}
    assert not outcomes[checks.NUMERIC_VALID].passed
    assert "not one per group and bucket" in outcomes[checks.NUMERIC_VALID].summary
    assert outcomes[checks.SCHEMA_VALID].passed and outcomes[checks.RNG_REPLAY].passed


def test_the_audit_check_reconciles_the_ledgers_its_state_read(clean, tmp_path):
    """The audit step's check takes the ledgers the audit read (`checks.KNOWN`) instead of reading the logs again:
    with them its outcomes are those of a check that reads them itself, and ledgers other than the published
    files' fail RNG_ACCOUNTING, so what is known is what is judged."""
    import dataclasses

    from arrival_core import pipeline
    from arrival_core.identity import PartitionKey

    st, ident = clean
    root = tmp_path / "w"
    shutil.copytree(st.run_root, root)
    copy = store(root)
    known = {k: v for k, v in pipeline.run_audit(copy, PartitionKey(42, "baseline_v1")).diagnostics.items()
             if k in checks.KNOWN}
    assert set(known) == {"family_ledgers"}

    def outcomes(ledgers: object | None) -> dict:
        shared = checks.new_context(copy, ident, known=None if ledgers is None else {"family_ledgers": ledgers})
        return {o.name: (o.passed, o.summary) for o in checks.evaluate(copy, ident, "rng_audit_log_5B", shared=shared)}

    assert outcomes(known["family_ledgers"]) == outcomes(None)
    assert all(passed for passed, _ in outcomes(None).values())
    latent_ledger, count_ledger = known["family_ledgers"]
    off = dataclasses.replace(count_ledger, events=dataclasses.replace(count_ledger.events,
                                                                       events=count_ledger.events.events + 1))
    failed = outcomes((latent_ledger, off))
    assert not failed[checks.RNG_ACCOUNTING][0], failed

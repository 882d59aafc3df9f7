"""Sealed-input assets: a new seed of a synthetic world gets its 3B file; a real world never invents one."""

from __future__ import annotations

import json

import dagster as dg
from graph_helpers import failures, graph_for, materialized, run_partition

from arrival_core import pipeline
from arrival_core.store import Store

SEED_SCOPED = [dg.AssetKey("virtual_classification_3B")]


def _seed_file(root, seed: int):
    store = Store(run_root=root)
    return store.path(
        "virtual_classification_3B", seed=seed, manifest_fingerprint=pipeline.read_receipt(store)["manifest_fingerprint"]
    )


def test_new_seed_of_a_synthetic_world_gets_its_file_on_first_use(world_root):
    assert not _seed_file(world_root, 7).exists()
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root), instance, "stress_v1|7", selection=SEED_SCOPED)
    assert result.success
    meta = materialized(result)["virtual_classification_3B"]
    assert meta["path"] == str(_seed_file(world_root, 7)) and meta["dagster/row_count"] > 0


def test_real_world_never_invents_a_seed_file_and_names_what_is_missing(world_root):
    receipt_path = world_root / "run_receipt.json"
    receipt = json.loads(receipt_path.read_text())
    receipt_path.write_text(json.dumps({**receipt, "synthetic": False}))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(graph_for(world_root), instance, "baseline_v1|7", selection=SEED_SCOPED)
    failed = failures(result)["sealed_inputs"]
    assert failed["error_code"] == "5B.S0.SEALED_INPUTS_INCOMPLETE"
    assert str(_seed_file(world_root, 7)) in failed["error_message"]
    assert not _seed_file(world_root, 7).exists()


def test_tampered_table_fails_its_schema_check_naming_the_column(world_root):
    import polars as pl

    store = Store(run_root=world_root)
    path = store.path("merchant_zone_profile_5A", manifest_fingerprint=pipeline.read_receipt(store)["manifest_fingerprint"])
    pl.read_parquet(path).with_columns(pl.col("expected_weekly_arrivals").cast(pl.Float32)).write_parquet(
        path
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(
            graph_for(world_root),
            instance,
            "baseline_v1|1",
            selection=[dg.AssetKey("merchant_zone_profile_5A")],
        )
    failed = failures(result)["sealed_inputs"]
    assert failed["error_code"] == "5B.S0.INPUT_SCHEMA_INVALID"
    assert "expected_weekly_arrivals" in failed["error_message"]

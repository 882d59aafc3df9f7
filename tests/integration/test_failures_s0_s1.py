"""The S0/S1 failure matrix: each broken world or policy fails with its exact code and creates no output file."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from configlib import edited_config
from s2s3lib import revalidate_5a

from arrival_core import contracts, gate, pipeline
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo

SEGMENTS = gate.UPSTREAM_SEGMENTS


def _outputs(root: Path) -> dict[str, bytes]:
    """Every 5B output file under a run root (run reports are logs and excluded), by relative path."""
    base = root / "data" / "layer2" / "5B"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and "run_report" not in p.parts}


def _expect_failure(
    store: Store, runner: Callable, code: str, *, scenario_id: str = "baseline_v1", seed: int = 42
) -> ArrivalError:
    """Run a state that must fail: assert its code, that no output file appeared, and that a FAIL report says so."""
    before = _outputs(store.run_root)
    run_id = f"expected-failure-{code.replace('.', '-')}"
    with pytest.raises(ArrivalError) as err:
        runner(store, PartitionKey(seed, scenario_id), pipeline.RunOptions(run_id=run_id))
    assert err.value.code == code, err.value.message
    assert _outputs(store.run_root) == before
    state = runner.__name__.removeprefix("run_").upper()
    report_path = store.path("run_report_5B", state=state, seed=seed, scenario_id=scenario_id, run_id=run_id)
    report = json.loads(report_path.read_bytes())
    assert (report["status"], report["error_code"]) == ("FAIL", code)
    return err.value


def _store(world: WorldInfo, config_dir: Path | None = None) -> Store:
    return Store(run_root=world.root, config_dir=config_dir or contracts.DEFAULT_CONFIG_DIR)


def _sealed(world: WorldInfo, config_dir: Path | None = None, scenario_id: str = "baseline_v1") -> Store:
    """A store over the world whose S0 has already passed."""
    store = _store(world, config_dir)
    pipeline.run_s0(store, PartitionKey(42, scenario_id))
    return store


def _rewrite_table(store: Store, dataset_id: str, change: Callable[[pl.DataFrame], pl.DataFrame], **tokens) -> None:
    mf = json.loads(store.path("run_receipt").read_bytes())["manifest_fingerprint"]
    path = store.path(dataset_id, manifest_fingerprint=mf, **tokens)
    change(pl.read_parquet(path)).write_parquet(path)
    revalidate_5a(store.run_root)


# ---- run receipt ---------------------------------------------------------------------------------------------------

def test_missing_run_receipt(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    store.path("run_receipt").unlink()
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.RUN_RECEIPT_MISSING")
    assert "run_receipt.json" in err.message


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text[: len(text) // 2],  # truncated JSON
        lambda text: json.dumps({**json.loads(text), "manifest_fingerprint": "not-a-fingerprint"}),
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "parameter_hash"}),
    ],
    ids=["truncated", "bad_fingerprint", "no_parameter_hash"],
)
def test_malformed_run_receipt(tiny_world_copy: WorldInfo, change):
    store = _store(tiny_world_copy)
    path = store.path("run_receipt")
    path.write_text(change(path.read_text()))
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.RUN_RECEIPT_INVALID")
    assert "run_receipt.json" in err.message


# ---- upstream HashGates: 7 segments x (missing flag, flag digest mismatch, tampered member) -------------------------

def _bundle_folder(store: Store, world: WorldInfo, segment: str) -> tuple[Path, contracts.DatasetEntry]:
    entry = store.entry(f"validation_bundle_{segment}")
    return store.path(entry.id, manifest_fingerprint=world.manifest_fingerprint), entry


def _remove_flag(folder: Path, entry: contracts.DatasetEntry) -> None:
    (folder / entry.raw["flag_file"]).unlink()


def _wrong_flag(folder: Path, entry: contracts.DatasetEntry) -> None:
    wrong = "0" * 64
    text = json.dumps({"bundle_digest_sha256": wrong}) if entry.owner_segment == "5A" else f"sha256_hex = {wrong}\n"
    (folder / entry.raw["flag_file"]).write_text(text)


def _tamper_member(folder: Path, entry: contracts.DatasetEntry) -> None:
    first = json.loads((folder / entry.raw["index_file"]).read_text())["entries"][0]["path"]
    with open(folder / first, "ab") as f:
        f.write(b" ")


BREAKS = {
    "missing_flag": (_remove_flag, "MISSING: flag"),
    "flag_digest_mismatch": (_wrong_flag, "FAIL: flag"),
    "tampered_member": (_tamper_member, "FAIL: member"),
}


@pytest.mark.parametrize("how", list(BREAKS))
@pytest.mark.parametrize("segment", SEGMENTS)
def test_broken_upstream_bundle_fails_the_gate_naming_the_segment(tiny_world_copy: WorldInfo, segment, how):
    store = _store(tiny_world_copy)
    folder, entry = _bundle_folder(store, tiny_world_copy, segment)
    breaker, reason = BREAKS[how]
    breaker(folder, entry)
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.UPSTREAM_NOT_PASS")
    assert f"{segment} {reason}" in err.message
    assert err.context["segment"] == segment
    others = [s for s in SEGMENTS if s != segment]
    assert not any(f"{s} MISSING" in err.message or f"{s} FAIL" in err.message for s in others)


# ---- policies ------------------------------------------------------------------------------------------------------

def test_policy_failing_its_schema(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "time_grid_policy_5B", lambda d: d.update(bucket_duration_seconds=1200))
    err = _expect_failure(_store(tiny_world_copy, config), pipeline.run_s0, "5B.S0.POLICY_INVALID")
    assert "time_grid_policy_5B.yaml" in err.message and err.context["json_path"] == "$.bucket_duration_seconds"


def test_policy_with_an_unknown_key(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = edited_config(tmp_path, "grouping_policy_5B", lambda d: d.update(zone_groups=8))
    err = _expect_failure(_store(tiny_world_copy, config), pipeline.run_s0, "5B.S0.POLICY_INVALID")
    assert "grouping_policy_5B.yaml" in err.message and "zone_groups" in err.message


# ---- the scenario manifest ------------------------------------------------------------------------------------------

def test_empty_scenario_manifest(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    _rewrite_table(store, "scenario_manifest_5A", lambda m: m.head(0))
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.SCENARIO_MANIFEST_INVALID")
    assert "no rows" in err.message


def test_duplicate_scenario_ids(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    _rewrite_table(store, "scenario_manifest_5A", lambda m: pl.concat([m, m.filter(pl.col("is_baseline"))]))
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.SCENARIO_MANIFEST_INVALID")
    assert "pk_duplicate" in err.message and "baseline_v1" in err.message


def test_invalid_scenario_id(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    _rewrite_table(store, "scenario_manifest_5A",
                   lambda m: m.with_columns(pl.col("scenario_id").str.replace("stress_v1", "Stress V1")))
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.SCENARIO_MANIFEST_INVALID")
    assert "'Stress V1'" in err.message and err.context["column"] == "scenario_id"


def test_scenario_outside_the_manifest_is_an_identity_error(tiny_world_copy: WorldInfo):
    err = _expect_failure(_store(tiny_world_copy), pipeline.run_s0, "5B.IDENTITY_INVALID", scenario_id="surge_v9")
    assert "surge_v9" in err.message


@pytest.mark.parametrize("seed, scenario_id", [("-1", "baseline_v1"), ("007", "baseline_v1"), (2**64, "baseline_v1"),
                                               (42, "../baseline_v1"), (42, "Baseline")])
def test_invalid_partition_keys_are_refused_where_they_enter(seed, scenario_id):
    with pytest.raises(ArrivalError) as err:
        PartitionKey(seed, scenario_id)
    assert err.value.code == "5B.IDENTITY_INVALID"


def test_a_runner_takes_only_a_validated_partition_key_and_writes_nothing_else(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    for runner in (pipeline.run_s0, pipeline.run_s1):
        with pytest.raises(TypeError, match="PartitionKey"):
            runner(store, ("-1", "baseline_v1"))
    assert not (tiny_world_copy.root / "data" / "layer2" / "5B").exists()  # not even a report


def test_lambda_surface_missing_for_a_scenario(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    path = store.path("merchant_zone_scenario_local_5A", manifest_fingerprint=tiny_world_copy.manifest_fingerprint,
                      scenario_id="stress_v1")
    path.unlink()
    err = _expect_failure(store, pipeline.run_s0, "5B.S0.SEALED_INPUTS_INCOMPLETE")
    assert "merchant_zone_scenario_local_5A" in err.message and "scenario_id=stress_v1" in err.message


# ---- S1: horizons, domain and realism --------------------------------------------------------------------------

def test_misaligned_horizon(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    _rewrite_table(store, "scenario_manifest_5A",
                   lambda m: m.with_columns(pl.col("horizon_start_utc") + timedelta(minutes=30)))
    _sealed(tiny_world_copy)
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.HORIZON_MISALIGNED")
    assert "horizon_start_utc" in err.message and "baseline_v1" in err.message


def test_horizon_over_the_guardrail(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    _rewrite_table(store, "scenario_manifest_5A",
                   lambda m: m.with_columns((pl.col("horizon_start_utc") + timedelta(days=401)).alias("horizon_end_utc")))
    _sealed(tiny_world_copy)
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.GRID_GUARDRAIL_BREACH")
    assert "horizon of 401 days outside [1, 400]" in err.message


def test_lambda_entity_absent_from_the_profile(tiny_world_copy: WorldInfo):
    store = _store(tiny_world_copy)
    dropped = {}

    def drop_first(profile: pl.DataFrame) -> pl.DataFrame:
        dropped.update(profile.row(0, named=True))
        return profile.slice(1)

    _rewrite_table(store, "merchant_zone_profile_5A", drop_first)
    _sealed(tiny_world_copy)
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.DOMAIN_INVALID")
    assert "merchant_zone_profile_5A" in err.message
    assert err.context["key"]["merchant_id"] == dropped["merchant_id"]
    assert err.context["key"]["tzid"] == dropped["tzid"]


def test_virtual_classification_missing_for_the_seed(tiny_world_copy: WorldInfo):
    store = _sealed(tiny_world_copy)
    store.path("virtual_classification_3B", seed=42, manifest_fingerprint=tiny_world_copy.manifest_fingerprint).unlink()
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.DOMAIN_INVALID")
    assert "virtual_classification_3B for seed 42 is missing" in err.message


def test_merchant_missing_from_the_virtual_classification(tiny_world_copy: WorldInfo):
    store = _sealed(tiny_world_copy)
    _rewrite_table(store, "virtual_classification_3B", lambda v: v.slice(1), seed=42)
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.DOMAIN_INVALID")
    assert "virtual_classification_3B" in err.message and "merchant_id" in err.context["key"]


def test_realism_targets_violated_at_demo_scale(demo_world: WorldInfo, tmp_path: Path):
    root = tmp_path / "demo"
    shutil.copytree(demo_world.root, root)
    world = replace(demo_world, root=root.resolve())
    config = edited_config(tmp_path, "grouping_policy_5B",
                            lambda d: d["realism_targets"].update(min_multi_member_fraction=0.95, max_group_share=0.005))
    store = _sealed(world, config)
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.GROUP_REALISM_FAILED")
    assert "multi-member fraction" in err.message and "largest group share" in err.message
    assert err.context["entity_count"] == world.entities and err.context["realism_enforced"] is True


# ---- S1 refuses inputs that moved under the gate ------------------------------------------------------------------

def test_profile_changed_after_s0_fails_the_gate(tiny_world_copy: WorldInfo):
    store = _sealed(tiny_world_copy)
    _rewrite_table(store, "merchant_zone_profile_5A",
                   lambda p: p.with_columns(pl.col("expected_weekly_arrivals") * 2))
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.S0_GATE_INVALID")
    assert "changed since S0 sealed it" in err.message


def test_edited_sealed_inputs_fail_the_gate(tiny_world_copy: WorldInfo):
    store = _sealed(tiny_world_copy)
    ident = pipeline.resolve_identity(store, PartitionKey(42, "baseline_v1"), state="S1")
    path = store.path("sealed_inputs_5B", **ident.tokens())
    rows = json.loads(path.read_bytes())
    rows[0]["notes"] = "edited"
    path.write_text(json.dumps(rows))
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.S0_GATE_INVALID")
    assert "sealed_inputs_digest" in err.message


def test_conflicting_existing_output_is_left_untouched(tiny_world_copy: WorldInfo):
    store = _sealed(tiny_world_copy)
    result = pipeline.run_s1(store, PartitionKey(42, "baseline_v1"))
    grouping_file = next(p.path for p in result.published if p.dataset_id == "s1_grouping_5B")
    grouping_file.write_bytes(grouping_file.read_bytes() + b"x")
    err = _expect_failure(store, pipeline.run_s1, "5B.S1.IO_WRITE_CONFLICT")
    assert str(grouping_file) in err.message

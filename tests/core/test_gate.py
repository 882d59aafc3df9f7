"""S0 gate as pure functions: bundle judgement, manifest checks, sealed rows, digests, receipt and the Gate value."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml

from arrival_core import contracts, gate
from arrival_core.encoding import canonical_json, sha256_hex
from arrival_core.errors import ArrivalError
from arrival_core.gate import BundleMember, BundleNotPass, Observed, SegmentGate
from arrival_core.identity import Identity, compute_parameter_hash
from arrival_core.store import Store

CD = contracts.DEFAULT_CONTRACTS_DIR
MF = "f" * 64
UPSTREAM_PH = "e" * 64
ENTRIES = {e.id: e for e in gate.sealed_entries()}
H1, H2 = sha256_hex(b"one"), sha256_hex(b"two")


# ---- bundles -------------------------------------------------------------------------------------------------------

def _index(segment: str = "1A", mf: str = MF, entries=None) -> bytes:
    entries = entries if entries is not None else [{"path": "a.json", "sha256_hex": H1},
                                                   {"path": "b/c.json", "sha256_hex": H2}]
    return json.dumps({"segment": segment, "manifest_fingerprint": mf, "entries": entries}).encode()


def _parse(raw: bytes, bundle: str = "validation_bundle_1A"):
    return gate.parse_bundle_index(ENTRIES[bundle], raw, MF, where="index.json", contracts_dir=CD)


def test_bundle_index_gives_members_in_order():
    assert _parse(_index()) == (BundleMember("a.json", H1), BundleMember("b/c.json", H2))


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"{not json", "is not JSON"),
        (_index(segment="1B"), "names segment 1B, not 1A"),
        (_index(mf="0" * 64), "names manifest_fingerprint"),
        (_index(entries=[{"path": "b.json", "sha256_hex": H1}, {"path": "a.json", "sha256_hex": H2}]), "not sorted"),
        (_index(entries=[{"path": "../escape", "sha256_hex": H1}]), "index"),
        (_index(entries=[]), "index"),
    ],
)
def test_bad_bundle_index_fails_the_segment(raw, text):
    with pytest.raises(BundleNotPass) as verdict:
        _parse(raw)
    assert verdict.value.status == "FAIL" and text in verdict.value.reason


def test_missing_or_changed_member_fails():
    members = _parse(_index())
    gate.check_members(members, {"a.json": H1, "b/c.json": H2}, folder="f")
    with pytest.raises(BundleNotPass, match="member b/c.json is missing"):
        gate.check_members(members, {"a.json": H1, "b/c.json": None}, folder="f")
    with pytest.raises(BundleNotPass, match=f"member a.json has sha256 {H2}, the index records {H1}"):
        gate.check_members(members, {"a.json": H2, "b/c.json": H2}, folder="f")


def test_layer1_flag_is_one_text_line_and_5a_flag_is_json():
    text = gate.parse_flag(ENTRIES["validation_bundle_2B"], f"sha256_hex = {H1}\n".encode(), where="f", contracts_dir=CD)
    as_json = gate.parse_flag(ENTRIES["validation_bundle_5A"], json.dumps({"bundle_digest_sha256": H2}).encode(),
                              where="f", contracts_dir=CD)
    assert (text, as_json) == (H1, H2)


@pytest.mark.parametrize(
    "bundle, raw",
    [
        ("validation_bundle_1A", b"sha256_hex = nothex"),
        ("validation_bundle_1A", f"sha256_hex = {H1}\n\n".encode()),
        ("validation_bundle_1A", json.dumps({"bundle_digest_sha256": H1}).encode()),
        ("validation_bundle_5A", f"sha256_hex = {H1}".encode()),
        ("validation_bundle_5A", json.dumps({"bundle_digest_sha256": H1, "extra": 1}).encode()),
    ],
)
def test_malformed_flag_fails(bundle, raw):
    with pytest.raises(BundleNotPass) as verdict:
        gate.parse_flag(ENTRIES[bundle], raw, where="_passed.flag", contracts_dir=CD)
    assert verdict.value.status == "FAIL"


def test_flag_must_equal_the_recomputed_digest():
    gate.check_flag(H1, H1, where="f")
    with pytest.raises(BundleNotPass, match=f"records {H2}, the members hash to {H1}"):
        gate.check_flag(H2, H1, where="f")


def test_all_failing_segments_are_named_with_their_reasons():
    gates = [SegmentGate("1A", "PASS", H1), SegmentGate("2B", "MISSING", None, "flag x is missing"),
             SegmentGate("5A", "FAIL", None, "member m changed")]
    with pytest.raises(ArrivalError) as err:
        gate.require_all_pass(gates)
    assert err.value.code == "5B.S0.UPSTREAM_NOT_PASS"
    assert "2B MISSING: flag x is missing" in err.value.message and "5A FAIL: member m changed" in err.value.message
    assert "1A" not in err.value.context["segment"].split(",")
    gate.require_all_pass(gates[:1])


# ---- run receipt and scenario manifest --------------------------------------------------------------------------

def test_run_receipt_must_be_json_with_its_fields():
    good = {"run_id": "r", "parameter_hash": UPSTREAM_PH, "manifest_fingerprint": MF, "spec_version": "x"}
    assert gate.parse_run_receipt(json.dumps(good).encode(), where="r", code="5B.S0.RUN_RECEIPT_INVALID",
                                  contracts_dir=CD) == good
    for raw in (b"[", json.dumps({**good, "manifest_fingerprint": "ABC"}).encode(),
                json.dumps({**good, "synthetic": True}).encode()):
        with pytest.raises(ArrivalError) as err:
            gate.parse_run_receipt(raw, where="run_receipt.json", code="5B.S0.RUN_RECEIPT_INVALID", contracts_dir=CD)
        assert err.value.code == "5B.S0.RUN_RECEIPT_INVALID"


def _manifest(ids, baseline=None, stress=None) -> pl.DataFrame:
    n = len(ids)
    baseline = baseline if baseline is not None else [True] * n
    start = datetime(2026, 3, 2, tzinfo=UTC)
    return pl.DataFrame({
        "scenario_id": ids, "scenario_version": ["v1"] * n, "is_baseline": baseline,
        "is_stress": stress if stress is not None else [not b for b in baseline],
        "horizon_start_utc": [start] * n, "horizon_end_utc": [start.replace(day=9)] * n, "labels": [["x"]] * n,
    }, schema_overrides={"horizon_start_utc": pl.Datetime("us", "UTC"), "horizon_end_utc": pl.Datetime("us", "UTC"),
                         "labels": pl.List(pl.String)})


def test_manifest_gives_the_sorted_scenario_set():
    assert gate.check_scenario_manifest(_manifest(["stress_v1", "baseline_v1"], [False, True]), where="m",
                                        contracts_dir=CD) == ["baseline_v1", "stress_v1"]


@pytest.mark.parametrize(
    "manifest, text",
    [
        (_manifest([]), "no rows"),
        (_manifest(["baseline_v1", "baseline_v1"]), "pk_duplicate"),
        (_manifest(["Baseline V1"]), "scenario_id"),
        (_manifest(["a..b"]), "scenario_id"),
        (_manifest(["both"], [True], [True]), "exactly one of is_baseline / is_stress"),
        (_manifest(["neither"], [False], [False]), "exactly one of is_baseline / is_stress"),
    ],
)
def test_bad_manifest_is_refused(manifest, text):
    with pytest.raises(ArrivalError) as err:
        gate.check_scenario_manifest(manifest, where="scenario_manifest_5A.parquet", contracts_dir=CD)
    assert err.value.code == "5B.S0.SCENARIO_MANIFEST_INVALID"
    assert text in err.value.message and "scenario_manifest_5A.parquet" in err.value.message


# ---- sealed inputs, digests and the receipt ------------------------------------------------------------------------

def test_scenario_surface_digest_is_over_file_digests_in_scenario_order():
    expected = sha256_hex((H1 + H2).encode())  # baseline_v1's file, then stress_v1's
    assert gate.scenario_surface_digest([("stress_v1", H2), ("baseline_v1", H1)]) == expected
    assert gate.scenario_surface_digest([("baseline_v1", H2), ("stress_v1", H1)]) != expected


def test_structural_digest_is_the_canonical_json_of_the_template():
    entry = ENTRIES["virtual_classification_3B"]
    expected = sha256_hex(canonical_json({"artifact_id": entry.id, "schema_ref": entry.schema_ref,
                                          "path_template": entry.path, "partition_keys": ["seed", "manifest_fingerprint"]}))
    assert gate.structural_digest(entry) == expected


def _registry() -> dict:
    doc = yaml.safe_load((CD / "artefact_registry_5B.yaml").read_text())
    return gate.check_registry(doc, list(ENTRIES.values()), where="artefact_registry_5B.yaml", contracts_dir=CD)


def _observed(**changes: Observed) -> dict[str, Observed]:
    seen = {e.id: Observed(sha256_hex(e.id.encode())) for e in ENTRIES.values() if not e.seed_scoped}
    seen["merchant_zone_scenario_utc_5A"] = Observed(None, 0, ("utc/baseline", "utc/stress"))
    return seen | changes


def test_sealed_rows_are_sorted_complete_and_scope_by_the_dictionary():
    rows, optional_missing = gate.seal_inputs(list(ENTRIES.values()), _registry(), _observed())
    assert optional_missing == ["merchant_zone_scenario_utc_5A"]
    assert [(r["owner_segment"], r["artifact_id"]) for r in rows] == sorted((r["owner_segment"], r["artifact_id"])
                                                                          for r in rows)
    assert len(rows) == len(ENTRIES) - 1
    by_id = {r["artifact_id"]: r for r in rows}
    assert by_id["virtual_classification_3B"]["digest_kind"] == "structural"
    assert by_id["merchant_zone_scenario_local_5A"]["read_scope"] == "ROW_LEVEL"
    assert by_id["validation_bundle_2A"]["read_scope"] == "METADATA_ONLY"
    assert by_id["grouping_policy_5B"]["manifest_key"] == "mlr.5B.policy.grouping"
    contracts.validate_document(rows, gate.SEALED_INPUTS_SCHEMA, code="5B.S0.OUTPUT_SCHEMA_INVALID", where="rows",
                                contracts_dir=CD)


def test_required_input_missing_is_incomplete_naming_the_file():
    with pytest.raises(ArrivalError) as err:
        gate.seal_inputs(list(ENTRIES.values()), _registry(),
                         _observed(merchant_zone_scenario_local_5A=Observed(None, 1, ("lambda/stress_v1.parquet",))))
    assert err.value.code == "5B.S0.SEALED_INPUTS_INCOMPLETE"
    assert "merchant_zone_scenario_local_5A" in err.value.message and "lambda/stress_v1.parquet" in err.value.message


def test_optional_input_present_for_only_some_scenarios_is_incomplete():
    with pytest.raises(ArrivalError) as err:
        gate.seal_inputs(list(ENTRIES.values()), _registry(),
                         _observed(merchant_zone_scenario_utc_5A=Observed(None, 1, ("utc/stress",))))
    assert err.value.code == "5B.S0.SEALED_INPUTS_INCOMPLETE"


def test_registry_and_dictionary_must_list_the_same_artefacts():
    doc = yaml.safe_load((CD / "artefact_registry_5B.yaml").read_text())
    doc["artefacts"] = doc["artefacts"][1:]
    with pytest.raises(ArrivalError) as err:
        gate.check_registry(doc, list(ENTRIES.values()), where="artefact_registry_5B.yaml", contracts_dir=CD)
    assert err.value.code == "5B.CONTRACT_INVALID" and "validation_bundle_1A" in err.value.message


def test_sealed_inputs_digest_is_order_free_and_canonical():
    rows, _ = gate.seal_inputs(list(ENTRIES.values()), _registry(), _observed())
    assert gate.sealed_inputs_digest(rows[::-1]) == gate.sealed_inputs_digest(rows) == sha256_hex(canonical_json(rows))


def _policy_digests() -> list[tuple[str, str]]:
    return [(e.id, sha256_hex(e.id.encode())) for e in gate.policy_entries()]


def _receipt_and_rows(scenario: str = "baseline_v1") -> tuple[dict, list[dict], Identity]:
    rows, missing = gate.seal_inputs(list(ENTRIES.values()), _registry(), _observed())
    identity = Identity(compute_parameter_hash(UPSTREAM_PH, _policy_digests()), MF, 42, scenario)
    gates = [SegmentGate(s, "PASS", H1) for s in gate.UPSTREAM_SEGMENTS]
    receipt = gate.build_receipt(identity=identity, upstream_parameter_hash=UPSTREAM_PH,
                                 scenario_set=["stress_v1", "baseline_v1"], gates=gates, rows=rows,
                                 optional_missing=missing)
    return receipt, rows, identity


def test_receipt_validates_and_carries_no_clock():
    receipt, rows, _ = _receipt_and_rows()
    contracts.validate_document(receipt, gate.RECEIPT_SCHEMA, code="5B.S0.OUTPUT_SCHEMA_INVALID", where="r",
                                contracts_dir=CD)
    assert receipt["scenario_set"] == ["baseline_v1", "stress_v1"]
    assert receipt["sealed_inputs_row_count"] == len(rows)
    assert not any("utc" in key or "time" in key for key in receipt)


def _check(receipt, rows, identity):
    return gate.check_gate(receipt, rows, identity, state="S2", policy_ids=[e.id for e in gate.policy_entries()],
                           receipt_where="receipt.json", rows_where="sealed.json")


def test_gate_check_accepts_what_s0_wrote():
    receipt, rows, identity = _receipt_and_rows()
    assert set(_check(receipt, rows, identity)) == {r["artifact_id"] for r in rows}


def test_gate_check_refuses_a_changed_row_with_the_state_code():
    receipt, rows, identity = _receipt_and_rows()
    rows[0] = {**rows[0], "sha256_hex": H2}
    with pytest.raises(ArrivalError) as err:
        _check(receipt, rows, identity)
    assert err.value.code == "5B.S2.S0_GATE_INVALID" and "sealed_inputs_digest" in err.value.message


def test_gate_check_refuses_a_receipt_of_another_parameter_hash():
    receipt, rows, identity = _receipt_and_rows()
    with pytest.raises(ArrivalError) as err:
        _check({**receipt, "upstream_parameter_hash": "d" * 64}, rows, identity)
    assert err.value.code == "5B.S2.S0_GATE_INVALID" and "parameter_hash" in err.value.message
    with pytest.raises(ArrivalError) as err:
        _check(receipt, rows, Identity("c" * 64, MF, 42, "baseline_v1"))
    assert err.value.code == "5B.S2.S0_GATE_INVALID"


def test_gate_check_refuses_upstream_not_pass_and_unknown_scenario():
    receipt, rows, identity = _receipt_and_rows()
    failing = {**receipt, "upstream_segments": {**receipt["upstream_segments"],
                                                 "3A": {"status": "FAIL", "bundle_digest_sha256": H1}}}
    with pytest.raises(ArrivalError) as err:
        _check(failing, rows, identity)
    assert err.value.code == "5B.S2.UPSTREAM_NOT_PASS" and "3A" in err.value.message
    with pytest.raises(ArrivalError) as err:
        _check(receipt, rows, Identity(identity.parameter_hash, MF, 42, "surge_v9"))
    assert err.value.code == "5B.IDENTITY_INVALID" and "surge_v9" in err.value.message


def test_gate_hands_out_only_sealed_row_level_artefacts(tmp_path: Path):
    receipt, rows, identity = _receipt_and_rows()
    by_id = _check(receipt, rows, identity)
    g = gate.Gate("S1", identity, receipt, by_id, {}, Store(run_root=tmp_path))
    path = g.path("merchant_zone_scenario_local_5A")
    assert path.is_relative_to(tmp_path.resolve()) and "scenario_id=baseline_v1" in str(path)
    assert "seed=7" in str(g.path("virtual_classification_3B", seed=7))
    with pytest.raises(ArrivalError) as err:
        g.path("validation_bundle_1A")
    assert err.value.code == "5B.S1.S0_GATE_INVALID" and "METADATA_ONLY" in err.value.message
    assert g.metadata_path("validation_bundle_1A").name == f"fingerprint={MF}"
    unsealed = gate.Gate("S1", identity, receipt, {k: v for k, v in by_id.items() if k != "grouping_policy_5B"}, {},
                         Store(run_root=tmp_path))
    with pytest.raises(ArrivalError) as err:
        unsealed.policy("grouping_policy_5B")
    assert err.value.code == "5B.S1.S0_GATE_INVALID" and "not in sealed_inputs_5B" in err.value.message

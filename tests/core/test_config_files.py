"""Every file in config/ and the artefact registry is valid; a policy breaking its schema is rejected by field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from arrival_core import contracts
from arrival_core.errors import ArrivalError

CONFIG = contracts.DEFAULT_CONFIG_DIR
POLICIES = sorted(e.id for e in contracts.load_dictionary().values() if e.kind == "policy")
PROFILE_FILES = [CONFIG / "worlds" / f"{name}.yaml" for name in ("tiny", "demo", "reference", "reference4x")]


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _policy(policy_id: str) -> dict:
    return _load(CONFIG / contracts.dataset(policy_id).path)


def _reject(doc: dict, policy_id: str) -> ArrivalError:
    """Validate a (broken) policy as S0 would and return the error it raises."""
    with pytest.raises(ArrivalError) as err:
        contracts.validate_document(doc, contracts.dataset(policy_id).schema_ref, code="5B.S0.POLICY_INVALID",
                                    where=f"{policy_id}.yaml")
    assert err.value.code == "5B.S0.POLICY_INVALID"
    assert err.value.message.startswith(f"{policy_id}.yaml: $")
    return err.value


def test_the_six_policies_are_in_the_dictionary():
    assert POLICIES == [
        "arrival_count_config_5B", "arrival_lgcp_config_5B", "arrival_rng_policy_5B",
        "bundle_layout_policy_5B", "grouping_policy_5B", "time_grid_policy_5B",
    ]


@pytest.mark.parametrize("policy_id", POLICIES)
def test_policy_file_validates_against_its_schema(policy_id):
    doc = _policy(policy_id)
    assert doc["policy_id"] == policy_id
    contracts.validate_document(doc, contracts.dataset(policy_id).schema_ref, code="5B.S0.POLICY_INVALID",
                                where=f"{policy_id}.yaml")


def test_bucket_duration_outside_the_enum_is_rejected_naming_the_field():
    doc = {**_policy("time_grid_policy_5B"), "bucket_duration_seconds": 1200}
    err = _reject(doc, "time_grid_policy_5B")
    assert err.context["json_path"] == "$.bucket_duration_seconds"
    assert "1200" in err.message


@pytest.mark.parametrize("policy_id", POLICIES)
def test_unknown_key_in_a_policy_is_rejected(policy_id):
    err = _reject({**_policy(policy_id), "bucket_duration": 3600}, policy_id)
    assert "bucket_duration" in err.message


@pytest.mark.parametrize("policy_id", POLICIES)
def test_policy_id_of_another_policy_is_rejected(policy_id):
    other = next(p for p in POLICIES if p != policy_id)
    err = _reject({**_policy(policy_id), "policy_id": other}, policy_id)
    assert err.context["json_path"] == "$.policy_id"


def test_missing_demand_class_multiplier_is_rejected_naming_the_class():
    doc = copy.deepcopy(_policy("arrival_lgcp_config_5B"))
    del doc["sigma"]["demand_class_multipliers"]["nightlife"]
    err = _reject(doc, "arrival_lgcp_config_5B")
    assert err.context["json_path"] == "$.sigma.demand_class_multipliers" and "nightlife" in err.message


def test_non_positive_multiplier_is_rejected():
    doc = copy.deepcopy(_policy("arrival_count_config_5B"))
    doc["nb2"]["demand_class_multipliers"]["online_24h"] = 0
    err = _reject(doc, "arrival_count_config_5B")
    assert err.context["json_path"] == "$.nb2.demand_class_multipliers.online_24h"


def test_unknown_latent_model_is_rejected():
    err = _reject({**_policy("arrival_lgcp_config_5B"), "latent_model_id": "gp_rbf"}, "arrival_lgcp_config_5B")
    assert err.context["json_path"] == "$.latent_model_id"


@pytest.mark.parametrize("model", ["none", "log_gaussian_ou_v1", "log_gaussian_iid_v1"])
def test_each_latent_model_is_accepted(model):
    doc = {**_policy("arrival_lgcp_config_5B"), "latent_model_id": model}
    contracts.validate_document(doc, contracts.dataset("arrival_lgcp_config_5B").schema_ref,
                                code="5B.S2.LGCP_CONFIG_INVALID", where="arrival_lgcp_config_5B.yaml")


def test_nb2_count_law_is_accepted_and_an_unknown_law_rejected():
    ref = contracts.dataset("arrival_count_config_5B").schema_ref
    doc = _policy("arrival_count_config_5B")
    contracts.validate_document({**doc, "count_law_id": "nb2"}, ref, code="5B.S3.COUNT_CONFIG_INVALID", where="c")
    err = _reject({**doc, "count_law_id": "zip"}, "arrival_count_config_5B")
    assert err.context["json_path"] == "$.count_law_id"


def test_bounds_must_be_a_pair():
    doc = copy.deepcopy(_policy("arrival_lgcp_config_5B"))
    doc["sigma"]["bounds"] = [0.02, 0.5, 0.9]
    err = _reject(doc, "arrival_lgcp_config_5B")
    assert err.context["json_path"] == "$.sigma.bounds"


def test_lambda_max_may_be_null_or_positive_only():
    doc = copy.deepcopy(_policy("arrival_lgcp_config_5B"))
    doc["clipping"]["lambda_max"] = 1.0e6
    contracts.validate_document(doc, contracts.dataset("arrival_lgcp_config_5B").schema_ref,
                                code="5B.S2.LGCP_CONFIG_INVALID", where="arrival_lgcp_config_5B.yaml")
    doc["clipping"]["lambda_max"] = -1
    err = _reject(doc, "arrival_lgcp_config_5B")
    assert err.context["json_path"] == "$.clipping.lambda_max"


def test_exponent_without_a_dot_is_rejected_because_yaml_reads_it_as_text():
    doc = yaml.safe_load((CONFIG / "arrival_count_config_5B.yaml").read_text().replace("1.0e-12", "1e-12"))
    err = _reject(doc, "arrival_count_config_5B")
    assert err.context["json_path"] == "$.lambda_zero_eps"


def test_zone_group_buckets_beyond_two_digits_are_rejected():
    err = _reject({**_policy("grouping_policy_5B"), "zone_group_buckets": 101}, "grouping_policy_5B")
    assert err.context["json_path"] == "$.zone_group_buckets"


def test_rng_family_law_cannot_be_edited():
    doc = copy.deepcopy(_policy("arrival_rng_policy_5B"))
    doc["families"]["S3.bucket_count.v1"]["draws_per_event"]["nb2"] = 3
    err = _reject(doc, "arrival_rng_policy_5B")
    assert err.context["json_path"] == "$.families['S3.bucket_count.v1'].draws_per_event"


def test_run_plan_validates_and_defaults_to_seed_42():
    doc = _load(CONFIG / "run_plan.yaml")
    contracts.validate_document(doc, "schemas.5B.yaml#/config/run_plan", code="5B.S0.POLICY_INVALID",
                                where="run_plan.yaml")
    assert doc["default_seeds"] == [42]


def test_run_plan_with_a_negative_seed_is_rejected():
    with pytest.raises(ArrivalError) as err:
        contracts.validate_document({"default_seeds": [42, -1]}, "schemas.5B.yaml#/config/run_plan",
                                    code="5B.S0.POLICY_INVALID", where="run_plan.yaml")
    assert err.value.context["json_path"] == "$.default_seeds[1]"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.name)
def test_world_profile_is_valid_and_named_for_its_file(path):
    doc = _load(path)
    contracts.validate_document(doc, "schemas.world.yaml#", code="5B.WORLD.PROFILE_INVALID",
                                where=str(path))
    assert doc["profile"] == path.stem


def test_world_profile_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ArrivalError) as err:
        contracts.validate_document(["tiny"], "schemas.world.yaml#", code="5B.WORLD.PROFILE_INVALID",
                                    where="worlds/x.yaml")
    assert err.value.code == "5B.WORLD.PROFILE_INVALID"


# ---- the artefact registry -------------------------------------------------------------------------------------

REGISTRY = _load(contracts.DEFAULT_CONTRACTS_DIR / "artefact_registry_5B.yaml")


def test_artefact_registry_validates_against_its_schema():
    contracts.validate_document(REGISTRY, "schemas.5B.yaml#/registry/artefact_registry_5B",
                                code="5B.CONTRACT_INVALID", where="artefact_registry_5B.yaml")


def test_registry_lists_exactly_the_sealed_dictionary_entries():
    sealed = sorted(e.id for e in contracts.load_dictionary().values() if e.sealed)
    ids = [a["artifact_id"] for a in REGISTRY["artefacts"]]
    assert sorted(ids) == sealed and len(ids) == len(set(ids))


def test_registry_manifest_keys_are_unique_and_name_the_owner_segment():
    keys = [a["manifest_key"] for a in REGISTRY["artefacts"]]
    assert len(keys) == len(set(keys))
    for artefact in REGISTRY["artefacts"]:
        owner = contracts.dataset(artefact["artifact_id"]).owner_segment
        assert artefact["manifest_key"].startswith(f"mlr.{owner}."), artefact["artifact_id"]


def test_registry_dependencies_are_registered_and_acyclic():
    deps = {a["artifact_id"]: set(a["depends_on"]) for a in REGISTRY["artefacts"]}
    assert set().union(*deps.values()) <= set(deps)
    done: set[str] = set()
    while len(done) < len(deps):  # peel artefacts whose dependencies are all done; a cycle stops progress
        ready = {a for a, d in deps.items() if a not in done and d <= done}
        assert ready, f"dependency cycle among {sorted(set(deps) - done)}"
        done |= ready


def test_check_policy_validates_and_pins_the_false_alarm_probability():
    doc = _load(CONFIG / "check_policy.yaml")
    contracts.validate_document(doc, "schemas.5B.yaml#/config/check_policy", code="5B.CONTRACT_INVALID",
                                where="check_policy.yaml")
    assert doc["false_alarm"] <= 1e-6


def test_check_policy_refuses_a_false_alarm_probability_that_is_not_small():
    with pytest.raises(ArrivalError):
        contracts.validate_document({"false_alarm": 0.5},
                                    "schemas.5B.yaml#/config/check_policy", code="5B.CONTRACT_INVALID",
                                    where="check_policy.yaml")


def _runtime_in(folder: Path, monkeypatch, **changes) -> None:
    """Point runtime_settings at a copy of config/runtime.yaml with some values changed."""
    doc = _load(CONFIG / "runtime.yaml") | changes
    (folder / "runtime.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(contracts, "DEFAULT_CONFIG_DIR", folder)
    contracts.runtime_settings.cache_clear()


def test_runtime_numbers_come_from_config_runtime_yaml(tmp_path, monkeypatch):
    from arrival_core import pipeline
    from arrival_core.rng import threads

    _runtime_in(tmp_path, monkeypatch, chunk_rows=1344, thread_min_slice=10)
    try:
        assert pipeline.default_chunk_rows() == 1344
        assert pipeline.default_chunk_entities(672) == 2  # two whole entities of 672 buckets
        assert len(threads.bounds(15)) == 1 and threads.bounds(25) in ([(0, 25)], [(0, 12), (12, 25)])
    finally:
        contracts.runtime_settings.cache_clear()


def test_a_broken_runtime_file_is_contract_invalid_naming_the_field(tmp_path, monkeypatch):
    _runtime_in(tmp_path, monkeypatch, chunk_rows=0)
    try:
        with pytest.raises(ArrivalError) as err:
            contracts.runtime_settings()
        assert err.value.code == "5B.CONTRACT_INVALID"
        assert err.value.message.startswith(f"{tmp_path / 'runtime.yaml'}: $.chunk_rows")
    finally:
        contracts.runtime_settings.cache_clear()


def test_a_document_that_passed_is_remembered_exactly_and_a_failing_one_is_never():
    ref = "schemas.5B.yaml#/config/runtime"
    doc = contracts.read_config_file(CONFIG, "runtime")
    contracts.validate_document(doc, ref, code="5B.CONTRACT_INVALID", where="runtime.yaml")
    for value in (True, 1.5, "2000000"):  # equal or alike to 1 or 2000000 in some sense, but not integers
        for _ in range(2):  # rejected again: a failure is never remembered
            with pytest.raises(ArrivalError) as err:
                contracts.validate_document({**doc, "chunk_rows": value}, ref, code="5B.CONTRACT_INVALID", where="r")
            assert err.value.context["json_path"] == "$.chunk_rows"
    doc["chunk_rows"] = 0  # the same object changed after it passed
    with pytest.raises(ArrivalError):
        contracts.validate_document(doc, ref, code="5B.CONTRACT_INVALID", where="runtime.yaml")

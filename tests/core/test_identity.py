"""Identity rules: bad seeds, scenario ids and fingerprints are IDENTITY_INVALID before any path exists."""
from __future__ import annotations

import hashlib

import pytest

from arrival_core import contracts
from arrival_core.errors import ArrivalError
from arrival_core.identity import (
    Identity,
    compute_parameter_hash,
    validate_hex64,
    validate_scenario_id,
    validate_seed,
)

MF = "a" * 64
PH = "b" * 64
SEED_SCOPED = "s2_realised_intensity_5B"  # a dataset whose path uses all four identity tokens


def _tokens(**override: object) -> dict[str, object]:
    return {"seed": 42, "parameter_hash": PH, "manifest_fingerprint": MF, "scenario_id": "baseline_v1", **override}


def _resolve(run_root, **override):
    roots = {"run": run_root, "config": contracts.DEFAULT_CONFIG_DIR}
    return contracts.resolve_path(contracts.dataset(SEED_SCOPED), roots, _tokens(**override))


@pytest.mark.parametrize("scenario_id", ["../x", "a/b", "Baseline", "", "..", "a..b", "x" * 65, "-x", None, 7])
def test_bad_scenario_id_is_rejected(scenario_id):
    with pytest.raises(ArrivalError) as err:
        validate_scenario_id(scenario_id)
    assert err.value.code == "5B.IDENTITY_INVALID"
    assert err.value.context["field"] == "scenario_id"


@pytest.mark.parametrize("seed", [-1, "-1", 2**64, str(2**64), "007", "+1", "1.0", 1.0, True, "", " 1", None])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ArrivalError) as err:
        validate_seed(seed)
    assert err.value.code == "5B.IDENTITY_INVALID"
    assert err.value.context["field"] == "seed"


@pytest.mark.parametrize("seed, expected", [(0, 0), ("0", 0), (42, 42), (2**64 - 1, 2**64 - 1), (str(2**64 - 1), 2**64 - 1)])
def test_seed_bounds_are_accepted(seed, expected):
    assert validate_seed(seed) == expected


@pytest.mark.parametrize("value", ["g" * 64, "A" * 64, "a" * 63, "a" * 65, "", None, "a" * 63 + "/"])
def test_non_hex_fingerprint_is_rejected(value):
    with pytest.raises(ArrivalError) as err:
        validate_hex64(value, "manifest_fingerprint")
    assert err.value.code == "5B.IDENTITY_INVALID"


@pytest.mark.parametrize(
    "override",
    [
        {"scenario_id": "../x"},
        {"scenario_id": "a/b"},
        {"scenario_id": "Baseline"},
        {"scenario_id": ""},
        {"seed": -1},
        {"seed": 2**64},
        {"manifest_fingerprint": "not-hex" + "0" * 57},
        {"parameter_hash": "../" + "0" * 61},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))!r}"[:40],
)
def test_bad_token_fails_before_a_path_is_built(tmp_path, override):
    """resolve_path rejects the token itself (context names the field), and nothing appears under the root."""
    run_root = tmp_path / "run"
    run_root.mkdir()
    with pytest.raises(ArrivalError) as err:
        _resolve(run_root, **override)
    assert err.value.code == "5B.IDENTITY_INVALID"
    assert err.value.context["field"] == next(iter(override))  # the token rule fired, not the escape check
    assert list(run_root.iterdir()) == []


def test_valid_tokens_resolve_inside_the_run_root(tmp_path):
    path = _resolve(tmp_path)
    assert path.is_relative_to(tmp_path.resolve())
    assert f"seed=42/parameter_hash={PH}/fingerprint={MF}/scenario_id=baseline_v1/" in path.as_posix()
    assert not path.parent.exists()  # resolving never creates folders


@pytest.mark.parametrize("field", ["parameter_hash", "manifest_fingerprint", "seed", "scenario_id"])
def test_identity_rejects_each_bad_field(field):
    bad = {"parameter_hash": "x", "manifest_fingerprint": "x", "seed": -1, "scenario_id": "../x"}[field]
    good = {"parameter_hash": PH, "manifest_fingerprint": MF, "seed": 42, "scenario_id": "baseline_v1"}
    with pytest.raises(ArrivalError) as err:
        Identity(**{**good, field: bad})
    assert err.value.code == "5B.IDENTITY_INVALID"


def test_identity_tokens_are_the_dictionary_token_names():
    ident = Identity(PH, MF, "42", "baseline_v1")
    assert ident.seed == 42
    assert ident.tokens() == {"parameter_hash": PH, "manifest_fingerprint": MF, "seed": "42", "scenario_id": "baseline_v1"}


def _uer(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(4, "big") + data


def test_parameter_hash_matches_an_independent_computation_of_the_law():
    """DESIGN §2.1 restated with hashlib: domain, upstream ph, then (policy_id, file sha) in policy_id order."""
    upstream = "c" * 64
    policies = [("time_grid_policy_5B", "1" * 64), ("arrival_count_config_5B", "2" * 64)]
    expected = hashlib.sha256(
        _uer("5B.parameter_hash.v1") + _uer(upstream)
        + _uer("arrival_count_config_5B") + _uer("2" * 64)
        + _uer("time_grid_policy_5B") + _uer("1" * 64)
    ).hexdigest()
    assert compute_parameter_hash(upstream, policies) == expected
    assert compute_parameter_hash(upstream, list(reversed(policies))) == expected


def test_parameter_hash_changes_when_any_policy_file_changes():
    upstream = "c" * 64
    base = [("a_policy", "1" * 64), ("b_policy", "2" * 64)]
    edited = [("a_policy", "1" * 64), ("b_policy", "3" * 64)]
    assert compute_parameter_hash(upstream, base) != compute_parameter_hash(upstream, edited)
    assert compute_parameter_hash(upstream, base) != compute_parameter_hash("d" * 64, base)


def test_parameter_hash_rejects_a_non_hex_upstream_hash():
    with pytest.raises(ArrivalError) as err:
        compute_parameter_hash("XYZ", [("a_policy", "1" * 64)])
    assert err.value.code == "5B.IDENTITY_INVALID"

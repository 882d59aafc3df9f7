"""World identity and publishing: byte-reproducible, seeds touch only 3B files, no clobbering, ensure_seed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from worldlib import files, path, read

from arrival_core import contracts
from arrival_core.encoding import canonical_json, le64, sha256_hex, uer
from arrival_core.errors import ArrivalError
from arrival_core.world import create_world, ensure_seed, load_profile, world_identity
from arrival_core.world.generate import GENERATOR_VERSION, MANIFEST_DOMAIN, PARAMETER_DOMAIN

VIRTUAL = "/virtual_classification/"


def _split(tree: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    seedless = {k: v for k, v in tree.items() if VIRTUAL not in k}
    return seedless, {k: v for k, v in tree.items() if VIRTUAL in k}


@pytest.mark.parametrize(("world_name", "profile", "other_seeds"), [
    ("tiny_world", "tiny", (7, 42)),
    ("demo_world", "demo", (7, 42)),
])
def test_same_world_seed_is_byte_identical_and_seed_lists_change_only_3b_files(
    world_name, profile, other_seeds, request, tmp_path
):
    world = request.getfixturevalue(world_name)
    again = create_world(profile, tmp_path / profile, seeds=other_seeds)
    assert again.manifest_fingerprint == world.manifest_fingerprint
    first_rest, first_3b = _split(files(world.root))
    again_rest, again_3b = _split(files(again.root))
    assert first_rest == again_rest
    assert {k.split("/")[4] for k in first_3b} == {f"seed={s}" for s in world.seeds}
    assert {k.split("/")[4] for k in again_3b} == {f"seed={s}" for s in other_seeds}
    shared = set(first_3b) & set(again_3b)
    assert shared and all(first_3b[k] == again_3b[k] for k in shared)


def test_a_different_world_seed_changes_the_fingerprint_and_the_world(tiny_world, tmp_path):
    other = create_world("tiny", tmp_path / "other", world_seed=tiny_world.world_seed + 1, seeds=(42,))
    assert other.manifest_fingerprint != tiny_world.manifest_fingerprint
    assert other.parameter_hash != tiny_world.parameter_hash
    ours = read(tiny_world, "merchant_zone_profile_5A")["merchant_id"].to_list()
    theirs = read(other, "merchant_zone_profile_5A")["merchant_id"].to_list()
    assert set(ours).isdisjoint(theirs)


def test_identity_is_a_domain_separated_sha256_of_profile_content_and_world_seed():
    spec = load_profile("tiny")
    content = canonical_json(spec.content)
    ident = world_identity(spec, 5)
    expected = sha256_hex(uer(MANIFEST_DOMAIN) + uer(GENERATOR_VERSION) + uer(content) + le64(5))
    assert ident.manifest_fingerprint == expected
    assert ident.parameter_hash == sha256_hex(uer(PARAMETER_DOMAIN) + uer(content) + le64(5))
    assert ident.manifest_fingerprint != ident.parameter_hash
    assert world_identity(spec, 6).manifest_fingerprint != ident.manifest_fingerprint
    assert world_identity(load_profile("demo"), 5).manifest_fingerprint != ident.manifest_fingerprint


def test_receipt_marks_the_world_synthetic_and_validates(tiny_world):
    receipt = json.loads(path(tiny_world, "run_receipt").read_text())
    contracts.validate_document(receipt, contracts.dataset("run_receipt").schema_ref,
                                code="5B.S0.RUN_RECEIPT_INVALID", where="run_receipt.json")
    assert receipt == {
        "run_id": tiny_world.run_id, "parameter_hash": tiny_world.parameter_hash,
        "manifest_fingerprint": tiny_world.manifest_fingerprint, "spec_version": receipt["spec_version"],
        "synthetic": True, "profile": "tiny", "world_seed": tiny_world.world_seed,
    }


def test_recreating_a_world_in_place_changes_nothing(tiny_world_copy):
    before = {p: p.stat().st_mtime_ns for p in tiny_world_copy.root.rglob("*") if p.is_file()}
    create_world("tiny", tiny_world_copy.root, seeds=tiny_world_copy.seeds)
    after = {p: p.stat().st_mtime_ns for p in tiny_world_copy.root.rglob("*") if p.is_file()}
    assert after == before


def test_adding_a_seed_to_an_existing_world_adds_only_its_3b_file(tiny_world_copy):
    before = files(tiny_world_copy.root)
    create_world("tiny", tiny_world_copy.root, seeds=(5,))
    after = files(tiny_world_copy.root)
    added = set(after) - set(before)
    assert len(added) == 1 and "/seed=5/" in added.pop()
    assert {k: after[k] for k in before} == before


def test_a_changed_file_makes_recreation_a_write_conflict_and_is_left_untouched(tiny_world_copy):
    target = path(tiny_world_copy, "merchant_zone_scenario_local_5A", scenario_id="stress_v1")
    target.write_bytes(target.read_bytes() + b"tampered")
    before = files(tiny_world_copy.root)
    with pytest.raises(ArrivalError) as err:
        create_world("tiny", tiny_world_copy.root, seeds=(1, 42, 9))
    assert err.value.code == "5B.WORLD.IO_WRITE_CONFLICT"
    assert str(target) in err.value.message
    assert files(tiny_world_copy.root) == before  # nothing new, not even the 3B file of seed 9 or a temp file


def test_ensure_seed_writes_the_file_create_world_would_have(tiny_world_copy, tmp_path):
    written = ensure_seed(tiny_world_copy.root, 7)
    reference = create_world("tiny", tmp_path / "seven", seeds=(7,))
    assert written == path(tiny_world_copy, "virtual_classification_3B", seed=7)
    assert written.read_bytes() == path(reference, "virtual_classification_3B", seed=7).read_bytes()


def test_ensure_seed_returns_an_existing_file_untouched(tiny_world_copy):
    existing = path(tiny_world_copy, "virtual_classification_3B", seed=42)
    mtime = existing.stat().st_mtime_ns
    assert ensure_seed(tiny_world_copy.root, 42) == existing
    assert existing.stat().st_mtime_ns == mtime


def test_ensure_seed_never_invents_data_for_a_real_world(tiny_world_copy):
    receipt_path = path(tiny_world_copy, "run_receipt")
    receipt = json.loads(receipt_path.read_text())
    for key in ("synthetic", "profile", "world_seed"):
        receipt.pop(key)
    receipt_path.write_text(json.dumps(receipt))
    missing = path(tiny_world_copy, "virtual_classification_3B", seed=7)
    with pytest.raises(ArrivalError) as err:
        ensure_seed(tiny_world_copy.root, 7)
    assert err.value.code == "5B.WORLD.ARTEFACT_MISSING"
    assert str(missing) in err.value.message
    assert not missing.exists()


def test_ensure_seed_without_a_world_names_the_missing_receipt(tmp_path):
    with pytest.raises(ArrivalError) as err:
        ensure_seed(tmp_path, 7)
    assert err.value.code == "5B.WORLD.ARTEFACT_MISSING"
    assert "run_receipt.json" in err.value.message


def test_ensure_seed_refuses_a_receipt_the_profile_no_longer_describes(tiny_world_copy):
    receipt_path = path(tiny_world_copy, "run_receipt")
    receipt = json.loads(receipt_path.read_text())
    receipt["world_seed"] += 1
    receipt_path.write_text(json.dumps(receipt))
    with pytest.raises(ArrivalError) as err:
        ensure_seed(tiny_world_copy.root, 7)
    assert err.value.code == "5B.WORLD.PROFILE_INVALID"
    assert tiny_world_copy.manifest_fingerprint in err.value.message


def test_ensure_seed_rejects_an_invalid_seed_before_building_a_path(tiny_world):
    with pytest.raises(ArrivalError) as err:
        ensure_seed(tiny_world.root, "../7")
    assert err.value.code == "5B.IDENTITY_INVALID"


def test_files_do_not_depend_on_the_thread_count(tiny_world, tmp_path):
    root = tmp_path / "one_thread"
    code = ("import sys; from arrival_core.world import create_world; "
            "create_world('tiny', sys.argv[1], seeds=(1, 42))")
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(root)], env=env, check=True, timeout=120)
    assert files(root) == files(tiny_world.root)

"""The seven HashGate bundles verify per DESIGN §3.1; the 5A bundle vouches for every 5A table file."""
from __future__ import annotations

import hashlib
import json

import pytest
from worldlib import SEGMENTS, bundle_problem, path, store

from arrival_core import contracts


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_every_upstream_bundle_verifies(world_name, request):
    world = request.getfixturevalue(world_name)
    assert {s: bundle_problem(world, s) for s in SEGMENTS} == {s: None for s in SEGMENTS}


def test_layer1_flags_are_one_text_line_and_the_5a_flag_is_json(tiny_world):
    for segment in SEGMENTS:
        entry = contracts.dataset(f"validation_bundle_{segment}")
        flag = (path(tiny_world, entry.id) / entry.raw["flag_file"]).read_bytes()
        if segment == "5A":
            contracts.validate_document(json.loads(flag), entry.raw["flag_schema_ref"],
                                        code="5B.S0.UPSTREAM_NOT_PASS", where="5A flag")
        else:
            contracts.validate_document(flag.decode(), entry.raw["flag_schema_ref"],
                                        code="5B.S0.UPSTREAM_NOT_PASS", where=f"{segment} flag")
            assert flag.count(b"\n") == 1


def test_5a_bundle_lists_the_sha256_and_rows_of_every_5a_table_file(tiny_world):
    folder = path(tiny_world, "validation_bundle_5A")
    listing = json.loads((folder / "tables.json").read_text())
    on_disk = sorted(
        p for p in (tiny_world.root / "data" / "layer2" / "5A").rglob("*.parquet")
    )
    assert sorted(tiny_world.root / t["path"] for t in listing) == on_disk
    for t in listing:
        data = (tiny_world.root / t["path"]).read_bytes()
        assert t["sha256_hex"] == hashlib.sha256(data).hexdigest(), t["path"]
    label = "{dataset_id}[scenario_id={scenario_id}]"
    rows = {t["dataset_id"] if t["scenario_id"] is None else label.format(**t): t["rows"] for t in listing}
    assert rows == {k: v for k, v in tiny_world.rows.items() if not k.startswith("virtual_classification_3B")}


def test_a_changed_member_fails_its_bundle_only(tiny_world_copy):
    member = path(tiny_world_copy, "validation_bundle_1B") / "facts.json"
    member.write_bytes(member.read_bytes().replace(b"}", b" }", 1))
    problems = {s: bundle_problem(tiny_world_copy, s) for s in SEGMENTS}
    assert "facts.json does not match its sha256" in problems.pop("1B")
    assert set(problems.values()) == {None}


def test_a_flag_with_another_digest_fails_its_bundle(tiny_world_copy):
    flag = path(tiny_world_copy, "validation_bundle_5A") / "_passed.flag"
    flag.write_text(json.dumps({"bundle_digest_sha256": "0" * 64}))
    assert "is not the digest" in bundle_problem(tiny_world_copy, "5A")


def test_bundle_folders_hold_only_the_index_the_flag_and_the_indexed_members(tiny_world):
    for segment in SEGMENTS:
        entry = store(tiny_world).entry(f"validation_bundle_{segment}")
        folder = path(tiny_world, entry.id)
        index = json.loads((folder / entry.raw["index_file"]).read_text())
        expected = {e["path"] for e in index["entries"]} | {entry.raw["index_file"], entry.raw["flag_file"]}
        assert {p.name for p in folder.iterdir()} == expected

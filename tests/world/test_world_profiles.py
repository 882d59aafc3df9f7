"""Profiles, catalogues and the generator's parts: validation, local clocks, shapes, population, bundles."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import configlib
import numpy as np
import pytest
import yaml

from arrival_core import contracts
from arrival_core.errors import ArrivalError
from arrival_core.world import available_profiles, load_profile
from arrival_core.world.hashgate import bundle_digest, bundle_files
from arrival_core.world.merchants import ENTITY_KEY, draw_population
from arrival_core.world.seeding import generator, mix64
from arrival_core.world.surface import surge_multipliers
from arrival_core.world.zones import local_slots


@pytest.fixture
def config_copy(tmp_path):
    """A writable copy of the config folder, for profiles that are broken on purpose."""
    return configlib.config_copy(tmp_path)


def _edit(config_dir, name, change):
    path = config_dir / "worlds" / name
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_the_four_profiles_are_available_and_load():
    assert available_profiles() == ("demo", "reference", "reference4x", "tiny")
    specs = {name: load_profile(name) for name in available_profiles()}
    sizes = {name: (spec.entities, spec.horizon.buckets) for name, spec in specs.items()}
    assert sizes == {"tiny": (100, 168), "demo": (1_500, 672), "reference": (14_661, 2_160),
                     "reference4x": (58_644, 2_160)}


def test_an_unknown_profile_is_profile_invalid():
    with pytest.raises(ArrivalError) as err:
        load_profile("huge")
    assert err.value.code == "5B.WORLD.PROFILE_INVALID"
    assert "huge" in err.value.message and "tiny" in err.value.message


def test_a_schema_violation_names_the_file_and_field(config_copy):
    _edit(config_copy, "tiny.yaml", lambda d: d.update(entities=0))
    with pytest.raises(ArrivalError) as err:
        load_profile("tiny", config_copy)
    assert err.value.code == "5B.WORLD.PROFILE_INVALID"
    assert "tiny.yaml" in err.value.message and "entities" in err.value.message


def test_a_surge_outside_the_horizon_is_refused(config_copy):
    def change(doc):
        doc["scenarios"][1]["surges"][0]["end_utc"] = "2026-04-30T00:00:00Z"
    _edit(config_copy, "tiny.yaml", change)
    with pytest.raises(ArrivalError, match=r"scenarios\[1\]\.surges\[0\].*inside the horizon"):
        load_profile("tiny", config_copy)


def test_channel_probabilities_must_sum_to_one(config_copy):
    def change(doc):
        doc["merchants"]["demand_classes"]["nightlife"]["channels"]["both"] = 0.5
    _edit(config_copy, "tiny.yaml", change)
    with pytest.raises(ArrivalError, match="nightlife: channel probabilities sum to"):
        load_profile("tiny", config_copy)


def test_a_country_yaml_reads_as_a_boolean_is_refused(config_copy):
    path = config_copy / "worlds" / "zones.yaml"
    path.write_text(path.read_text().replace('country: "NO"', "country: NO"))
    with pytest.raises(ArrivalError, match="quote NO"):
        load_profile("reference", config_copy)


def test_an_unknown_zone_filter_is_refused(config_copy):
    _edit(config_copy, "demo.yaml", lambda d: d["zones"].update(tzids=["Mars/Olympus_Mons"]))
    with pytest.raises(ArrivalError, match="Mars/Olympus_Mons"):
        load_profile("demo", config_copy)


def test_each_class_shape_sums_to_one_and_has_one_peak_hour():
    shapes = load_profile("demo").shapes
    table = shapes.table()
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-12)
    peaks = {c: shapes.peak_hour(c) for c in shapes.classes}
    assert peaks == {"office_hours": 10, "retail_daytime": 14, "evening_dining": 19, "nightlife": 23,
                     "online_24h": 20, "travel_hospitality": 8}
    office = table[shapes.classes.index("office_hours")].reshape(7, 24)
    assert (office[5:] == 0).all() and (office[:, :8] == 0).all()  # weekends and nights are closed


def test_nightlife_after_midnight_counts_toward_the_previous_business_day():
    shapes = load_profile("tiny").shapes
    night = shapes.table()[shapes.classes.index("nightlife")].reshape(7, 24)
    # Saturday 00h carries Friday's day weight, Sunday 00h Saturday's, Monday 00h Sunday's.
    assert night[5, 0] / night[6, 0] == pytest.approx(1.0 / 1.1)
    assert night[0, 0] / night[6, 0] == pytest.approx(0.3 / 1.1)


def test_local_slots_follow_the_new_york_dst_switch():
    # 2026-03-08 is a Sunday; New York springs from 02:00 EST to 03:00 EDT at 07:00 UTC.
    slots = local_slots(["America/New_York", "Asia/Kolkata"], datetime(2026, 3, 8, 5, tzinfo=UTC), 4, 3600)
    sunday = 6 * 24
    assert slots[0].tolist() == [sunday + 0, sunday + 1, sunday + 3, sunday + 4]
    assert slots[1].tolist() == [sunday + 10, sunday + 11, sunday + 12, sunday + 13]  # +05:30: starts at :30


def test_an_unknown_time_zone_is_profile_invalid():
    with pytest.raises(ArrivalError) as err:
        local_slots(["Mars/Olympus_Mons"], datetime(2026, 3, 8, tzinfo=UTC), 2, 3600)
    assert err.value.code == "5B.WORLD.PROFILE_INVALID"


def test_surge_multipliers_are_one_outside_windows_and_per_class_inside():
    spec = load_profile("tiny")
    stress = next(s for s in spec.scenarios if s.scenario_id == "stress_v1")
    m = surge_multipliers(stress, spec.horizon, spec.shapes.classes)
    retail, office = spec.shapes.classes.index("retail_daytime"), spec.shapes.classes.index("office_hours")
    first = 24 + 17  # 2026-03-06T17:00Z, one day and 17 hours after the horizon start
    assert m[:, first - 1].tolist() == [1.0] * 6 and (m[:, first] == 1.8).all()
    window2 = 4 * 24 + 12  # 2026-03-09T12:00Z, retail and online only
    assert m[retail, window2] == 2.5 and m[office, window2] == 1.0
    assert (m >= 1.0).all() and (m == 1.0).mean() > 0.8
    baseline = next(s for s in spec.scenarios if s.scenario_id == "baseline_v1")
    assert (surge_multipliers(baseline, spec.horizon, spec.shapes.classes) == 1.0).all()


@pytest.mark.parametrize("n", [1, 2, 37, 1_000])
def test_population_has_exactly_the_requested_entities_with_unique_keys(n):
    spec = load_profile("demo")
    population = draw_population(spec.population, spec.zones, n, "key")
    entities = population.entities
    assert entities.height == n
    assert entities.select(ENTITY_KEY).n_unique() == n
    assert entities.select(ENTITY_KEY).equals(entities.select(ENTITY_KEY).sort(ENTITY_KEY))
    assert set(population.merchants["merchant_id"]) == set(entities["merchant_id"])
    assert (entities["weekly"] > 0).all()


def test_population_depends_only_on_its_key():
    spec = load_profile("tiny")
    one = draw_population(spec.population, spec.zones, 100, "a")
    assert one.entities.equals(draw_population(spec.population, spec.zones, 100, "a").entities)
    assert not one.entities.equals(draw_population(spec.population, spec.zones, 100, "b").entities)


def test_named_generators_are_independent_and_reproducible():
    assert generator("k", "x").random(3).tolist() == generator("k", "x").random(3).tolist()
    assert generator("k", "x").random(3).tolist() != generator("k", "y").random(3).tolist()


def test_mix64_is_splitmix64s_finaliser():
    # SplitMix64 seeded with 0 outputs mix(k * golden), k = 1, 2, 3 (Steele, Lea & Flood 2014; Vigna's code).
    golden = 0x9E3779B97F4A7C15
    states = np.array([golden, (2 * golden) % 2**64, (3 * golden) % 2**64], dtype=np.uint64)
    assert [int(v) for v in mix64(states)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_bundle_files_index_members_by_path_and_flag_their_concatenated_digest():
    members = {"b.json": b"{}\n", "a.json": b"[1]\n"}
    digest = hashlib.sha256(b"[1]\n{}\n").hexdigest()
    assert bundle_digest(members) == digest
    text = bundle_files(contracts.dataset("validation_bundle_1A"), "f" * 64, members)
    assert text["_passed.flag"] == f"sha256_hex = {digest}\n".encode()
    assert text["index.json"].index(b"a.json") < text["index.json"].index(b"b.json")
    as_json = bundle_files(contracts.dataset("validation_bundle_5A"), "f" * 64, members)
    assert as_json["_passed.flag"] == b'{"bundle_digest_sha256":"' + digest.encode() + b'"}\n'
    assert "validation_bundle_index_5A.json" in as_json
    with pytest.raises(ValueError, match="are the index and flag names"):
        bundle_files(contracts.dataset("validation_bundle_1A"), "f" * 64, {"index.json": b""})

"""S1 grouping: the vectorised SHA-256, the zone-group and in-stratum hash laws, group_id and the realism targets."""
from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import yaml

from arrival_core import contracts, grouping
from arrival_core.errors import ArrivalError
from arrival_core.grouping import (
    GroupingPolicy,
    RealismTargets,
    assign_groups,
    attach_features,
    enforce_realism,
    measure_realism,
    merchant_buckets,
    parse_grouping_policy,
    sha256_many,
    zone_group_ids,
)

POLICY_DOC = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "grouping_policy_5B.yaml").read_text())
POLICY = parse_grouping_policy(POLICY_DOC)
GROUP_ID_RE = contracts.load_schema("schemas.5B.yaml#/$defs/group_id")["pattern"]


# ---- SHA-256 -------------------------------------------------------------------------------------------------------

def test_sha256_many_matches_the_fips_known_answers():
    digests = sha256_many(pa.array([b"abc", b""], type=pa.binary()))
    assert bytes(digests[0]).hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert bytes(digests[1]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_many_matches_hashlib_across_block_boundaries():
    rng = np.random.default_rng(20260302)
    lengths = list(range(130)) + [183, 184, 191, 192, 247, 248]  # 55/56 and 119/120 decide a padding block
    messages = [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in lengths]
    digests = sha256_many(pa.array(messages, type=pa.binary()))
    assert [bytes(d) for d in digests] == [hashlib.sha256(m).digest() for m in messages]


def test_sha256_many_reads_a_sliced_string_array_from_its_offset():
    texts = [f"zone-{i}/" * (i % 9) for i in range(40)]
    sliced = pa.array(texts).slice(7, 20)
    assert [bytes(d) for d in sha256_many(sliced)] == [hashlib.sha256(t.encode()).digest() for t in texts[7:27]]


def test_sha256_many_of_no_messages_is_empty():
    assert sha256_many(pa.array([], type=pa.string())).shape == (0, 32)


# ---- the hash laws -------------------------------------------------------------------------------------------------

def test_zone_group_ids_follow_the_law_with_pinned_values():
    tzids = pl.Series(["Europe/London", "America/New_York", "Etc/UTC", "Asia/Tokyo"])
    # sha256(b"5B.zone_group|" + tzid)[0] = 87, 140, 73, 10 -> mod 16
    assert zone_group_ids(tzids, 16).to_list() == ["zg07", "zg12", "zg09", "zg10"]
    assert zone_group_ids(tzids, 100).to_list() == ["zg87", "zg40", "zg73", "zg10"]


def test_merchant_buckets_follow_the_law_at_the_u64_edges():
    ids = pl.Series([0, 1, 12345, 2**63, 2**64 - 1], dtype=pl.UInt64)
    expected = [int.from_bytes(hashlib.sha256(b"5B.group_bucket|" + str(m).encode()).digest()[:8], "big") % 32
                for m in ids.to_list()]
    assert expected == [0, 20, 23, 20, 9]  # pinned: the law must not drift
    assert merchant_buckets(ids, 32).to_list() == expected


# ---- features and group ids ----------------------------------------------------------------------------------------

def _domain() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    domain = pl.DataFrame({
        "merchant_id": pl.Series([7, 7, 7, 9, 2**64 - 1], dtype=pl.UInt64),
        "legal_country_iso": ["GB", "GB", "IE", "US", "US"],
        "tzid": ["Europe/London", "Europe/London", "Europe/Dublin", "America/New_York", "America/New_York"],
        "channel_group": ["card_present", "card_not_present", "card_present", "card_present", "card_not_present"],
    })
    profile = pl.DataFrame({
        "merchant_id": pl.Series([7, 7, 9, 2**64 - 1], dtype=pl.UInt64),
        "legal_country_iso": ["GB", "IE", "US", "US"],
        "tzid": ["Europe/London", "Europe/Dublin", "America/New_York", "America/New_York"],
        "demand_class": ["retail_daytime", "retail_daytime", "nightlife", "online_24h"],
    })
    virtual = pl.DataFrame({
        "merchant_id": pl.Series([7, 9, 2**64 - 1], dtype=pl.UInt64),
        "virtual_mode": ["NON_VIRTUAL", "HYBRID", "VIRTUAL_ONLY"],
    })
    return domain, profile, virtual


def _features(domain=None, profile=None, virtual=None) -> pl.DataFrame:
    d, p, v = _domain()
    return attach_features(domain if domain is not None else d, profile if profile is not None else p,
                           virtual if virtual is not None else v, policy=POLICY, where_profile="profile.parquet",
                           where_virtual="virtual.parquet")


def test_features_map_virtual_modes_to_bands_by_the_policy():
    features = _features().sort("merchant_id")
    assert features["virtual_band"].to_list() == ["physical"] * 3 + ["physical", "virtual"]
    assert features["demand_class"].to_list() == ["retail_daytime"] * 3 + ["nightlife", "online_24h"]


def test_entity_missing_from_profile_is_domain_invalid_naming_it():
    _, profile, _ = _domain()
    with pytest.raises(ArrivalError) as err:
        _features(profile=profile.filter(pl.col("tzid") != "Europe/Dublin"))
    assert err.value.code == "5B.S1.DOMAIN_INVALID"
    assert "merchant_zone_profile_5A" in err.value.message and "Europe/Dublin" in err.value.message
    assert err.value.context["key"] == {"merchant_id": 7, "legal_country_iso": "IE", "tzid": "Europe/Dublin",
                                        "channel_group": "card_present"}


def test_merchant_missing_from_virtual_classification_is_domain_invalid_naming_it():
    _, _, virtual = _domain()
    with pytest.raises(ArrivalError) as err:
        _features(virtual=virtual.filter(pl.col("merchant_id") != 9))
    assert err.value.code == "5B.S1.DOMAIN_INVALID"
    assert "virtual_classification_3B" in err.value.message
    assert err.value.context["key"]["merchant_id"] == 9


def test_group_ids_follow_the_format_and_the_merchant_level_bucket():
    out = assign_groups(_features(), scenario_band="stress", policy=POLICY)
    assert out.select(grouping.ENTITY_KEYS).equals(out.select(grouping.ENTITY_KEYS).sort(list(grouping.ENTITY_KEYS)))
    assert out["group_id"].str.contains(GROUP_ID_RE).all()
    b7 = merchant_buckets(pl.Series([7], dtype=pl.UInt64), 32)[0]
    london = out.filter((pl.col("merchant_id") == 7) & (pl.col("channel_group") == "card_present")
                        & (pl.col("tzid") == "Europe/London"))
    zg = zone_group_ids(pl.Series(["Europe/London"]), 16)[0]
    assert london["group_id"].to_list() == [f"stress|retail_daytime|card_present|physical|{zg}|b{b7:02d}"]
    # One merchant's zones share the in-stratum bucket, so the same stratum means the same group.
    assert out.filter(pl.col("merchant_id") == 7)["group_id"].str.slice(-3).unique().to_list() == [f"b{b7:02d}"]


def test_group_assignment_does_not_depend_on_row_order():
    features = _features()
    shuffled = features.sample(fraction=1.0, shuffle=True, seed=3)
    a = assign_groups(features, scenario_band="baseline", policy=POLICY)
    b = assign_groups(shuffled, scenario_band="baseline", policy=POLICY)
    assert a.equals(b)


# ---- realism -------------------------------------------------------------------------------------------------------

def _grouping(sizes: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"group_id": [f"g{i}" for i, n in enumerate(sizes) for _ in range(n)]})


TARGETS = RealismTargets(min_entities=10, groups_per_scenario=(2, 5), min_group_members_median=2,
                         max_group_share=0.5, min_multi_member_fraction=0.5)


def test_realism_measures_are_exact_on_a_hand_built_grouping():
    report = measure_realism(_grouping([1, 2, 3, 4]), TARGETS)
    assert (report.entity_count, report.group_count, report.median_members, report.max_members) == (10, 4, 2.5, 4)
    assert report.max_group_share == pytest.approx(0.4)
    assert report.multi_member_fraction == pytest.approx(0.75)
    assert report.enforced and report.violations == ()
    enforce_realism(report, scenario_id="baseline_v1", where="grouping_policy_5B.yaml")


def test_realism_failure_names_every_missed_target_with_measured_values():
    report = measure_realism(_grouping([1, 1, 1, 1, 1, 1, 7]), TARGETS)
    assert report.enforced and len(report.violations) == 4
    with pytest.raises(ArrivalError) as err:
        enforce_realism(report, scenario_id="baseline_v1", where="grouping_policy_5B.yaml")
    assert err.value.code == "5B.S1.GROUP_REALISM_FAILED"
    for text in ("group count 7", "median members 1", "largest group share 0.538462", "multi-member fraction 0.142857"):
        assert text in err.value.message
    assert err.value.context["group_count"] == 7


def test_realism_below_min_entities_is_reported_not_enforced():
    report = measure_realism(_grouping([1, 1, 1]), TARGETS)
    assert not report.enforced and report.violations
    enforce_realism(report, scenario_id="baseline_v1", where="grouping_policy_5B.yaml")  # no raise
    assert report.metrics()["realism_violations"] == list(report.violations)


def test_inverted_group_count_range_is_policy_invalid():
    doc = {**POLICY_DOC, "realism_targets": {**POLICY_DOC["realism_targets"], "groups_per_scenario": [50, 10]}}
    with pytest.raises(ArrivalError) as err:
        parse_grouping_policy(doc)
    assert err.value.code == "5B.S1.POLICY_INVALID"
    assert err.value.context["field"] == "realism_targets.groups_per_scenario"


def test_parsed_policy_is_frozen():
    assert isinstance(POLICY, GroupingPolicy)
    with pytest.raises(AttributeError):
        POLICY.in_stratum_buckets = 1  # type: ignore[misc]

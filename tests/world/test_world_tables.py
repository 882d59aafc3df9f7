"""World tables validate in full against their contracts, carry their identity, and are complete."""
from __future__ import annotations

import polars as pl
import pytest
from worldlib import ENTITY, path, read, surface

from arrival_core import contracts, table_schema, tables
from arrival_core.world import load_profile, world_identity
from arrival_core.world.merchants import draw_population

BUCKET = "local_horizon_bucket_index"


def _table_files(world):
    yield "scenario_manifest_5A", {}
    yield "merchant_zone_profile_5A", {}
    for sid in world.scenario_ids:
        yield "merchant_zone_scenario_local_5A", {"scenario_id": sid}
    for seed in world.seeds:
        yield "virtual_classification_3B", {"seed": seed}


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_every_table_validates_against_schema_keys_and_writer_order(world_name, request):
    world = request.getfixturevalue(world_name)
    for dataset_id, tokens in _table_files(world):
        entry = contracts.dataset(dataset_id)
        where = path(world, dataset_id, **tokens)
        tables.validate_table(pl.read_parquet(where), entry.schema_ref, code="5B.S0.INPUT_SCHEMA_INVALID",
                                 where=str(where), primary_key=entry.primary_key,
                                 writer_sort=entry.writer_sort)


def test_dtypes_are_exactly_the_contract_dtypes(tiny_world):
    for dataset_id, tokens in _table_files(tiny_world):
        expected = table_schema.polars_schema(contracts.dataset(dataset_id).schema_ref)
        assert dict(read(tiny_world, dataset_id, **tokens).schema) == expected, dataset_id


def test_identity_columns_equal_the_path_tokens(tiny_world):
    mf = tiny_world.manifest_fingerprint
    for dataset_id, tokens in _table_files(tiny_world):
        frame = read(tiny_world, dataset_id, **tokens)
        if "manifest_fingerprint" in frame.columns:
            assert frame["manifest_fingerprint"].unique().to_list() == [mf], dataset_id
        for name, value in tokens.items():
            assert frame[name].unique().to_list() == [value], (dataset_id, name)


@pytest.mark.parametrize("world_name", ["tiny_world", "demo_world"])
def test_every_entity_has_every_bucket_exactly_once(world_name, request):
    world = request.getfixturevalue(world_name)
    for sid in world.scenario_ids:
        lam = surface(world, sid)
        per_entity = lam.group_by(ENTITY).agg(
            n=pl.len(), lo=pl.col(BUCKET).min(), hi=pl.col(BUCKET).max(), distinct=pl.col(BUCKET).n_unique(),
        )
        assert per_entity.height == world.entities
        assert per_entity.select((pl.col("n") == world.buckets).all()).item()
        assert per_entity.select((pl.col("distinct") == world.buckets).all()).item()
        assert per_entity.select((pl.col("lo") == 0).all() & (pl.col("hi") == world.buckets - 1).all()).item()
        assert lam.height == world.entities * world.buckets


def test_profile_rows_are_exactly_the_zones_of_the_surface_with_their_weekly_volume(tiny_world):
    profile = read(tiny_world, "merchant_zone_profile_5A")
    lam = surface(tiny_world, "baseline_v1")
    zones = lam.select("merchant_id", "legal_country_iso", "tzid").unique()
    assert profile.select(zones.columns).sort(zones.columns).equals(zones.sort(zones.columns))
    # The first week of baseline λ is the weekly volume, up to the one hour a DST switch removes.
    week = (lam.filter(pl.col("local_horizon_bucket_index") < 168)
            .group_by("merchant_id", "legal_country_iso", "tzid").agg(pl.col("lambda_local_scenario").sum()))
    joined = profile.join(week, on=["merchant_id", "legal_country_iso", "tzid"])
    ratio = joined["lambda_local_scenario"] / joined["expected_weekly_arrivals"]
    assert ratio.min() > 0.95 and ratio.max() < 1.05


def test_virtual_classification_is_the_same_for_every_seed_but_the_seed_column(tiny_world):
    one, other = (read(tiny_world, "virtual_classification_3B", seed=s) for s in tiny_world.seeds)
    assert one.drop("seed").equals(other.drop("seed"))
    assert one["seed"].unique().to_list() == [tiny_world.seeds[0]]
    merchants = read(tiny_world, "merchant_zone_profile_5A")["merchant_id"].unique().sort()
    assert one["merchant_id"].equals(merchants)


def test_merchant_ids_are_unique_and_spread_over_the_full_uint64_range(demo_world):
    ids = read(demo_world, "virtual_classification_3B", seed=42)["merchant_id"]
    assert ids.n_unique() == ids.len()
    assert (ids >= 2**63).any() and (ids < 2**63).any()
    assert ids.max() > 2**64 - 2**61 and ids.min() < 2**61


def test_manifest_has_the_profile_scenarios_on_the_horizon(demo_world):
    manifest = read(demo_world, "scenario_manifest_5A")
    assert manifest["scenario_id"].to_list() == ["baseline_v1", "stress_v1"]
    assert manifest["is_baseline"].to_list() == [True, False]
    assert manifest["is_stress"].to_list() == [False, True]
    span = manifest["horizon_end_utc"] - manifest["horizon_start_utc"]
    assert span.dt.total_hours().to_list() == [demo_world.buckets] * 2 == [672] * 2


def test_reference_profile_gives_exactly_14661_entities_over_2160_buckets():
    spec = load_profile("reference")
    population = draw_population(spec.population, spec.zones, spec.entities,
                                 world_identity(spec, spec.world_seed).manifest_fingerprint)
    assert population.entities.height == 14_661
    assert spec.horizon.buckets == 2_160
    assert [s.scenario_id for s in spec.scenarios] == ["baseline_v1"]


@pytest.mark.slow
def test_reference_world_has_31667760_lambda_rows_that_validate(tmp_path):
    from arrival_core.world import create_world

    world = create_world("reference", tmp_path / "reference", seeds=(42,))
    assert world.rows["merchant_zone_scenario_local_5A[scenario_id=baseline_v1]"] == 31_667_760
    entry = contracts.dataset("merchant_zone_scenario_local_5A")
    where = path(world, entry.id, scenario_id="baseline_v1")
    tables.validate_table(pl.read_parquet(where), entry.schema_ref, code="5B.S0.INPUT_SCHEMA_INVALID",
                             where=str(where), primary_key=entry.primary_key, writer_sort=entry.writer_sort)

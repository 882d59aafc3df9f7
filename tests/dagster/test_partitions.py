"""The seed × scenario grid: keys print as "<scenario>|<seed>", parse through Dagster, validate both."""

import dagster as dg
import pytest

from arrival_assets.partitions import (
    SCENARIO_DIMENSION,
    SEED_DIMENSION,
    grid,
    parse_partition_key,
    partition_key,
    register_partitions,
)
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey


def test_key_prints_scenario_then_seed_and_round_trips():
    key = partition_key(PartitionKey(42, "baseline_v1"))
    assert str(key) == "baseline_v1|42"
    parsed = parse_partition_key(key)
    assert (parsed.seed, parsed.scenario_id) == (42, "baseline_v1")


def test_largest_seed_parses_as_unsigned_64_bit():
    assert parse_partition_key(f"stress_v1|{2**64 - 1}").seed == 2**64 - 1


@pytest.mark.parametrize(
    "key",
    [
        "../etc|42",
        "baseline_v1|042",
        "baseline_v1|-1",
        f"baseline_v1|{2**64}",
        "Baseline|1",
        "baseline_v1|1.0",
    ],
)
def test_invalid_values_are_identity_invalid(key):
    with pytest.raises(ArrivalError) as info:
        parse_partition_key(key)
    assert info.value.code == "5B.IDENTITY_INVALID"


def test_grid_dimensions_are_two_dynamic_definitions():
    dims = {d.name: d.partitions_def for d in grid.partitions_defs}
    assert set(dims) == {SEED_DIMENSION, SCENARIO_DIMENSION}
    assert all(isinstance(p, dg.DynamicPartitionsDefinition) for p in dims.values())


def test_register_adds_only_missing_partitions():
    with dg.DagsterInstance.ephemeral() as instance:
        first = register_partitions(instance, ["42", "7"], ["baseline_v1"])
        second = register_partitions(instance, ["7", "1"], ["baseline_v1", "stress_v1"])
        assert first == {SEED_DIMENSION: ["7", "42"], SCENARIO_DIMENSION: ["baseline_v1"]}
        assert second == {SEED_DIMENSION: ["1"], SCENARIO_DIMENSION: ["stress_v1"]}
        keys = set(grid.get_partition_keys(dynamic_partitions_store=instance))
        assert "stress_v1|42" in keys and len(keys) == 6


def test_register_refuses_an_invalid_seed_before_touching_the_instance():
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(ArrivalError):
            register_partitions(instance, ["1", "01"], ["baseline_v1"])
        assert instance.get_dynamic_partitions(SEED_DIMENSION) == []

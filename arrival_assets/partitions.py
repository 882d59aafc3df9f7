"""The seed × scenario partition grid shared by every asset and check, and parsing of its keys."""

from __future__ import annotations

import dagster as dg

from arrival_core.errors import IDENTITY_INVALID, ArrivalError
from arrival_core.identity import PartitionKey, validate_scenario_id, validate_seed

SEED_DIMENSION = "seed"
SCENARIO_DIMENSION = "scenario"

seeds = dg.DynamicPartitionsDefinition(name=SEED_DIMENSION)
scenarios = dg.DynamicPartitionsDefinition(name=SCENARIO_DIMENSION)
grid = dg.MultiPartitionsDefinition({SEED_DIMENSION: seeds, SCENARIO_DIMENSION: scenarios})


def parse_partition_key(key: str | dg.MultiPartitionKey) -> PartitionKey:
    """Parse a grid key (`"<scenario>|<seed>"`) through Dagster, then validate both (IDENTITY_INVALID)."""
    dims = grid.get_partition_key_from_str(str(key)).keys_by_dimension
    return PartitionKey(dims[SEED_DIMENSION], dims[SCENARIO_DIMENSION])


def partition_key(key: PartitionKey) -> dg.MultiPartitionKey:
    """Return the grid key of a partition (validated where it entered)."""
    return dg.MultiPartitionKey(
        {SEED_DIMENSION: str(key.seed), SCENARIO_DIMENSION: key.scenario_id}
    )


def missing_partitions(
    instance: dg.DagsterInstance, seed_keys: list[str], scenario_ids: list[str]
) -> dict[str, list[str]]:
    """Return the seeds and scenarios (validated, sorted) not yet registered in the instance."""
    wanted = {
        SEED_DIMENSION: sorted({str(validate_seed(s)) for s in seed_keys}, key=int),
        SCENARIO_DIMENSION: sorted({validate_scenario_id(s) for s in scenario_ids}),
    }
    return {
        dim: [k for k in keys if not instance.has_dynamic_partition(dim, k)] for dim, keys in wanted.items()
    }


def unknown_scenarios(instance: dg.DagsterInstance, known: list[str]) -> list[str]:
    """The scenario partitions registered in the instance that the world's manifest does not have (added by hand,
    e.g. from the UI's "Add partition"), sorted."""
    return sorted(set(instance.get_dynamic_partitions(SCENARIO_DIMENSION)) - set(known))


def remove_partitions(instance: dg.DagsterInstance, seed_keys: list[str], scenario_keys: list[str]) -> None:
    """Delete registered seed and scenario keys exactly as registered (a key added by hand may not even be a
    valid id); a key that is not registered is IDENTITY_INVALID naming those that are, and nothing is deleted."""
    wanted = {SEED_DIMENSION: seed_keys, SCENARIO_DIMENSION: scenario_keys}
    registered = {dim: instance.get_dynamic_partitions(dim) for dim in wanted}
    for dim, keys in wanted.items():
        absent = [k for k in keys if k not in registered[dim]]
        if absent:
            raise ArrivalError(IDENTITY_INVALID, f"{dim} partition(s) {absent} are not registered "
                               f"(registered: {registered[dim]})", field=dim, value=repr(absent))
    for dim, keys in wanted.items():
        for key in dict.fromkeys(keys):
            instance.delete_dynamic_partition(dim, key)


def register_partitions(
    instance: dg.DagsterInstance, seed_keys: list[str], scenario_ids: list[str]
) -> dict[str, list[str]]:
    """Add missing seeds and scenarios to the instance; return what was added."""
    added = missing_partitions(instance, seed_keys, scenario_ids)
    for dim, keys in added.items():
        if keys:
            instance.add_dynamic_partitions(dim, keys)
    return added

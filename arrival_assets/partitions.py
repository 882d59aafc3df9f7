"""The seed × scenario partition grid shared by every asset and check, and parsing of its keys."""

from __future__ import annotations

import dagster as dg

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


def register_partitions(
    instance: dg.DagsterInstance, seed_keys: list[str], scenario_ids: list[str]
) -> dict[str, list[str]]:
    """Add missing seeds and scenarios to the instance; return what was added."""
    added = missing_partitions(instance, seed_keys, scenario_ids)
    for dim, keys in added.items():
        if keys:
            instance.add_dynamic_partitions(dim, keys)
    return added

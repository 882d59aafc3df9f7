"""The partition sensor: registers the world's scenarios and the run plan's default seeds as partitions."""

import dagster as dg

from arrival_core import pipeline
from arrival_core.errors import ArrivalError

from .partitions import (
    SCENARIO_DIMENSION,
    SEED_DIMENSION,
    missing_partitions,
    scenarios,
    seeds,
    unknown_scenarios,
)
from .resources import StoreResource
from .run_roots import default_seeds


@dg.sensor(
    name="register_partitions",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds the scenarios of scenario_manifest_5A and run_plan.yaml's default seeds as partitions.",
)
def register_partitions(
    context: dg.SensorEvaluationContext, store: StoreResource
) -> dg.SensorResult | dg.SkipReason:
    """Register whatever scenarios and default seeds the instance does not know yet."""
    try:
        scenario_list = pipeline.world_scenarios(store.open())
    except ArrivalError as err:
        return dg.SkipReason(f"{err.code}: {err.message}")
    missing = missing_partitions(context.instance, [str(s) for s in default_seeds()], scenario_list)
    requests = [
        definition.build_add_request(missing[dim])
        for dim, definition in ((SEED_DIMENSION, seeds), (SCENARIO_DIMENSION, scenarios))
        if missing[dim]
    ]
    unknown = unknown_scenarios(context.instance, scenario_list)
    note = (f"; scenario partition(s) {unknown} are not in scenario_manifest_5A (known: {scenario_list}): their "
            f"runs are refused, and `arrival partitions remove --scenario <id>` deletes them") if unknown else ""
    if unknown:
        context.log.warning(note.removeprefix("; "))
    if not requests:
        return dg.SkipReason("every scenario and default seed is registered" + note)
    return dg.SensorResult(dynamic_partitions_requests=requests)

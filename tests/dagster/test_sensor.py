"""The partition sensor registers the world's scenarios and the run plan's default seeds, once."""

from __future__ import annotations

import dagster as dg

from arrival_assets.partitions import SCENARIO_DIMENSION, SEED_DIMENSION
from arrival_assets.resources import StoreResource
from arrival_assets.run_roots import default_seeds
from arrival_assets.sensors import register_partitions


def _evaluate(instance: dg.DagsterInstance, root) -> dg.SensorResult | dg.SkipReason:
    with dg.build_sensor_context(
        instance=instance, resources={"store": StoreResource(run_root=str(root))}
    ) as context:
        return register_partitions(context)


def test_sensor_adds_manifest_scenarios_and_default_seeds_then_skips(tiny_world):
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(SEED_DIMENSION, ["1"])
        result = _evaluate(instance, tiny_world.root)
        assert isinstance(result, dg.SensorResult)
        added = {r.partitions_def_name: list(r.partition_keys) for r in result.dynamic_partitions_requests}
        assert added == {
            SCENARIO_DIMENSION: sorted(tiny_world.scenario_ids),
            SEED_DIMENSION: [str(s) for s in default_seeds()],
        }
        for name, keys in added.items():
            instance.add_dynamic_partitions(name, keys)
        assert isinstance(_evaluate(instance, tiny_world.root), dg.SkipReason)


def test_sensor_skips_with_the_code_when_the_root_holds_no_world(tmp_path):
    (tmp_path / "something").write_text("not a world")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _evaluate(instance, tmp_path)
        assert isinstance(result, dg.SkipReason)
        assert "5B." in (result.skip_message or "")
        assert instance.get_dynamic_partitions(SCENARIO_DIMENSION) == []

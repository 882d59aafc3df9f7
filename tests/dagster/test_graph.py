"""The whole graph, pinned: asset keys and groups, checks per asset, partitions, job, sensor and executor."""

from __future__ import annotations

import dagster as dg

from arrival_assets.definitions import defs
from arrival_assets.partitions import grid

GROUPS = {
    "sealed_inputs": {
        "validation_bundle_1A",
        "validation_bundle_1B",
        "validation_bundle_2A",
        "validation_bundle_2B",
        "validation_bundle_3A",
        "validation_bundle_3B",
        "validation_bundle_5A",
        "scenario_manifest_5A",
        "merchant_zone_profile_5A",
        "merchant_zone_scenario_local_5A",
        "merchant_zone_scenario_utc_5A",
        "virtual_classification_3B",
        "arrival_count_config_5B",
        "arrival_lgcp_config_5B",
        "arrival_rng_policy_5B",
        "bundle_layout_policy_5B",
        "grouping_policy_5B",
        "time_grid_policy_5B",
    },
    "s0_gate": {"sealed_inputs_5B", "s0_gate_receipt_5B"},
    "s1_plan": {"s1_time_grid_5B", "s1_grouping_5B"},
    "s2_latent": {"s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian"},
    "s3_counts": {"s3_bucket_counts_5B", "rng_event_arrival_bucket_count"},
    "rng_audit": {"rng_audit_log_5B"},
}

TABLE = ("schema_valid", "primary_key_unique", "domain_complete")
CHECKS = {
    "sealed_inputs_5B": {"schema_valid", "primary_key_unique", "gate_consistent"},
    "s0_gate_receipt_5B": {"schema_valid", "gate_consistent"},
    "s1_time_grid_5B": set(TABLE),
    "s1_grouping_5B": set(TABLE),
    "s2_realised_intensity_5B": {*TABLE, "numeric_valid", "rng_replay"},
    "s2_latent_field_5B": {*TABLE, "numeric_valid", "rng_replay", "latent_corridor"},
    "rng_event_arrival_lgcp_gaussian": {
        "schema_valid",
        "primary_key_unique",
        "rng_accounting",
        "rng_replay",
        "trace_schema_valid",
        "trace_consistent",
    },
    "s3_bucket_counts_5B": {*TABLE, "numeric_valid", "rng_replay", "count_corridor"},
    "rng_event_arrival_bucket_count": {
        "schema_valid",
        "primary_key_unique",
        "rng_accounting",
        "rng_replay",
        "trace_schema_valid",
        "trace_consistent",
    },
    "rng_audit_log_5B": {"schema_valid", "rng_accounting"},
}
WARN_CHECKS = {("s2_latent_field_5B", "latent_corridor"), ("s3_bucket_counts_5B", "count_corridor")}


def test_asset_keys_and_groups_are_pinned():
    graph = defs.resolve_asset_graph()
    found: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        found.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    assert found == GROUPS


def test_checks_per_asset_are_pinned_and_only_warn_checks_do_not_block():
    graph = defs.resolve_asset_graph()
    found: dict[str, set[str]] = {}
    for check_key in graph.asset_check_keys:
        found.setdefault(check_key.asset_key.to_user_string(), set()).add(check_key.name)
        spec = graph.get_check_spec(check_key)
        is_warn = (check_key.asset_key.to_user_string(), check_key.name) in WARN_CHECKS
        assert spec.blocking is not is_warn, check_key
        assert spec.metadata["severity"] == ("WARN" if is_warn else "ERROR")
    assert found == CHECKS


def test_every_asset_and_check_is_partitioned_by_the_seed_by_scenario_grid():
    graph = defs.resolve_asset_graph()
    assert all(graph.get(k).partitions_def == grid for k in graph.get_all_asset_keys())
    assert all(graph.get_check_spec(k).partitions_def == grid for k in graph.asset_check_keys)
    assert [d.name for d in grid.partitions_defs] == ["scenario", "seed"]


def test_job_sensor_resource_and_executor():
    job = defs.resolve_job_def("arrival_5b")
    assert job.executor_def is dg.in_process_executor
    assert job.partitions_def == grid
    graph = defs.resolve_asset_graph()
    selected = job.asset_layer.selected_asset_keys
    assert selected == set(graph.get_all_asset_keys())
    selected_checks = {k for d in job.asset_layer.data for k in d.assets_def.check_keys}
    assert selected_checks == set(graph.asset_check_keys)
    assert [s.name for s in defs.sensors] == ["register_partitions"]
    assert defs.resolve_sensor_def("register_partitions").default_status == dg.DefaultSensorStatus.RUNNING
    assert set(defs.resources) == {"store"}


def test_one_step_for_the_sealed_inputs_and_one_per_state_holding_its_checks():
    job = defs.resolve_job_def("arrival_5b")
    states = {"sealed_inputs", "s0_gate", "s1_plan", "s2_latent", "s3_counts", "rng_audit"}
    assert set(job.graph.node_names()) == states  # no separate check step: 6 steps a partition, not 18
    graph = defs.resolve_asset_graph()
    for assets_def in {graph.get(k).assets_def for k in graph.get_all_asset_keys()}:
        assert assets_def.can_subset  # a run may select its checks alone
        owned = {k.to_user_string() for k in assets_def.keys}
        assert {k.asset_key.to_user_string() for k in assets_def.check_keys} == set(CHECKS) & owned

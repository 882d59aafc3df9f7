"""`arrival status`: per-partition state and check results, read back from a real instance after real runs."""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest
from graph_helpers import failures, graph_for, run_partition

from arrival_assets import status
from arrival_assets.partitions import register_partitions
from arrival_core import checks as core_checks
from arrival_core import pipeline
from arrival_core.checks import evaluation
from arrival_core.errors import ArrivalError, error_code

STATE_NAMES = ["s0_gate", "s1_plan", "s2_latent", "s3_counts", "rng_audit"]
FAILED_CHECK = ("s2_latent_field_5B", "numeric_valid")  # ERROR; nothing downstream reads the latent field
WARNED_CHECK = ("s2_latent_field_5B", "latent_corridor")  # WARN
# The checks of what S3 and the audit publish: never evaluated once S3 fails
NOT_RUN_DATASETS = {
    "s3_bucket_counts_5B",
    "rng_event_arrival_bucket_count",
    "rng_trace_arrival_bucket_count",
    "rng_audit_log_5B",
}


def _s3_fails(store, *args):
    raise ArrivalError(error_code("S3", "S2_OUTPUT_MISSING"), "S3 made to fail by the status test")


_real_evaluate = evaluation.evaluate


def _two_checks_fail(*args, **kwargs):
    return [
        dataclasses.replace(o, passed=False) if (o.dataset_id, o.name) in (FAILED_CHECK, WARNED_CHECK) else o
        for o in _real_evaluate(*args, **kwargs)
    ]


@pytest.fixture(scope="module")
def instance(shared_world_root):
    """baseline_v1|42 run whole; stress_v1|1 run with S3 failing and two latent-field checks failing;
    baseline_v1|1 and stress_v1|42 registered but never run."""
    with dg.DagsterInstance.ephemeral() as inst:
        register_partitions(inst, ["1", "42"], ["baseline_v1", "stress_v1"])
        good = run_partition(graph_for(shared_world_root), inst, "baseline_v1|42")
        assert good.success, failures(good)
        with pytest.MonkeyPatch.context() as mp:  # the state assets take their runners when built
            mp.setattr(pipeline, "STATES", tuple(
                dataclasses.replace(s, runner=_s3_fails) if s.code == "S3" else s for s in pipeline.STATES
            ))
            broken = graph_for(shared_world_root)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evaluation, "evaluate", _two_checks_fail)
            bad = run_partition(broken, inst, "stress_v1|1")
        assert set(failures(bad)) == {"s3_counts", "check_s2_latent_field_5B"}
        yield inst


@pytest.fixture(scope="module")
def rows(instance):
    return {row.key: row for row in status.partition_status(instance)}


def test_check_catalogue_has_every_check_once():
    keys = status.check_keys()
    assert len(keys) == len(set(keys)) == len(core_checks.CHECKS) == 42


def test_materialised_partition_shows_every_state_materialized_and_every_check_passed(rows):
    row = rows["baseline_v1|42"]
    assert (row.seed, row.scenario_id) == ("42", "baseline_v1")
    assert list(row.states) == STATE_NAMES
    assert set(row.states.values()) == {status.MATERIALIZED}
    assert (row.checks_passed, row.checks_failed, row.checks_warned, row.checks_not_run) == (42, 0, 0, 0)
    assert row.complete


def test_partitions_never_run_are_missing_with_no_check_results(rows):
    for key in ("stress_v1|42", "baseline_v1|1"):
        row = rows[key]
        assert set(row.states.values()) == {status.MISSING}, key
        assert (row.checks_passed, row.checks_failed, row.checks_warned, row.checks_not_run) == (0, 0, 0, 0)
        assert not row.complete


def test_failed_step_is_failed_and_states_it_stopped_are_missing(rows):
    row = rows["stress_v1|1"]
    assert row.states == {
        "s0_gate": status.MATERIALIZED,
        "s1_plan": status.MATERIALIZED,
        "s2_latent": status.MATERIALIZED,
        "s3_counts": status.FAILED,
        "rng_audit": status.MISSING,
    }
    assert row.failed_checks == (":".join(FAILED_CHECK),)
    assert row.warned_checks == (":".join(WARNED_CHECK),)
    not_run = sum(spec.dataset_id in NOT_RUN_DATASETS for spec in core_checks.CHECKS)
    assert row.checks_not_run == not_run
    assert row.checks_passed == 42 - not_run - 2
    assert (row.checks_failed, row.checks_warned) == (1, 1)
    assert not row.complete


def test_rows_come_by_seed_then_scenario_and_filter_by_seed(instance):
    keys = [r.key for r in status.partition_status(instance)]
    assert keys == ["baseline_v1|1", "stress_v1|1", "baseline_v1|42", "stress_v1|42"]
    assert [r.key for r in status.partition_status(instance, seed="42")] == ["baseline_v1|42", "stress_v1|42"]
    assert status.partition_status(instance, seed="7") == []
    with pytest.raises(ArrivalError):
        status.partition_status(instance, seed="042")


def test_format_status_prints_a_row_per_partition_and_the_failed_checks(rows):
    ordered = [rows[k] for k in ("baseline_v1|1", "stress_v1|1", "baseline_v1|42", "stress_v1|42")]
    lines = status.format_status(ordered)
    assert lines[0].split() == ["partition", *STATE_NAMES, "passed", "failed", "warned"]
    by_key = {line.split()[0]: line.split() for line in lines[2:] if line.split()[0] in rows}
    assert by_key["baseline_v1|42"] == ["baseline_v1|42", *["materialized"] * 5, "42", "0", "0"]
    assert by_key["stress_v1|42"] == ["stress_v1|42", *["missing"] * 5, "0", "0", "0"]
    assert by_key["stress_v1|1"][1:6] == ["materialized"] * 3 + ["failed", "missing"]
    assert by_key["stress_v1|1"][6:9] == [str(rows["stress_v1|1"].checks_passed), "1", "1"]
    assert any(line.split() == ["FAILED", ":".join(FAILED_CHECK)] for line in lines)
    assert any(line.split() == ["WARN", ":".join(WARNED_CHECK)] for line in lines)
    assert lines[-2] == status.STATUS_KEY
    assert lines[-1] == ("4 partition(s): 1 complete, 1 with failures, 2 incomplete (a state missing or running: "
                         "never run, not reached or interrupted)")


def test_format_status_of_no_partitions_says_how_to_add_them():
    assert status.format_status([]) == [
        "no partitions registered (arrival partitions add --seed N, or arrival run --seed N)"
    ]


def test_show_status_reads_the_instance_at_dagster_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    printed: list[str] = []
    assert status.show_status(out=printed.append) == 0
    assert printed == status.format_status([])
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        register_partitions(inst, ["42"], ["baseline_v1"])
    printed.clear()
    assert status.show_status(seed="42", out=printed.append) == 0
    assert printed[2].split() == ["baseline_v1|42", *["missing"] * 5, "0", "0", "0"]
    printed.clear()
    status.show_status(seed="7", out=printed.append)
    assert printed == ["seed 7 has no registered partitions (arrival partitions add --seed 7)"]

"""Faults met by `arrival` commands and the Dagster graph: a corrupt λ page, a read-only root, `kill -9` at each
commit point and a re-run, SIGTERM / SIGINT mid-run, a policy edited within a run, an empty scenario manifest, a
run root that is a file, invalid identity values, and tracebacks only with `--debug`. Each asserts the exact
code, the exit status, and that nothing but the expected run reports appeared, with no temp file anywhere."""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import configlib
import dagster as dg
import polars as pl
import pytest
from faultlib import (
    arrival,
    assert_nothing_written,
    corrupt_first_key_page,
    kill9_on_temp,
    listing,
    mount,
    os_error,
    outputs_5b,
    records_5b,
    revalidate_5a,
    signal_on_temp,
    spawn_arrival,
    temp_files,
    umount,
)
from graph_helpers import failures

from arrival_assets import cli
from arrival_assets.definitions import build_definitions
from arrival_assets.jobs import JOB_NAME
from arrival_assets.partitions import parse_partition_key, register_partitions
from arrival_assets.resources import StoreResource
from arrival_core import contracts, pipeline
from arrival_core.identity import PartitionKey
from arrival_core.store import Store
from arrival_core.world import WorldInfo

RUN = ["run", "--seed", "42", "--scenario", "baseline_v1"]
S0_DATASETS = ("sealed_inputs_5B", "s0_gate_receipt_5B")
S1_DATASETS = ("s1_time_grid_5B", "s1_grouping_5B")
OUTPUTS = "data/layer2/5B"
FRAME = re.compile(r'File "[^"]+", line \d+, in ')  # a frame of a traceback, in Python's or Dagster's layout
HOLD = 10.0  # seconds an fsync of the watched temp file is held, so a signal lands while it is staged


def _store(world: WorldInfo | Path, config_dir: Path | None = None) -> Store:
    root = world.root if isinstance(world, WorldInfo) else world
    return Store(run_root=Path(root), config_dir=config_dir or contracts.DEFAULT_CONFIG_DIR)


def _seed_files(root: Path, seed: int) -> list[Path]:
    return list((Path(root) / "data/layer1/3B/virtual_classification").glob(f"seed={seed}/**/*.parquet"))


def _stopped_runs(home: Path) -> dict[str, dg.DagsterRunStatus]:
    """Run id -> status of every run in the instance at `home`; asserts none is still STARTED."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {run.run_id: run.status for run in instance.get_runs()}
    assert dg.DagsterRunStatus.STARTED not in runs.values(), runs
    return runs


# ---- a corrupt page in the λ surface ------------------------------------------------------------------------

def test_corrupt_lambda_page_makes_arrival_run_exit_2_with_s1_io_read_failed(tiny_world_copy: WorldInfo, tmp_path):
    root = tiny_world_copy.root
    surface = _store(root).path("merchant_zone_scenario_local_5A", manifest_fingerprint=tiny_world_copy.manifest_fingerprint,
                                scenario_id="baseline_v1")
    corrupt_first_key_page(surface)
    revalidate_5a(root)
    pipeline.run_s0(_store(root), PartitionKey(42, "baseline_v1"))  # the run's S0 then publishes nothing new
    before = listing(root)
    result = arrival([*RUN, "--root", str(root)], tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: baseline_v1|42: 5B.S1.IO_READ_FAILED: cannot read the λ surface's entity keys {surface}" in result.stderr
    assert "Traceback" not in result.stderr and not FRAME.search(result.stderr)  # a step failure, without --debug
    reports = assert_nothing_written(root, before, fail_code="5B.S1.IO_READ_FAILED", records_for=S0_DATASETS)
    assert sorted((r["state_id"], r["status"]) for r in reports) == [("5B.S0", "PASS"), ("5B.S1", "FAIL")]


# ---- a read-only run root -----------------------------------------------------------------------------------

def _expect_s0_write_refused(status: int, stderr: str, root: Path, before: dict[str, str]) -> None:
    assert status == 2, stderr
    assert "error: baseline_v1|42: 5B.S0.IO_WRITE_FAILED: cannot write" in stderr
    assert "Read-only file system" in stderr and "Traceback" not in stderr
    assert_nothing_written(root, before)  # not even a run report can be written


def test_read_only_root_makes_arrival_run_exit_2_with_s0_io_write_failed(tiny_world_copy, tmp_path, request):
    """A read-only bind mount of the world (root only; chmod does not stop root)."""
    world, mounted = tiny_world_copy.root, tmp_path / "read_only_world"
    mounted.mkdir()
    why = mount("--bind", str(world), str(mounted))
    if why:
        pytest.skip(f"no read-only bind mount: {why}")
    request.addfinalizer(lambda: umount(mounted))
    why = mount("-o", "remount,ro,bind", str(mounted))
    assert why is None, why
    before = listing(world)
    result = arrival([*RUN, "--root", str(mounted)], tmp_path / "home")
    _expect_s0_write_refused(result.returncode, result.stderr, world, before)


def test_erofs_under_the_root_makes_arrival_run_exit_2(tiny_world_copy, tmp_path, monkeypatch, capsys):
    """The same refusal where mounting is not possible: creating, linking or making folders under the root raises
    EROFS (in process, through the command's entry point)."""
    root = tiny_world_copy.root
    inside = f"{root}{os.sep}"
    real_open, real_link, real_mkdir = os.open, os.link, os.mkdir

    def ro_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and str(path).startswith(inside):
            raise os_error(errno.EROFS, path)
        return real_open(path, flags, *args, **kwargs)

    def ro_link(src, dst, *args, **kwargs):
        if str(dst).startswith(inside):
            raise os_error(errno.EROFS, dst)
        return real_link(src, dst, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if str(path).startswith(inside):
            raise os_error(errno.EEXIST if os.path.exists(path) else errno.EROFS, path)
        return real_mkdir(path, *args, **kwargs)

    before = listing(root)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARRIVAL_RUN_ROOT", raising=False)
    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "link", ro_link)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    status = cli.main([*RUN, "--root", str(root)])
    monkeypatch.undo()
    _expect_s0_write_refused(status, capsys.readouterr().err, root, before)


# ---- kill -9 at each commit point, then the same command again ------------------------------------------------

KILL_POINTS = ("sealed_inputs_5B", "s1_grouping_5B", "s2_realised_intensity_5B", "s3_bucket_counts_5B",
               "rng_audit_log_5B", "run_report_5B", "commit_record_5B", "check_record_5B")


@pytest.fixture(scope="module")
def clean_run(tiny_world, tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """The 5B outputs (run reports excluded) and the records of one uninterrupted `arrival run` of the tiny world."""
    base = tmp_path_factory.mktemp("clean_run")
    shutil.copytree(tiny_world.root, base / "world")
    result = arrival([*RUN, "--root", str(base / "world")], base / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    return outputs_5b(base / "world"), records_5b(base / "world")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", KILL_POINTS)
def test_kill_9_while_an_output_is_staged_then_a_rerun_publishes_the_clean_bytes(
    tiny_world_copy, tmp_path, clean_run, dataset
):
    root, home = tiny_world_copy.root, tmp_path / "home"
    args = [*RUN, "--root", str(root)]
    proc = spawn_arrival(args, home, hold_fsync_of=f".{dataset}.", delay=HOLD)
    staged, _, _ = kill9_on_temp(proc, root, f".{dataset}.")
    assert proc.returncode == -signal.SIGKILL
    assert staged.exists(), "the kill landed after the file was published"  # what the re-run must clean up

    rerun = arrival(args, home)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert outputs_5b(root) == clean_run[0]
    assert records_5b(root) == clean_run[1]
    assert temp_files(root) == []
    killed = re.findall(r"marked run (\S+) failed: the process that executed it is gone", rerun.stderr)
    runs = _stopped_runs(home)
    assert len(killed) == 1 and runs[killed[0]] == dg.DagsterRunStatus.FAILURE, (rerun.stderr, runs)
    assert sorted(status.value for status in runs.values()) == ["FAILURE", "SUCCESS"]


# ---- SIGTERM / SIGINT during S3 of the first partition ------------------------------------------------------------

@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_during_s3_of_the_first_partition_stops_the_command(tiny_world_copy, tmp_path, signum, status):
    root, home = tiny_world_copy.root, tmp_path / "home"
    proc = spawn_arrival(["run", "--seed", "42", "--root", str(root)], home, hold_fsync_of=".s3_bucket_counts_5B.",
                         delay=HOLD)
    _, out, err = signal_on_temp(proc, root / OUTPUTS, ".s3_bucket_counts_5B.", signum, under="scenario_id=baseline_v1")
    name = signal.Signals(signum).name
    assert proc.returncode == status, out + err
    assert f"interrupted by {name}: stopped; nothing partial was kept" in err
    assert "Traceback" not in err
    written = listing(root / OUTPUTS)
    assert [p for p in written if "scenario_id=stress_v1" in p] == []  # the second partition never started
    assert [p for p in written if p.startswith("s3_bucket_counts_5B/")] == []  # the interrupted step kept nothing
    assert temp_files(root) == []
    assert set(_stopped_runs(home).values()) <= {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


# ---- a policy edited between S1 and S2 within one run -----------------------------------------------------------

S2_DATASETS = ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian",
               "rng_trace_arrival_lgcp_gaussian")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _run_graph(root: Path, config: Path, key: str = "baseline_v1|42") -> dg.ExecuteInProcessResult:
    """The arrival_5b job for one partition, in process, on a run root with the policies of `config`."""
    defs = build_definitions(StoreResource(run_root=str(root), config_dir=str(config)))
    with dg.DagsterInstance.ephemeral() as instance:
        part = parse_partition_key(key)
        register_partitions(instance, [str(part.seed)], [part.scenario_id])
        return defs.resolve_job_def(JOB_NAME).execute_in_process(partition_key=key, instance=instance,
                                                                 raise_on_error=False, run_config=QUIET)


def _edit_lgcp_policy(config: Path) -> Path:
    """A schema-valid edit of the LGCP policy (the baseline σ), as a hand edit during a run would be."""
    policy = config / "arrival_lgcp_config_5B.yaml"
    text = policy.read_text()
    policy.write_text(text.replace("{baseline: 0.18,", "{baseline: 0.20,", 1))
    assert policy.read_text() != text
    return policy


def _with_runner(monkeypatch: pytest.MonkeyPatch, code: str, runner) -> None:
    states = tuple(replace(s, runner=runner) if s.code == code else s for s in pipeline.STATES)
    monkeypatch.setattr(pipeline, "STATES", states)


def _s2_files(root: Path) -> list[str]:
    """Every file of an S2 dataset under any parameter_hash."""
    return [p for p in listing(root / OUTPUTS) if p.split("/")[0] in S2_DATASETS]


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    return configlib.config_copy(tmp_path)


def test_policy_edited_just_before_s2_fails_s2_gate_naming_the_file(tiny_world_copy, config_copy, monkeypatch):
    root, before_s2 = tiny_world_copy.root, {}
    real_s2 = pipeline.run_s2

    def edit_then_s2(st, *args):
        before_s2.update(listing(root))
        before_s2["policy"] = str(_edit_lgcp_policy(config_copy))
        return real_s2(st, *args)

    _with_runner(monkeypatch, "S2", edit_then_s2)
    result = _run_graph(root, config_copy)
    policy = before_s2.pop("policy")
    failed = failures(result)
    assert list(failed) == ["s2_latent"]
    assert failed["s2_latent"]["error_code"] == "5B.S2.S0_GATE_INVALID"
    assert failed["s2_latent"]["error_message"] == f"policy {policy} changed since S0 sealed it"
    assert _s2_files(root) == []
    assert_nothing_written(root, before_s2, fail_code="5B.S2.S0_GATE_INVALID")


def test_policy_edited_right_after_s1_publishes_stops_the_run_at_s1_checks(tiny_world_copy, config_copy, monkeypatch):
    """S1's blocking checks re-open the gate before S2 can start: they fail naming the edited file."""
    root, after_s1 = tiny_world_copy.root, {}
    real_s1 = pipeline.run_s1

    def s1_then_edit(st, *args):
        result = real_s1(st, *args)
        policy = _edit_lgcp_policy(config_copy)
        after_s1.update(listing(root))
        after_s1["policy"] = str(policy)
        return result

    _with_runner(monkeypatch, "S1", s1_then_edit)
    result = _run_graph(root, config_copy)
    policy = after_s1.pop("policy")
    failed_checks = {(e.asset_key.to_user_string(), e.check_name): e.description
                     for e in result.get_asset_check_evaluations() if not e.passed}
    assert {asset for asset, _ in failed_checks} == {"s1_time_grid_5B", "s1_grouping_5B"}
    assert set(failed_checks.values()) == {f"5B.S1.S0_GATE_INVALID: policy {policy} changed since S0 sealed it"}
    assert "s2_latent" not in {e.step_key for e in result.get_step_success_events()} | set(failures(result))
    assert _s2_files(root) == []
    assert_nothing_written(root, after_s1, records_for=S0_DATASETS + S1_DATASETS)


def test_policy_restored_after_an_edit_during_a_run_lets_the_next_run_pass(tiny_world_copy, config_copy,
                                                                           monkeypatch):
    """The gate failure a check step met while the policy was edited belongs to that moment, not to the files:
    once the policy is back, the next run of the partition passes every check."""
    root, original = tiny_world_copy.root, (config_copy / "arrival_lgcp_config_5B.yaml").read_text()
    real_s1 = pipeline.run_s1

    def s1_then_edit(st, *args):
        result = real_s1(st, *args)
        _edit_lgcp_policy(config_copy)
        return result

    _with_runner(monkeypatch, "S1", s1_then_edit)
    assert not _run_graph(root, config_copy).success
    monkeypatch.undo()
    (config_copy / "arrival_lgcp_config_5B.yaml").write_text(original)
    again = _run_graph(root, config_copy)
    failed_checks = {(e.asset_key.to_user_string(), e.check_name): e.description
                     for e in again.get_asset_check_evaluations() if not e.passed}
    assert failed_checks == {}
    assert again.success, failures(again)


# ---- refusals before anything is written --------------------------------------------------------------------------

def test_empty_scenario_manifest_makes_arrival_run_exit_2_and_writes_nothing(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    manifest = _store(root).path("scenario_manifest_5A", manifest_fingerprint=tiny_world_copy.manifest_fingerprint)
    pl.read_parquet(manifest).head(0).write_parquet(manifest)
    revalidate_5a(root)
    before = listing(root)
    result = arrival(["run", "--seed", "9", "--root", str(root)], tmp_path / "home")  # a seed without a 3B file yet
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: 5B.S0.SCENARIO_MANIFEST_INVALID: {manifest}" in result.stderr
    assert "Traceback" not in result.stderr
    assert _seed_files(root, 9) == []
    assert_nothing_written(root, before)
    assert not (tmp_path / "home").exists()


def test_run_root_that_is_a_file_is_io_read_failed_without_a_traceback(tmp_path):
    not_a_folder = tmp_path / "root.txt"
    not_a_folder.write_bytes(b"a file, not a run root\n")
    result = arrival(["run", "--seed", "42", "--root", str(not_a_folder)], tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"error: 5B.S0.IO_READ_FAILED: run root {not_a_folder} is not a directory\n"
    assert not_a_folder.read_bytes() == b"a file, not a run root\n"
    assert not (tmp_path / "home").exists()


def test_seed_with_a_trailing_newline_is_identity_invalid(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    before = listing(root)
    result = arrival(["run", "--seed", "7\n", "--root", str(root)], tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: 5B.IDENTITY_INVALID: seed '7\\n'")
    assert _seed_files(root, 7) == []
    assert_nothing_written(root, before)


def test_unknown_scenario_is_identity_invalid_and_writes_no_seed_file(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    before = listing(root)
    result = arrival(["run", "--seed", "9", "--scenario", "ghost_v1", "--root", str(root)], tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: 5B.IDENTITY_INVALID: scenario(s) ['ghost_v1']")
    assert _seed_files(root, 9) == []
    assert_nothing_written(root, before)


# ---- tracebacks only with --debug -------------------------------------------------------------------------------

def test_coded_failure_shows_a_traceback_only_with_debug(tiny_world_copy, tmp_path):
    args = ["run", "--seed", "9", "--scenario", "ghost_v1", "--root", str(tiny_world_copy.root)]
    quiet = arrival(args, tmp_path / "home")
    debug = arrival(["--debug", *args], tmp_path / "home")
    assert quiet.returncode == debug.returncode == 2
    assert "Traceback" not in quiet.stderr and not FRAME.search(quiet.stderr)
    assert "error: 5B.IDENTITY_INVALID: " in quiet.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "5B.IDENTITY_INVALID" in debug.stderr


def test_coded_step_failure_shows_a_traceback_with_debug(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    flag = next((root / "data/layer2/5A/validation").glob("fingerprint=*/_passed.flag"))
    flag.write_text('{"bundle_digest_sha256": "' + "f" * 64 + '"}')
    debug = arrival(["--debug", *RUN, "--root", str(root)], tmp_path / "home")
    assert debug.returncode == 2, debug.stdout + debug.stderr
    assert "error: baseline_v1|42: 5B.S0.UPSTREAM_NOT_PASS" in debug.stderr
    assert FRAME.search(debug.stderr), debug.stderr  # the failed step's stack, down to the raising frame
    assert 'arrival_core/gate.py", line' in debug.stderr

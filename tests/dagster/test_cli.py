"""Commands in subprocesses on a temp run root: `arrival run/partitions/verify` and the Dagster CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arrival_core import pipeline
from arrival_core.contracts import PROJECT_ROOT
from arrival_core.identity import PartitionKey
from arrival_core.store import Store

BIN = Path(sys.executable).parent
TIMEOUT = 300


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def _env(root: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "ARRIVAL_RUN_ROOT": str(root), "DAGSTER_HOME": str(home)}


def _outputs(root: Path, seed: int, scenario: str) -> list[Path]:
    """The partition's seed-scoped output files, resolved through the dictionary."""
    store = Store(run_root=root)
    tokens = pipeline.resolve_identity(store, PartitionKey(seed, scenario), state="S2").tokens()
    return [
        store.path(d, **tokens)
        for d in ("s2_realised_intensity_5B", "s3_bucket_counts_5B", "rng_audit_log_5B")
    ]


@pytest.fixture(scope="module")
def cli_world(tiny_world, tmp_path_factory):
    """A tiny world copy and a fresh DAGSTER_HOME on which `arrival run --root R --seed 1` has run once."""
    base = tmp_path_factory.mktemp("cli")
    root, home = base / "world", base / "dagster_home"
    shutil.copytree(tiny_world.root, root)
    env = _env(root, home)
    env.pop("ARRIVAL_RUN_ROOT")  # --root alone must be enough
    result = _run([str(BIN / "arrival"), "run", "--root", str(root), "--seed", "1"], env)
    return root, home, result


def test_arrival_run_exits_zero_and_writes_every_partition(cli_world):
    root, home, result = cli_world
    assert result.returncode == 0, result.stdout + result.stderr
    assert "baseline_v1|1  PASS" in result.stdout and "stress_v1|1  PASS" in result.stdout
    assert "0 failed" in result.stdout
    for scenario in ("baseline_v1", "stress_v1"):
        assert all(p.is_file() for p in _outputs(root, 1, scenario))
    assert (home / "dagster.yaml").is_file()  # the shipped instance config was copied in


def test_arrival_verify_replays_every_event_and_passes(cli_world):
    root, home, _ = cli_world
    result = _run(
        [str(BIN / "arrival"), "verify", "--root", str(root), "--seed", "1", "--scenario", "stress_v1"],
        _env(root, home),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all ERROR checks passed" in result.stdout


def test_dagster_asset_materialize_with_a_partition_exits_zero(cli_world):
    root, home, _ = cli_world
    env = _env(root, home)
    added = _run([str(BIN / "arrival"), "partitions", "add", "--seed", "7"], env)
    assert added.returncode == 0, added.stderr
    result = _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "arrival_assets.definitions",
            "--select",
            "*",
            "--partition",
            "baseline_v1|7",
        ],
        env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all(p.is_file() for p in _outputs(root, 7, "baseline_v1"))


def test_dagster_job_execute_with_partition_tags_exits_zero(cli_world):
    root, home, _ = cli_world
    tags = {
        "dagster/partition": "stress_v1|1",
        "dagster/partition/scenario": "stress_v1",
        "dagster/partition/seed": "1",
    }
    result = _run(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "arrival_assets.definitions",
            "-j",
            "arrival_5b",
            "--tags",
            json.dumps(tags),
        ],
        _env(root, home),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stdout + result.stderr


def test_failing_run_exits_nonzero_and_prints_the_code(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    flag = next((root / "data/layer2/5A/validation").glob("fingerprint=*/_passed.flag"))
    flag.write_text(json.dumps({"bundle_digest_sha256": "f" * 64}))
    result = _run(
        [str(BIN / "arrival"), "run", "--root", str(root), "--seed", "1", "--scenario", "baseline_v1"],
        _env(root, tmp_path / "home"),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: baseline_v1|1: 5B.S0.UPSTREAM_NOT_PASS" in result.stderr
    assert "FAIL" in result.stdout
    assert not (root / "data/layer2/5B").exists()


def test_unknown_scenario_is_refused_before_anything_runs(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    result = _run(
        [str(BIN / "arrival"), "run", "--root", str(root), "--seed", "1", "--scenario", "nope_v9"],
        _env(root, tmp_path / "home"),
    )
    assert result.returncode == 2
    assert "5B.IDENTITY_INVALID" in result.stderr
    assert not (tmp_path / "home").exists()


def test_an_unknown_scenario_for_several_seeds_at_once_is_refused_once_and_nothing_runs(tiny_world_copy, tmp_path):
    """The partitions' processes start while the parent reads the world; told to stop, they end without a word."""
    root = tiny_world_copy.root
    result = _run([str(BIN / "arrival"), "run", "--root", str(root), "--seed", "1", "--seed", "2", "--scenario",
                   "nope_v9", "--parallel", "2"], _env(root, tmp_path / "home"))
    assert result.returncode == 2
    assert result.stderr.count("5B.IDENTITY_INVALID") == 1 and "nope_v9" in result.stderr
    assert "==" not in result.stdout
    assert not (tmp_path / "home").exists()


def test_verify_of_an_unknown_scenario_fails_fast_in_one_line(cli_world):
    root, home, _ = cli_world
    result = _run([str(BIN / "arrival"), "verify", "--root", str(root), "--seed", "1", "--scenario", "nope"],
                  _env(root, home))
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5B.IDENTITY_INVALID: scenario 'nope'")


def test_verify_of_a_partition_never_run_names_what_is_missing_and_the_command(cli_world):
    root, home, _ = cli_world
    result = _run([str(BIN / "arrival"), "verify", "--root", str(root), "--seed", "77", "--scenario",
                   "stress_v1"], _env(root, home))
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) <= 3 and lines[0].startswith("error: 5B.PARTITION_NOT_MATERIALISED: partition stress_v1|77")
    assert "s2_realised_intensity_5B" in lines[0] and "arrival run --seed 77 --scenario stress_v1" in lines[0]
    assert str(root) not in result.stderr


def test_run_prints_each_step_as_it_starts_and_ends_and_progress_before_s2_ends(tiny_world_copy, tmp_path):
    """Lines read as they arrive: a streaming progress line precedes the end of S2, and the first step line is
    read before S3 has published anything (a command that printed only at its end would fail that)."""
    root = tiny_world_copy.root
    counts = root / "data" / "layer2" / "5B" / "s3_bucket_counts_5B"
    args = [str(BIN / "arrival"), "run", "--root", str(root), "--seed", "1", "--scenario", "baseline_v1"]
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=_env(root, tmp_path / "home"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    stamped = [(counts.exists(), line.rstrip()) for line in proc.stdout]  # S3's output there yet, when read
    assert proc.wait(timeout=TIMEOUT) == 0
    text = [line for _, line in stamped]
    s2_done = next(i for i, line in enumerate(text) if line.endswith("s2_latent") is False
                   and "s2_latent" in line and line.rstrip().endswith("done"))
    progress = [i for i, line in enumerate(text) if "S2: " in line and line.rstrip().endswith("rows")]
    assert progress and progress[0] < s2_done
    assert any("s2_latent" in line and line.endswith("started") for line in text[:s2_done])
    times = [line for line in text[:s2_done] if "s2_latent" in line and " time state " in line]
    assert len(times) == 1 and " pictures " in times[0] and " checks " in times[0] and "CPU s" in times[0]
    first_step = next(i for i, line in enumerate(text) if "s0_gate" in line and line.endswith("started"))
    assert not stamped[first_step][0] and counts.exists()
    assert any(line.startswith("== baseline_v1|1  PASS") for line in text)


def test_run_quiet_prints_only_the_summary(tiny_world_copy, tmp_path):
    root = tiny_world_copy.root
    result = _run([str(BIN / "arrival"), "run", "--quiet", "--root", str(root), "--seed", "1", "--scenario",
                   "baseline_v1"], _env(root, tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("== baseline_v1|1  PASS")
    assert "started" not in result.stdout and " rows\n" not in result.stdout.split("\n")[0]


def test_arrival_run_several_seeds_at_once_writes_what_one_at_a_time_writes(tiny_world, tmp_path):
    """`--seed 1 --seed 42 --parallel 2`: four partitions, two runs at once, each recorded in the instance, and
    the same bytes as partitions run one at a time (seed 1 on a copy, alone)."""
    roots = {}
    for name, seeds, parallel, named in (("together", ["1", "42"], "2", []), ("alone", ["1"], "1", []),
                                         ("named", ["42", "1"], "2", ["--scenario", "stress_v1"])):
        root, home = tmp_path / name / "world", tmp_path / name / "home"
        shutil.copytree(tiny_world.root, root)
        args = [str(BIN / "arrival"), "run", "--root", str(root), "--quiet", "--parallel", parallel, *named]
        result = _run([*args, *(a for s in seeds for a in ("--seed", s))], _env(root, home))
        assert result.returncode == 0, result.stdout + result.stderr
        roots[name] = root, home, result.stdout
    root, home, stdout = roots["together"]
    assert sorted(line.split()[1] for line in stdout.splitlines() if line.startswith("== ")) == [
        "baseline_v1|1", "baseline_v1|42", "stress_v1|1", "stress_v1|42"]
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("rng_audit_log_5B")) == {
            "baseline_v1|1", "baseline_v1|42", "stress_v1|1", "stress_v1|42"}
    for scenario in ("baseline_v1", "stress_v1"):
        together = [p.read_bytes() for p in _outputs(root, 1, scenario)]
        assert together == [p.read_bytes() for p in _outputs(roots["alone"][0], 1, scenario)]
    # one scenario named: the partitions' processes started while the world was read write the same bytes
    named_root, _, named_out = roots["named"]
    assert sorted(line.split()[1] for line in named_out.splitlines() if line.startswith("== ")) == [
        "stress_v1|1", "stress_v1|42"]
    for seed in (1, 42):
        assert [p.read_bytes() for p in _outputs(named_root, seed, "stress_v1")] == [
            p.read_bytes() for p in _outputs(root, seed, "stress_v1")]

"""What the `arrival` CLI says when it refuses: one coded line for a bad command line, a typed root without a
world, and a comparison of partitions that were never run (no Polars text, no traceback)."""
from __future__ import annotations

import pytest

from arrival_assets import cli

USAGE = "error: 5B.USAGE_INVALID: "


def _refusal(capsys, argv: list[str]) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


def test_a_misspelt_flag_is_named_before_a_missing_one(capsys):
    line = _refusal(capsys, ["run", "--sed", "42"])
    assert line == f"{USAGE}arrival run: unknown flag --sed (did you mean --seed?); see `arrival run --help`"


@pytest.mark.parametrize("argv, flag", [
    (["--debg", "status"], "--debg"),
    (["world", "create", "--profile", "tiny", "--rot", "x"], "--rot"),
    (["compare", "--seed", "1", "--scenario=a", "--scenario", "b", "--roots=x"], "--roots"),
    (["verify", "--seed", "1", "--scenario", "a", "--quiet"], "--quiet"),  # a flag of another command
    (["cluster", "up", "--worker", "2", "--nope"], "--nope"),
])
def test_every_unknown_flag_is_named(capsys, argv, flag):
    line = _refusal(capsys, argv)
    assert line.startswith(USAGE) and f"unknown flag {flag}" in line


def test_an_unknown_command_and_a_missing_flag_are_one_coded_line(capsys):
    assert _refusal(capsys, ["runn"]).startswith(f"{USAGE}arrival: argument command: invalid choice: 'runn'")
    assert "required: --seed" in _refusal(capsys, ["run"])


def test_values_and_abbreviations_are_not_flags(tmp_path, capsys):
    # `-1` is a value (a seed that fails its rule later, with its own code); `--scen` abbreviates --scenario
    assert cli.main(["verify", "--seed", "-1", "--scen", "baseline_v1", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: 5B.IDENTITY_INVALID: ")


@pytest.mark.parametrize("command", [["run", "--seed", "42"], ["partitions", "add", "--seed", "42"]])
def test_a_typed_root_without_a_world_is_refused_unless_create(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    typo = tmp_path / "wrold"
    assert cli.main([*command, "--root", str(typo)]) == 2
    line = capsys.readouterr().err
    assert line.startswith(f"error: 5B.S0.RUN_RECEIPT_MISSING: run root {typo} holds no world") and "--create" in line
    assert line.count("\n") == 1
    assert not typo.exists() and not (tmp_path / "home").exists()  # nothing created: no world, no instance


def test_partitions_add_with_create_makes_the_demo_world(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    root = tmp_path / "fresh"
    monkeypatch.setattr("arrival_assets.run_roots.DEFAULT_PROFILE", "tiny")  # the demo world, smaller
    assert cli.main(["partitions", "add", "--seed", "42", "--root", str(root), "--create"]) == 0
    assert (root / "run_receipt.json").is_file()
    assert "scenarios: baseline_v1, stress_v1" in capsys.readouterr().out


def test_compare_without_a_world_says_run_receipt_missing(tmp_path, capsys):
    assert cli.main(["compare", "--seed", "1", "--scenario", "baseline_v1", "--scenario", "stress_v1",
                     "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == ("error: 5B.S0.RUN_RECEIPT_MISSING: run_receipt.json does not exist: "
                                       "the run root holds no world\n")


def test_compare_of_a_seed_never_run_names_the_command_that_makes_it(tiny_world, capsys):
    assert cli.main(["compare", "--seed", "42", "--scenario", "baseline_v1", "--scenario", "stress_v1",
                     "--root", str(tiny_world.root)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: 5B.PARTITION_NOT_MATERIALISED: partition baseline_v1|42 has no s3_bucket_counts_5B "
                   "under this parameter_hash; make it first with `arrival run --seed 42 --scenario baseline_v1`\n")
    assert "POLARS" not in err and str(tiny_world.root) not in err


def test_compare_of_an_unknown_scenario_is_identity_invalid(tiny_world, capsys):
    assert cli.main(["compare", "--seed", "42", "--scenario", "ghost_v1", "--scenario", "stress_v1",
                     "--root", str(tiny_world.root)]) == 2
    assert capsys.readouterr().err.startswith("error: 5B.IDENTITY_INVALID: scenario 'ghost_v1' is not in the world")


def test_the_exit_status_of_several_runs_is_the_worst_one():
    from arrival_assets.interrupts import worst_status

    assert worst_status([0, 0]) == 0
    assert worst_status([0, 1, 0]) == 1
    assert worst_status([1, 2, 0]) == 2
    assert worst_status([2, 130, 1]) == 130
    assert worst_status([143, 2]) == 143
    assert worst_status([]) == 0

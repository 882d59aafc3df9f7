"""`arrival world create` prints the run root, fingerprint and row counts; errors print a code and exit 2."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from worldlib import path

from arrival_assets.cli import main
from arrival_core.world import load_profile, world_identity


def test_world_create_prints_root_fingerprint_and_row_counts(tiny_world, tmp_path, capsys):
    root = tmp_path / "w"
    assert main(["world", "create", "--profile", "tiny", "--root", str(root), "--seeds", "1,42"]) == 0
    out, err = capsys.readouterr()
    assert str(root.resolve()) in out
    assert tiny_world.manifest_fingerprint in out
    assert "merchant_zone_scenario_local_5A[scenario_id=stress_v1]" in out and "16,800 rows" in out
    assert "virtual_classification_3B[seed=1]" in out
    assert "lambda surface baseline_v1" in err  # progress goes to stderr, the summary to stdout
    assert (root / "run_receipt.json").read_bytes() == path(tiny_world, "run_receipt").read_bytes()


def test_default_root_is_dot_arrival_slash_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["world", "create", "--profile", "tiny"]) == 0
    assert (tmp_path / ".arrival" / "tiny" / "run_receipt.json").exists()
    assert "seeds                42" in capsys.readouterr().out


def test_world_seed_option_sets_the_fingerprint(tmp_path, capsys):
    assert main(["world", "create", "--profile", "tiny", "--root", str(tmp_path), "--world-seed", "7"]) == 0
    assert world_identity(load_profile("tiny"), 7).manifest_fingerprint in capsys.readouterr().out


def test_a_bad_seed_prints_its_code_and_exits_2_without_writing(tmp_path, capsys):
    root = tmp_path / "w"
    assert main(["world", "create", "--profile", "tiny", "--root", str(root), "--seeds", "42,-1"]) == 2
    assert capsys.readouterr().err.startswith("error: 5B.IDENTITY_INVALID: seed '-1'")
    assert not root.exists()


def test_a_conflicting_world_prints_the_write_conflict_and_exits_2(tiny_world_copy, capsys):
    receipt = path(tiny_world_copy, "run_receipt")
    receipt.write_text("{}")
    assert main(["world", "create", "--profile", "tiny", "--root", str(tiny_world_copy.root)]) == 2
    err = capsys.readouterr().err
    assert f"error: 5B.WORLD.IO_WRITE_CONFLICT: {receipt}" in err
    assert receipt.read_text() == "{}"


def test_the_console_script_is_registered():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "arrival"]
    assert script.value == "arrival_assets.cli:run_console"


def test_the_console_script_keeps_the_status_the_output_and_the_exit_handlers(tmp_path):
    marker = tmp_path / "handler-ran"
    code = (
        "import atexit, sys, pathlib, arrival_assets.cli as c\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "print('buffered before the command')\n"
        "sys.argv = ['arrival', 'run', '--seed', 'not-a-seed']\n"
        "c.run_console()\n"
        "print('never reached')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == "buffered before the command\n"
    assert result.stderr.startswith("error: 5B.IDENTITY_INVALID")
    assert marker.read_text() == "yes"


def test_the_cli_module_does_not_import_dagster():
    code = "import sys, arrival_assets.cli as c; c.build_parser(); print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""Every `arrival …` command the README and docs/ show in a shell block is one the CLI accepts, the cheap ones
run on a tiny world and do what the README says, and the CLI table of docs/usage.md lists every command with
exactly its flags."""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from arrival_assets import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INVOCATION = re.compile(r"(?<![\w./-])arrival\s[^;&|#\n]*")  # `arrival …` up to a shell separator or comment
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # DIR, N, SID: a value the reader fills in
USAGE_TABLE = ROOT / "docs" / "usage.md"
# What runs on the tiny world (in document order); the rest (world create, bench, cluster, worker, instance) is
# only parsed: they make large worlds, take minutes or start servers.
EXECUTED = {("run",), ("verify",), ("compare",), ("status",), ("partitions", "add")}


def fenced_commands() -> list[tuple[str, str]]:
    """(page, command line) of every `arrival …` invocation in a shell block of README.md and docs/*.md."""
    found = []
    for page in PAGES:
        for block in SHELL_BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                code = re.sub(r"(^|\s)#.*$", "", line.removeprefix("$ "))  # a shell comment is prose
                for command in INVOCATION.findall(code):
                    found.append((str(page.relative_to(ROOT)), command.strip()))
    return found


def _tokens(command: str) -> list[str]:
    """The command's arguments after `arrival`: optional `[…]` parts kept, a shell variable as a value."""
    text = command.replace("[", " ").replace("]", " ")
    return [re.sub(r"^\$\w+$", "1", t) for t in shlex.split(text)[1:]]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The namespace the CLI's own parser makes of `argv`, or a failure quoting its one-line refusal."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"arrival {shlex.join(argv)}: {err.getvalue().strip()}")


def _command_path(namespace: argparse.Namespace) -> tuple[str, ...]:
    sub = next((getattr(namespace, k) for k in vars(namespace) if k.endswith("_command") and k != "command"), None)
    return (namespace.command,) if sub is None else (namespace.command, sub)


def leaf_commands() -> dict[tuple[str, ...], set[str]]:
    """Every runnable command (`run`, `world create`, `cluster up`, …) with its long flags, from the parser."""

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> dict[tuple[str, ...], set[str]]:
        if parser._subparsers is None:
            return {path: {o for o in parser._option_string_actions if o.startswith("--") and o != "--help"}}
        found: dict[tuple[str, ...], set[str]] = {}
        for name, child in parser._subparsers._group_actions[0].choices.items():
            found |= walk(child, (*path, name))
        return found

    return walk(cli.build_parser(), ())


def test_the_docs_show_arrival_commands_and_the_readme_its_main_one():
    commands = fenced_commands()
    assert ("README.md", "arrival run --seed 42") in commands
    assert ("docs/usage.md", "arrival status") in commands


@pytest.mark.parametrize(("page", "command"), fenced_commands())
def test_every_fenced_command_is_accepted_by_the_cli(page, command):
    argv = _tokens(command)
    namespace = _parse(argv)
    assert _command_path(namespace) in leaf_commands(), (page, command)


def test_an_unknown_flag_or_command_in_a_page_would_fail_the_check():
    """The check above can fail: a misspelt flag and a command that does not exist are refused by name."""
    for wrong in ("arrival run --sed 42", "arrival runn --seed 42", "arrival cluster upp"):
        with pytest.raises(pytest.fail.Exception, match="5B.USAGE_INVALID"):
            _parse(_tokens(wrong))


def _usage_rows() -> dict[tuple[str, ...], str]:
    """Command → the first cell of its row in the CLI table of docs/usage.md."""
    rows = {}
    for line in USAGE_TABLE.read_text(encoding="utf-8").splitlines():
        cell = re.match(r"^\| `arrival ([^`]*)` \|", line)
        if cell:
            words = [w for w in cell.group(1).split() if re.fullmatch(r"[a-z][a-z0-9]*", w)]
            path = tuple(words[:2]) if tuple(words[:2]) in leaf_commands() else tuple(words[:1])
            rows[path] = cell.group(1)
    return rows


def test_the_cli_table_lists_every_command_with_exactly_its_flags():
    rows = _usage_rows()
    commands = leaf_commands()
    assert sorted(rows) == sorted(commands), "docs/usage.md's CLI table and the parser list different commands"
    for path, flags in commands.items():
        shown = set(re.findall(r"--[a-z][a-z0-9-]*", rows[path]))
        assert shown == flags, f"arrival {' '.join(path)}: table shows {sorted(shown)}, the parser has {sorted(flags)}"


@pytest.fixture(scope="module")
def docs_world(tiny_world, tmp_path_factory):
    """A tiny world copy and a fresh Dagster instance, as the README's reader has them after installing; shared
    by the tests below (a command they run twice is verified the second time, not recomputed)."""
    base = tmp_path_factory.mktemp("docs_world")
    root = base / "world"
    shutil.copytree(tiny_world.root, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(base / "dagster_home"))
        patch.delenv("ARRIVAL_RUN_ROOT", raising=False)
        yield root


def _run(argv: list[str], root: Path, capsys) -> tuple[int, str]:
    """Run a documented command in process on the tiny world (its `--root` pointed there); status and output."""
    namespace = _parse(argv)
    if hasattr(namespace, "root"):
        argv = [t for i, t in enumerate(argv) if t != "--root" and (i == 0 or argv[i - 1] != "--root")]
        argv += ["--root", str(root)]
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_the_readme_run_works_on_a_tiny_world_and_a_rerun_launches_nothing(docs_world, capsys):
    readme = [c for page, c in fenced_commands() if page == "README.md"]
    assert readme == ["arrival run --seed 42"]
    status, out = _run(_tokens(readme[0]), docs_world, capsys)
    assert status == 0, out
    for partition in ("baseline_v1|42", "stress_v1|42"):  # "partitions baseline_v1|42 and stress_v1|42 … exits 0"
        assert f"== {partition}  PASS  (" in out
    assert out.count("checks: 42 passed, 0 failed, 0 warned") == 2
    status, out = _run(_tokens(readme[0]), docs_world, capsys)  # "Run it again and it launches nothing"
    assert status == 0, out
    assert out.count("PASS  verified, already materialised") == 2 and "checks:" not in out


def test_the_cheap_fenced_commands_of_the_docs_run_on_a_tiny_world(docs_world, capsys):
    executed = []
    for page, command in fenced_commands():
        argv = _tokens(command)
        if _command_path(_parse(argv)) not in EXECUTED or any(PLACEHOLDER.match(t) for t in argv):
            continue
        if argv[0] in ("verify", "compare"):  # they read outputs: make the partitions they name first
            seed = argv[argv.index("--seed") + 1]
            assert _run(["run", "--quiet", "--seed", seed], docs_world, capsys)[0] == 0
        status, out = _run(argv, docs_world, capsys)
        assert status == 0, f"{page}: {command}\n{out}"
        executed.append(command)
    assert "arrival status" in executed and "arrival partitions add --seed 7" in executed
    assert any(c.startswith("arrival compare") for c in executed)

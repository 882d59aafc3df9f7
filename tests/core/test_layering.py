"""The core stays free of Dagster: no module under arrival_core imports it, directly or through another module."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import arrival_core

CORE = Path(arrival_core.__file__).resolve().parent


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_core_module_names_dagster_in_an_import():
    offenders = [str(p.relative_to(CORE)) for p in sorted(CORE.rglob("*.py"))
                 if {"dagster", "dagster_celery", "dagster_postgres"} & _imported_roots(p)]
    assert offenders == []


def test_importing_every_core_module_loads_no_dagster():
    modules = sorted(m.name for m in pkgutil.walk_packages([str(CORE)], prefix="arrival_core."))
    assert len(modules) > 30
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(n for n in sys.modules if n == 'dagster' or n.startswith('dagster.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"

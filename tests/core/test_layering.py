"""Layers import only downward: the core stays free of Dagster, the modules of both packages form no import cycle,
and each layer imports only the layers below it (the graph is read from the source with `ast`, nothing imported)."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import arrival_core

CORE = Path(arrival_core.__file__).resolve().parent
ROOT = CORE.parent
PACKAGES = ("arrival_core", "arrival_assets")

# Lowest first; a module belongs to the first layer one of whose prefixes names it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("arrival_core.errors", "arrival_core.encoding", "arrival_core.identity", "arrival_core.contracts",
              "arrival_core.jit", "arrival_core.warmup", "arrival_core.parallel", "arrival_core.memory")),
    ("rng", ("arrival_core.rng",)),
    ("core", ("arrival_core.world", "arrival_core.bundle_tables")),
    ("pipeline", ("arrival_core.pipeline",)),
    ("checks", ("arrival_core.checks",)),
    ("entry", ("arrival_core.bench", "arrival_core.compare")),
    ("assets", ("arrival_assets",)),
)
CORE_LAYER = 2  # every other arrival_core module: the models and the store, between rng and pipeline


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of both packages: dotted name → (file, is a package)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _known(name: str, modules: dict) -> str | None:
    """The longest prefix of a dotted name that is one of `modules`."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module → the modules of both packages it names in an import (anywhere in the file, lazy imports too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {_known(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    edges.add(submodule if submodule in modules else _known(base, modules))
        graph[name] = edges - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_of(module: str) -> int:
    """The index in `LAYERS` of a module's layer (the packages themselves at the bottom: they import nothing but
    `memory`, which bounds malloc's heaps before anything else loads)."""
    if module in PACKAGES:
        return 0
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    assert module.startswith("arrival_core."), module
    return CORE_LAYER


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


def test_the_graph_reader_finds_relative_lazy_and_package_imports():
    graph = import_graph()
    assert "arrival_core.rng.philox" in graph["arrival_core.counts"]  # from .rng.philox import philox_block
    assert "arrival_core.rng.variates" in graph["arrival_core.counts"]  # from .rng import variates
    assert "arrival_core.definitions" not in graph  # only modules of the two packages
    assert "arrival_assets.definitions" in graph["arrival_assets.cluster.executor"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_modules_of_both_packages():
    assert cycles(import_graph()) == []


def test_each_layer_imports_only_the_layers_below_it():
    graph = import_graph()
    upward = sorted(f"{src} ({LAYERS[layer_of(src)][0]}) → {dst} ({LAYERS[layer_of(dst)][0]})"
                    for src, targets in graph.items() for dst in targets if layer_of(dst) > layer_of(src))
    assert upward == []


def test_the_rng_layer_imports_only_the_base_below_it():
    graph = import_graph()
    outside = sorted(f"{src} → {dst}" for src, targets in graph.items() if layer_of(src) == 1
                     for dst in targets if layer_of(dst) not in (0, 1))
    assert outside == []
    assert any(layer_of(m) == 1 for m in graph) and any(layer_of(m) == 6 for m in graph)

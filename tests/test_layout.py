"""The layout rules, checked by walking every module's imports with ``ast`` (lazy imports included).

* ``fingerprint/`` and ``graph/`` import nothing of ours; the ground-floor packages (``zoo/``, ``hubsim/``)
  import nothing of ours either; ``crawler/`` imports only those two, ``alerts/`` only ``graph``, ``web/``
  only ``graph`` and ``alerts``;
* nothing outside ``bench/`` and ``tests/`` imports ``bench``;
* no import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OURS = ("fingerprint", "graph", "crawler", "alerts", "lineage", "zoo", "hubsim", "web", "bench")
PURE = ("fingerprint", "graph", "zoo", "hubsim")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in OURS for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports, anywhere in its body (``from x import y`` counts ``x.y``
    when that is a module, else ``x``)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] in OURS}
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_the_walker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # the walker itself must not be blind: a function-level import and a package import both count
    mods = _modules()
    deps = _imports("lineage.cli.models", mods["lineage.cli.models"], set(mods))
    assert "lineage.app" in deps  # imported inside the compare command's body
    assert "fingerprint.similarity" in deps


@pytest.mark.parametrize("pkg", PURE)
def test_pure_packages_import_nothing_of_ours(graph: dict[str, set[str]], pkg: str) -> None:
    bad = {f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] == pkg for d in deps
           if d.split(".")[0] != pkg}
    assert not bad, sorted(bad)


def test_nothing_outside_bench_imports_bench(graph: dict[str, set[str]]) -> None:
    bad = {f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] != "bench" for d in deps
           if d.split(".")[0] == "bench"}
    assert not bad, sorted(bad)


def test_only_the_benchmarks_tests_import_bench() -> None:
    # bench/ holds benchmarks only: a helper that tests need (the Bolt server, placement quality) lives
    # with the tests or in a product package, and only tests/bench/ (which tests the benchmarks) imports bench
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.parent.name == "bench":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "bench"]
    assert not bad, bad


@pytest.mark.parametrize(("pkg", "allowed"), [("crawler", ("fingerprint", "graph")), ("alerts", ("graph",)),
                                                  ("web", ("graph", "alerts"))])
def test_middle_floors_import_only_the_floors_below_them(graph: dict[str, set[str]], pkg: str,
                                                         allowed: tuple[str, ...]) -> None:
    bad = {f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] == pkg for d in deps
           if d.split(".")[0] not in (pkg, *allowed)}
    assert not bad, sorted(bad)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # A package's __init__ importing its own submodules is how a package exposes them, not a cycle
    # between modules; every other edge counts.
    edges = {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_closed_sets_are_the_same_in_every_package() -> None:
    from typing import get_args

    import crawler.records
    import fingerprint.similarity.verdict
    import graph.records

    assert get_args(fingerprint.similarity.verdict.Verdict) == get_args(graph.records.Verdict)
    assert crawler.records.Relation is graph.records.Relation


def test_the_cli_starts_without_torch() -> None:
    # every command pays the CLI's import time: `lineage --help` must not load torch, scipy or the models
    import subprocess
    import sys

    code = "import sys, lineage.cli; print(sorted(m for m in ('torch', 'scipy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_test_basenames_are_unique() -> None:
    # test folders have no __init__.py, so pytest imports test modules by basename: two test_app.py
    # in different folders fail collection on a clean checkout (and only there: a warm cache hides it)
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)

"""The floors of the house: which package may import which, no cycles at any level, small units, and only the card's
folders importable under ``arena``. Read from the source (every import, at module level or inside a function)."""

from __future__ import annotations

import ast
import importlib.util
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Repo folder -> the package it is installed as (pyproject.toml's package-dir).
FOLDERS = {"arena": "arena", "runner": "arena.runner", "db": "arena.db", "champions": "arena.champions",
           "variants": "arena.variants"}
# Each package and the packages below it that it may import. The floors: 0 core/api; 1 model, db;
# 2 runner, champions; 3 orchestration; 4 cli. Variants see the variant API alone.
ALLOWED: dict[str, set[str]] = {
    "arena.core": set(),
    "arena.api": {"arena.core"},
    "arena.model": {"arena.core"},
    "arena.db": {"arena.core"},
    "arena.runner": {"arena.core", "arena.model"},
    "arena.champions": {"arena.core", "arena.db"},
    "arena.orchestration": {"arena.core", "arena.model", "arena.db", "arena.runner", "arena.champions"},
    "arena.cli": {"arena.core", "arena.api", "arena.model", "arena.db", "arena.runner", "arena.champions",
                  "arena.orchestration"},
    "arena.variants": {"arena.api"},
    "arena": set(),  # arena/__init__.py: the version, nothing else
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "Longer than usual because"


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = modules()


def package_of(module: str) -> str:
    for pkg in sorted(ALLOWED, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    raise AssertionError(f"{module} belongs to no floor")


def imports_of(path: Path, module: str) -> set[str]:
    """Every arena module that ``path`` imports (a ``from X import name`` that names a submodule counts as it)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("arena")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            if not base.startswith("arena"):
                continue
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            out |= subs or {base}
    return {m for m in out if m in MODULES}


GRAPH = {m: imports_of(p, m) for m, p in MODULES.items()}


def test_every_import_runs_down_the_floors() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        pkg = package_of(module)
        for target in targets:
            other = package_of(target)
            if other != pkg and other not in ALLOWED[pkg]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_cycle_between_modules() -> None:
    # Function-level imports count: a lazy import may save start-up time, never hide a cycle.
    assert _cycles(GRAPH) == []


def test_no_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in GRAPH.items():
        for t in targets:
            if package_of(t) != package_of(module):
                packages[package_of(module)].add(package_of(t))
    assert _cycles(packages) == []


def test_the_check_itself_sees_a_cycle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert "arena.orchestration" not in ALLOWED["arena.runner"]
    assert "arena.runner.worker" in GRAPH["arena.orchestration.execute"]  # the graph reads real imports


def test_variant_files_import_only_the_variant_api() -> None:
    for module, path in MODULES.items():
        if module.startswith("arena.variants."):
            assert GRAPH[module] <= {"arena.api"}, f"{path} imports {GRAPH[module]}"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring does not count
    return 0 if not body else (node.end_lineno or node.lineno) - body[0].lineno + 1


def test_units_are_small_or_say_why() -> None:
    too_big = []
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        if len(source.splitlines()) > MAX_MODULE_LINES and REASON not in (ast.get_docstring(tree) or ""):
            too_big.append(f"{module}: {len(source.splitlines())} lines")
        for node in ast.walk(tree):
            if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > MAX_FUNCTION_LINES
                    and REASON not in (ast.get_docstring(node) or "")):
                too_big.append(f"{module}.{node.name}: {_body_lines(node)} lines")
    assert not too_big, f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function:\n" + "\n".join(
        too_big)


@pytest.mark.parametrize("name", ["arena.tests", "arena.bench", "arena.docs", "arena.tests.conftest"])
def test_only_the_cards_folders_import_under_arena(name: str) -> None:
    assert importlib.util.find_spec("arena") is not None
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    assert spec is None, f"{name} should not be importable"


@pytest.mark.parametrize("name", ["arena.core.spec", "arena.runner.train", "arena.db.store", "arena.champions.policy",
                                  "arena.orchestration.contest", "arena.cli.app", "arena.variants"])
def test_the_cards_folders_do(name: str) -> None:
    assert importlib.util.find_spec(name) is not None

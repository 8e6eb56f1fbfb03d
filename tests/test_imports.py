"""The packages' import graph: dependencies point one way (flows → tasks → blocks →
core; appgen's CLI on top; generator/ on the standard library alone), no module
imports one that imports it back, and each module imports on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appgen", "flows", "tasks", "blocks", "deployments", "core", "generator", "gateway")
# What each package may import from the others at module level (lazily, inside a
# function, a command may reach further down but never up).
MAY_IMPORT = {
    "appgen": {"appgen", "flows", "tasks", "blocks", "deployments", "core"},
    "deployments": {"deployments", "flows", "tasks", "blocks", "core"},
    "flows": {"flows", "tasks", "blocks", "core"},
    "tasks": {"tasks", "blocks", "core"},
    "blocks": {"blocks", "core"},
    "core": {"core"},
    "generator": {"generator"},
    "gateway": {"gateway", "core"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # alembic's scripts, loaded by alembic
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, *, lazy: bool) -> set[str]:
    """The modules (and names) ``path`` imports when it is imported, and with
    ``lazy`` also those its functions import when they run (never those imported
    under ``if TYPE_CHECKING``, for annotations only)."""
    imported: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif lazy or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    return imported


def import_graph(*, lazy: bool) -> dict[str, set[str]]:
    """The project's modules each module imports."""
    found = modules()
    return {
        name: (imports_of(path, lazy=lazy) & set(found)) - {name} for name, path in found.items()
    }


def test_packages_import_only_the_layers_below_them():
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph(lazy=True).items()
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]
    ]
    assert wrong == []


def test_core_is_plain_code_that_never_imports_prefect():
    """Rendering, scanning, the store and the models are usable without Prefect."""
    wrong = [
        f"{name} imports {target}"
        for name, path in modules().items()
        if name.split(".")[0] == "core"
        for target in imports_of(path, lazy=True)
        if target.split(".")[0] == "prefect"
    ]
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back():
    """Not even inside a function: a module's lazy import is still a dependency."""
    graph = import_graph(lazy=True)
    cycles = []

    def walk(name: str, path: list[str]) -> None:
        for target in sorted(graph.get(name, ())):
            if target == path[0]:
                cycles.append(" → ".join([*path, target]))
            elif target not in path and target > path[0]:  # each cycle once
                walk(target, [*path, target])

    for start in sorted(graph):
        walk(start, [start])
    assert cycles == []


def test_the_cli_imports_nothing_that_imports_it_back():
    graph = import_graph(lazy=False)
    reached: set[str] = set()
    todo = ["appgen.cli"]
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert "appgen.cli" not in reached
    assert not {name for name in reached if name.startswith("appgen.")} - {
        "appgen.prefect_api",
        "appgen.server",
    }


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """``python -c "import X"`` in a fresh interpreter, module by module: an import
    that only works after another module was imported first fails here."""
    names = sorted(name for name in modules() if not name.endswith("__main__"))

    def import_alone(name: str) -> str | None:
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
        )
        return f"{name}: {result.stderr.strip().splitlines()[-1]}" if result.returncode else None

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        failed = [failure for failure in pool.map(import_alone, names) if failure]
    assert failed == []

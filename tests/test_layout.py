"""The package layout: no import cycle, no private name crossing a folder, kernels free of Dask."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import bigquant

PACKAGE = pathlib.Path(bigquant.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _folder(module: str) -> str:
    """The package a module lives in (a package's ``__init__`` is its own folder)."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str]]:
    """(module imported, name imported or "") of every bigquant import, at any depth."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bigquant"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.append((full, "") if full in MODULES else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("bigquant")]
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for imported, _ in _imports(module):
            target = _target(imported)
            # a package's __init__ re-exporting its own children is not an arrow back
            if target and target != module and not target.startswith(module + "."):
                graph[module].add(target)
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_no_private_name_crosses_a_folder():
    crossing = []
    for module in MODULES:
        for imported, name in _imports(module):
            target = _target(imported)
            if target is None or _folder(target) == _folder(module):
                continue
            private_module = target.count(".") > 1 and target.rpartition(".")[2].startswith("_")
            private_name = name.startswith("_") and not name.startswith("__")
            if private_module or private_name:
                crossing.append(f"{module} imports {name or target}")
    assert not crossing


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("bigquant.kernels")))
def test_kernels_use_nothing_but_numpy_numba_and_each_other(module):
    allowed = ("numpy", "numba", "bigquant.kernels", "__future__", "collections", "typing")
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            assert name.startswith(allowed), f"{module} imports {name}"


def test_layering_points_down():
    """kernels <- io <- cluster <- pipeline: no folder imports one above it."""
    rank = {"bigquant.kernels": 0, "bigquant.io": 1, "bigquant.cluster": 2, "bigquant.pipeline": 3}
    upward = []
    for module, targets in _graph().items():
        here = rank.get(_folder(module))
        for target in targets:
            there = rank.get(_folder(target))
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert not upward


def test_tests_do_not_skip_what_bigquant_needs():
    """``importorskip`` only for optional extras: a broken bigquant module or dependency must fail, not skip."""
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, flags=re.M | re.S).group(1)
    required = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("-", "_")
                for d in re.findall(r'"([^"]+)"', block)}
    assert {"numpy", "distributed", "tifffile"} <= required
    skipped = []
    for path in (PACKAGE.parent / "tests").rglob("*.py"):
        for name in re.findall(r"importorskip\(\s*[\"']([\w.]+)", path.read_text()):
            top = name.split(".")[0].lower()
            if top == "bigquant" or top in required:
                skipped.append(f"{path.name}: importorskip({name!r})")
    assert not skipped

"""The layout keeps its promises: each package of emodist/ imports only the layers under it, no two modules
import each other in a circle, and no module outgrows 350 lines. (Read from the source, not imported.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emodist"

# Bottom to top. A package may import its own modules and those of every layer below it, never above.
LAYERS = [["runtime"], ["config"], ["data", "scoring"], ["models", "rundir"], ["report"], ["serve"], ["train"], ["sweep"]]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The emodist modules `path` imports (`from emodist.x import y` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("emodist.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emodist":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in KNOWN else node.module)
    return found - {"emodist"}


KNOWN = {dotted(p) for p in MODULES}


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_every_package_has_a_layer_and_says_what_it_owns():
    packages = {p.parent.name for p in MODULES if p.parent != PACKAGE}
    assert packages == set(RANK)
    for package in packages:
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, package
    assert [p.name for p in MODULES if p.parent == PACKAGE] == ["__init__.py"]  # every module sits in a layer


@pytest.mark.parametrize("path", MODULES, ids=[dotted(p) for p in MODULES])
def test_imports_point_down(path):
    here = package_of(dotted(path)) if path.parent != PACKAGE else None
    if here is None:
        return
    upward = sorted(m for m in imports(path) if RANK[package_of(m)] > RANK[here]
                    or (RANK[package_of(m)] == RANK[here] and package_of(m) != here))
    assert upward == [], f"{dotted(path)} ({here}, layer {RANK[here]}) imports {upward}"


def test_no_two_modules_import_each_other_in_a_circle():
    graph = {dotted(p): {m for m in imports(p, top_level_only=True) if m in KNOWN} for p in MODULES}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue  # a package and its own modules
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*trail, module, target]))
            if target not in state:
                visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_no_module_is_over_350_lines():
    long = {dotted(p): n for p in MODULES if (n := len(p.read_text(encoding="utf-8").splitlines())) > 350}
    assert long == {}


def test_functions_stay_short():
    """Median at most 25 lines, none over 60 (a docstring counts: it is read with the code)."""
    lengths = {f"{dotted(p)}.{node.name}": node.end_lineno - node.lineno + 1 for p in MODULES
               for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert sorted(lengths.values())[len(lengths) // 2] <= 25
    assert {name: n for name, n in lengths.items() if n > 60} == {}

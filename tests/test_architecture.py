"""The package map holds: no module imports from a package above its own, and functions stay short.

The layers, lowest first (a module may import from its own layer and those below it):
errors and numbers; progress and settings; config and ray_session (joining Ray, for builds and
searches); io; embedding; store; search; build; analysis; api; server; cli. The docs'
architecture page draws the same map.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "genome_index"
LAYERS = [
    {"errors", "numbers", ""}, {"progress", "settings"}, {"config", "ray_session"}, {"io"}, {"embedding"},
    {"store"}, {"search"}, {"build"}, {"analysis"}, {"api"}, {"server"}, {"cli"},
]  # fmt: skip
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "assets" not in p.parts)
LONGEST_FUNCTION = 70  # lines, outside the command line's option lists


def part_of(path: Path) -> str:
    """The top-level package (or module) a file belongs to: `store` for genome_index/store/reads.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "" if parts == ("__init__",) else parts[0]


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level part) of every genome_index import in a module, functions' own included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genome_index"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from genome_index import x: the module x, or a name of the package itself
                found.extend((node.lineno, alias.name if alias.name in LAYER else "") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("genome_index."))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_package_above_its_own(path: Path) -> None:
    own = part_of(path)
    if path == PACKAGE / "__init__.py":
        return  # the package's face: GenomeIndex is found there on first use
    imports = imported(ast.parse(path.read_text()))
    upward = [f"line {line}: {part}" for line, part in imports if LAYER[part] > LAYER[own]]
    assert not upward, f"{path.relative_to(ROOT)} ({own}) imports from above: {upward}"


def test_the_layers_name_every_package() -> None:
    assert {part_of(path) for path in MODULES} <= set(LAYER)


def command_body_lines(node: ast.FunctionDef) -> int:
    """A function's length, its signature left out where it is a command's list of options."""
    return node.end_lineno - (node.body[0].lineno if node.body else node.lineno) + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_seventy_lines(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = command_body_lines(node) if part_of(path) == "cli" else node.end_lineno - node.lineno + 1
            if lines > LONGEST_FUNCTION:
                long.append(f"{node.name} ({lines} lines)")
    assert not long, f"{path.relative_to(ROOT)}: {long}"


def test_genome_index_stays_a_short_facade() -> None:
    tree = ast.parse((PACKAGE / "api.py").read_text())
    facade = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GenomeIndex")
    assert facade.end_lineno - facade.lineno + 1 <= 250


@pytest.mark.parametrize("init", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_package_opens_with_what_it_owns(init: Path) -> None:
    docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(docstring) > 40, f"{init.relative_to(ROOT)} says nothing of what its package owns"

"""The package's stages import one way: each module only from the stages before it.

The order is docs/design.md's table. A module that imports from a later stage
(or a new module missing here) fails this test: the house keeps its rooms.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / "kl_guard"

#: Earlier stages first; a module may import from any earlier stage, never a later one.
STAGES: list[set[str]] = [
    {"_codes", "_reduction", "_notebook", "_statistics", "_signature", "_compat", "_locks"},
    {"_findings"},
    {"_config", "_exceptions", "_suppression", "_summary"},
    {"_classify", "_messages", "_policy", "_sites", "_patch"},
    {"_plan", "_loss"},
    {"_diagnosis"},
    {"_check"},
    {"_arguments"},
    {"_reporting"},
    {"_manual", "_deferred", "_compiled"},
    {"_percall"},
    {"_recorder"},
    {"_lifecycle"},
    {"__init__"},
    {"_processes"},
    {"_child"},
    {"_runner", "_demo", "_pytest_plugin", "_lint"},
    {"_cli"},
    {"__main__"},
]
STAGE = {module: i for i, stage in enumerate(STAGES) for module in stage}


def runtime_imports(path: pathlib.Path) -> set[str]:
    """kl_guard's modules that ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "kl_guard":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from kl_guard import _x (a module) or a public name (the package)
                found |= {a.name if a.name.startswith("_") else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("kl_guard.")}
            found |= {"__init__" for a in node.names if a.name == "kl_guard"}
    return found - {path.stem}


MODULES = sorted(p for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_stage() -> None:
    assert {p.stem for p in MODULES} - set(STAGE) == set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_imports_point_one_way(path: pathlib.Path) -> None:
    later = {m for m in runtime_imports(path) if STAGE[m] >= STAGE[path.stem]}
    assert later == set(), f"{path.stem} imports from its own or a later stage"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_each_module_says_its_job_and_stays_small(path: pathlib.Path) -> None:
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    if path.stem != "__main__":
        assert docstring, f"{path.stem} has no docstring naming its job"
    assert source.count("\n") <= 400, f"{path.stem} is over 400 lines"

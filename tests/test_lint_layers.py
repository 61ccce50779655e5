"""The linter's modules import one way, and each says its job and stays small.

``tests/test_layers.py`` keeps the package's top-level modules so; this does
the same for ``kl_guard/_lint/``, whose stages are in its ``__init__``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

LINT = pathlib.Path(__file__).parent.parent / "kl_guard" / "_lint"

#: Earlier stages first; a module may import from any earlier stage, never a later one.
STAGES: list[set[str]] = [
    {"_model"},
    {"_files", "_scopes"},
    {"_binder", "_fixes"},
    {"_names"},
    {"_spaces"},
    {"_rules", "_output"},
    {"_command"},
    {"__init__"},
]
STAGE = {module: i for i, stage in enumerate(STAGES) for module in stage}
MODULES = sorted(LINT.glob("*.py"))


def lint_imports(path: pathlib.Path) -> set[str]:
    """The ``_lint`` modules that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "kl_guard._lint":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["kl_guard", "_lint"]:
                found.add(parts[2])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[2] for a in node.names if a.name.startswith("kl_guard._lint.")
            }
    return found - {path.stem}


def test_every_module_has_a_stage() -> None:
    assert {p.stem for p in MODULES} - set(STAGE) == set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_imports_point_one_way(path: pathlib.Path) -> None:
    later = {m for m in lint_imports(path) if STAGE[m] >= STAGE[path.stem]}
    assert later == set(), f"{path.stem} imports from its own or a later stage"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_each_module_says_its_job_and_stays_small(path: pathlib.Path) -> None:
    source = path.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{path.stem} has no docstring naming its job"
    assert source.count("\n") <= 400, f"{path.stem} is over 400 lines"

"""The package's modules import one way, in the order of docs/design.md's table of stages.

The table is read here, so the document and the test cannot disagree: a module
that imports one listed after it, a module the table does not list (or lists
twice), a missing docstring or a module over 400 lines fails. The modules of a
"no torch" row import in a process where torch cannot be imported.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
PACKAGE = ROOT / "kl_guard"
DESIGN = ROOT / "docs" / "design.md"


def stage_rows() -> list[tuple[list[str], bool]]:
    """Each row of the stages table: its modules in order, and whether it is torch-free."""
    text = DESIGN.read_text(encoding="utf-8")
    table = text[text.index("| stage | modules |") :].split("\n\n")[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows.append((re.findall(r"`([\w/]+)`", cells[1]), cells[-1] == "no torch"))
    return rows


ROWS = stage_rows()
ORDER = [module for modules, _ in ROWS for module in modules]
POSITION = {module: i for i, module in enumerate(ORDER)}
TORCH_FREE = [module for modules, torch_free in ROWS if torch_free for module in modules]


def name_of(path: pathlib.Path) -> str:
    """``_lint/_rules`` for kl_guard/_lint/_rules.py: the table's spelling."""
    return path.relative_to(PACKAGE).with_suffix("").as_posix()


def _module(dotted: str) -> str:
    """The table's name of ``kl_guard.<dotted>``."""
    return dotted.replace(".", "/")


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
            head, _, rest = node.module.partition(".")
            if head != "kl_guard":
                continue
            for alias in node.names:
                submodule = f"{rest}.{alias.name}" if rest else alias.name
                if (PACKAGE / f"{_module(submodule)}.py").exists():
                    found.add(_module(submodule))  # from kl_guard[._lint] import _module
                elif (PACKAGE / _module(submodule) / "__init__.py").exists():
                    found.add(f"{_module(submodule)}/__init__")  # a package
                elif rest:
                    found.add(_module(rest))  # a name from a module
                else:
                    found.add("__init__")  # a public name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "kl_guard":
                    found.add("__init__")
                elif alias.name.startswith("kl_guard."):
                    found.add(_module(alias.name.partition(".")[2]))
    # a package's own __init__ is where its modules' imports of the package go
    return {f"{m}/__init__" if (PACKAGE / m).is_dir() else m for m in found} - {name_of(path)}


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_table_lists_every_module_once() -> None:
    assert len(ORDER) == len(set(ORDER)), "a module is listed twice"
    assert sorted(ORDER) == sorted(name_of(p) for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=name_of)
def test_imports_point_one_way(path: pathlib.Path) -> None:
    name = name_of(path)
    later = {m for m in runtime_imports(path) if POSITION[m] >= POSITION[name]}
    assert later == set(), f"{name} imports modules listed after it in docs/design.md"


@pytest.mark.parametrize("path", MODULES, ids=name_of)
def test_each_module_says_its_job_and_stays_small(path: pathlib.Path) -> None:
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    if path.stem != "__main__":
        assert docstring, f"{name_of(path)} has no docstring naming its job"
    assert source.count("\n") <= 400, f"{name_of(path)} is over 400 lines"


def test_the_torch_free_stages_import_without_torch() -> None:
    # The contract, the diagnosis and the linter are read where torch is not
    # (the runner, the linter in a pre-commit hook): an import of torch fails there.
    dotted = ", ".join(
        repr("kl_guard." + m.replace("/", ".").removesuffix(".__init__")) for m in TORCH_FREE
    )
    script = (
        "import importlib, sys\n"
        "sys.modules['torch'] = None\n"
        f"for name in [{dotted}]:\n"
        "    importlib.import_module(name)\n"
        "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
    )
    assert "_diagnosis" in TORCH_FREE and "_lint/_rules" in TORCH_FREE
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)

"""Notebook cells: a finding in a cell is located as IPython locates it, ``Cell In[3], line 2``.

IPython is not a test dependency: a stand-in with the one method kl_guard
asks of a running shell's compiler (``format_code_name``) is put in
``sys.modules``, as a kernel would have the real one.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from kl_guard._notebook import cell_label

CELL = "/tmp/ipykernel_4242/3060937011.py"  # how ipykernel names a cell's code


class Compiler:
    """IPython's CachingCompiler as far as kl_guard uses it: cell file name -> execution count."""

    def __init__(self, cells: dict[str, int]) -> None:
        self.cells = cells

    def format_code_name(self, name: str) -> tuple[str, str] | None:
        if name in self.cells:
            return "Cell", f"In[{self.cells[name]}]"
        return None


def fake_ipython(shell: object) -> types.ModuleType:
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    return module


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = types.SimpleNamespace(compile=Compiler({CELL: 3}))
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython(shell))


@pytest.mark.usefixtures("kernel")
def test_a_cell_is_named_as_ipython_names_it() -> None:
    assert cell_label(CELL, 2) == "Cell In[3], line 2"


@pytest.mark.usefixtures("kernel")
def test_a_file_that_is_not_a_cell_has_no_label() -> None:
    assert cell_label(__file__, 2) is None


def test_without_ipython_there_is_no_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert cell_label(CELL, 2) is None


@pytest.mark.parametrize(
    "shell",
    [None, types.SimpleNamespace(), types.SimpleNamespace(compile=object())],
    ids=["imported but no shell running", "a shell without a compiler", "an older compiler"],
)
def test_an_ipython_that_cannot_say_gives_no_label(
    monkeypatch: pytest.MonkeyPatch, shell: object
) -> None:
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython(shell))
    assert cell_label(CELL, 2) is None


@pytest.mark.usefixtures("kernel")
def test_a_finding_in_a_cell_is_located_in_the_cell() -> None:
    cell = (
        "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
        "F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))\n"
    )
    code = compile(cell, CELL, "exec")  # as the kernel compiles it
    with kl_guard.guard(mode="raise"), pytest.raises(kl_guard.KLGuardError) as info:
        exec(code, {"torch": torch, "F": F})
    (finding,) = info.value.findings
    assert finding.location == "Cell In[3], line 2"
    assert "  at: Cell In[3], line 2" in finding.message.splitlines()

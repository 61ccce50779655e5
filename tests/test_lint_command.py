"""``python -m kl_guard lint``: exit codes, unparsable files, fixes, suppressions, codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lint_helpers import codes

from kl_guard._cli import main

KL_GUARD = Path(__file__).resolve().parent.parent / "kl_guard"
MISUSE = """\
import torch.nn as nn
import torch.nn.functional as F

crit = nn.KLDivLoss()  # the criterion
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_exit_status(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "clean.py").write_text("import torch\n")
    assert main(["lint", "clean.py"]) == 0
    (project / "bad.py").write_text(MISUSE)
    assert main(["lint"]) == 1  # default path: .
    assert main(["lint", "--ignore", "KLG001", "bad.py"]) == 0
    assert main(["lint", "--select", "KLG003", "bad.py"]) == 0
    assert main(["lint", "no/such/file.py"]) == 2
    assert "no such file or directory: no/such/file.py" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["lint", "--select", "KLG999"])
    assert exited.value.code == 2
    assert "unknown code 'KLG999'" in capsys.readouterr().err


def test_an_unparsable_file_is_reported_and_skipped(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "broken.py").write_text("import torch.nn.functional as F\nF.kl_div(a,\n")
    (project / "bad.py").write_text(MISUSE)
    (project / "nul.py").write_bytes(b"kl_div\x00\n")
    assert main(["lint", "--format", "json", "."]) == 1
    out, err = capsys.readouterr()
    assert [f["path"] for f in json.loads(out)["findings"]] == ["bad.py"]
    assert "broken.py:2: cannot parse, skipped: '(' was never closed" in err
    assert "nul.py" in err


def test_fix_is_safe_by_default_and_keeps_comments(project: Path) -> None:
    source = textwrap.dedent(
        """\
        import torch.nn.functional as F


        def distill(s, t):
            # the teacher is frozen
            p = F.softmax(t, dim=-1).detach()  # probabilities
            return F.kl_div(
                F.softmax(s, dim=-1),  # student
                p,
                reduction='batchmean',
                log_target=True,  # wrong twice
            )
        """
    )
    path = project / "distill.py"
    path.write_text(source)
    assert main(["lint", "--fix", "distill.py"]) == 0
    assert path.read_text() == source.replace(
        "F.softmax(s, dim=-1),  # student", "F.log_softmax(s, dim=-1),  # student"
    ).replace("log_target=True,", "log_target=False,")
    assert main(["lint", "distill.py"]) == 0


def test_fix_puts_swapped_arguments_back(project: Path) -> None:
    path = project / "swap.py"
    path.write_text(
        "import torch.nn.functional as F\n"
        "loss = F.kl_div(F.softmax(t, 1), F.log_softmax(s, 1), reduction='sum')  # swapped\n"
    )
    assert main(["lint", "--fix", "swap.py"]) == 0
    assert path.read_text().splitlines()[1] == (
        "loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction='sum')  # swapped"
    )


def test_unsafe_fixes_need_asking(project: Path) -> None:
    path = project / "train.py"
    path.write_text(MISUSE + "loss = F.kl_div(F.softmax(t, 1), F.log_softmax(s, 1))\n")
    assert main(["lint", "--fix", "train.py"]) == 1
    assert path.read_text() == MISUSE + "loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))\n"
    assert main(["lint", "--fix", "--unsafe-fixes", "train.py"]) == 0
    assert path.read_text() == (
        MISUSE.replace("nn.KLDivLoss()", 'nn.KLDivLoss(reduction="batchmean")')
        + 'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
    )
    assert main(["lint", "train.py"]) == 0


def test_what_cannot_be_fixed_is_left_as_it_was(project: Path) -> None:
    source = MISUSE + "loss = F.kl_div(a, b, reduce='batchmean')\n"
    (project / "legacy.py").write_text(source)
    assert main(["lint", "--fix", "--unsafe-fixes", "legacy.py"]) == 1
    assert (project / "legacy.py").read_text() == source.replace(
        "nn.KLDivLoss()", 'nn.KLDivLoss(reduction="batchmean")'
    )


def test_fix_in_a_notebook_cell(project: Path) -> None:
    cells = [
        "import torch.nn.functional as F\n",
        "%time loss = 0\n"
        "loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction='sum')",
    ]
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": 1}
            for c in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = project / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    assert main(["lint", "--fix", "nb.ipynb"]) == 0
    fixed = json.loads(path.read_text())
    assert "".join(fixed["cells"][1]["source"]) == cells[1].replace(
        "reduction='sum')", "reduction='sum', log_target=True)"
    )


SUPPRESSED = {
    "on the line": ("F.kl_div(a, b)  # kl_guard: ignore[KLG001]\n", []),
    "another code": ("F.kl_div(a, b)  # kl_guard: ignore[KLG003]\n", ["KLG001"]),
    "every code": ("F.kl_div(F.softmax(a, 1), b)  # kl_guard: ignore\n", []),
    "first line of a call": (
        "F.kl_div(  # kl_guard: ignore[KLG003]\n    F.softmax(a, 1),\n    b,\n"
        "    reduction='sum',\n)\n",
        [],
    ),
    "line of the argument": (
        "F.kl_div(\n    F.softmax(a, 1),  # kl_guard: ignore[KLG003]\n    b,\n"
        "    reduction='sum',\n)\n",
        [],
    ),
    "another argument's line": (
        "F.kl_div(\n    F.softmax(a, 1),\n    b,  # kl_guard: ignore[KLG003]\n"
        "    reduction='sum',\n)\n",
        ["KLG003"],
    ),
    "line of the reduction default": (
        "def f(a, b, reduction='mean'):  # kl_guard: ignore[KLG001]\n"
        "    return F.kl_div(a, b, reduction=reduction)\n",
        [],
    ),
}


@pytest.mark.parametrize("case", SUPPRESSED, ids=list(SUPPRESSED))
def test_suppression_comments(case: str) -> None:
    source, expected = SUPPRESSED[case]
    assert codes(source) == expected


def test_the_lint_path_imports_no_torch(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(MISUSE)
    script = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("kl_guard")
        package.__path__ = [{str(KL_GUARD)!r}]
        sys.modules["kl_guard"] = package
        from kl_guard._cli import main
        status = main(["lint", {str(tmp_path)!r}])
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(status, loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "1 []"

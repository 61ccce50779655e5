"""Which files the linter reads, and notebooks read as one program, cell by cell."""

from __future__ import annotations

import json
from pathlib import Path

from kl_guard._lint._command import lint_document
from kl_guard._lint._files import discover, load


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")


def test_discovery_skips_git_venvs_caches_and_excluded(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "train.py",
            "pkg/model.py",
            "pkg/notes.txt",
            "nb/explore.ipynb",
            ".git/hooks/pre-commit.py",
            ".venv/lib/site.py",
            "env-3.11/lib/site.py",  # a virtual environment by its pyvenv.cfg
            "pkg/__pycache__/model.py",
            "build/generated.py",
            "pkg/test_skip_me.py",
        ],
    )
    (tmp_path / "env-3.11" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    found = discover([str(tmp_path)], exclude=["build", "test_*.py"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == [
        "nb/explore.ipynb",
        "pkg/model.py",
        "train.py",
    ]


def test_a_named_file_is_linted_even_when_excluded(tmp_path: Path) -> None:
    _tree(tmp_path, ["build/generated.py"])
    path = tmp_path / "build" / "generated.py"
    assert list(discover([str(path), str(path)], exclude=["build"])) == [path]


def _notebook(cells: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
            for kind, source in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


NOTEBOOK = _notebook(
    [
        ("markdown", "# Distillation\n"),
        ("code", "%matplotlib inline\nimport torch.nn.functional as F\n!pip list"),
        ("code", "%%bash\necho $((1 + 2))\n"),
        ("code", "files = !ls\nloss = F.kl_div(\n    F.softmax(s, 1), t, reduction='sum'\n)\n"),
    ]
)


def test_notebook_cells_are_one_program_and_findings_name_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "explore.ipynb"
    path.write_text(json.dumps(NOTEBOOK))
    doc = load(path)
    (finding,) = lint_document(doc)
    assert finding.code == "KLG003"
    assert doc.position(finding.line) == (4, 2)  # cell 4 counts the markdown cell
    assert finding.column == 8


def test_magics_keep_every_offset(tmp_path: Path) -> None:
    path = tmp_path / "explore.ipynb"
    path.write_text(json.dumps(NOTEBOOK))
    doc = load(path)
    for cell in doc.cells:
        masked = doc.text[cell.start : cell.start + len(cell.source)]
        assert [len(line) for line in masked.splitlines()] == [
            len(line) for line in cell.source.splitlines()
        ]
    assert doc.text.splitlines()[:6] == [
        "#matplotlib inline",
        "import torch.nn.functional as F",
        "#pip list",
        "#%bash",
        "#cho $((1 + 2))",  # a %%bash cell is not Python
        "#iles = !ls",
    ]


def test_a_notebook_that_is_not_json_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json")
    try:
        load(path)
    except Exception as exc:  # noqa: BLE001 - the type is the point
        assert type(exc).__name__ == "UnreadableError"
    else:
        raise AssertionError("a broken notebook loaded")


def test_a_source_encoding_and_crlf_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    text = "# -*- coding: latin-1 -*-\r\nimport torch.nn.functional as F\r\nname = 'café'\r\n"
    path.write_bytes(text.encode("latin-1"))
    doc = load(path)
    assert doc.text == text
    assert doc.line(3) == "name = 'café'"
    assert doc.encode(doc.text) == path.read_bytes()

"""Helpers for the linter's tests: lint a snippet, get (code, line) pairs."""

from __future__ import annotations

import textwrap
from pathlib import Path

from kl_guard._lint._command import lint_document
from kl_guard._lint._files import Document
from kl_guard._lint._model import LintFinding

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def findings(source: str, *, header: bool = True) -> list[LintFinding]:
    text = (HEADER if header else "") + textwrap.dedent(source)
    return lint_document(Document(Path("snippet.py"), text))


def codes(source: str, *, header: bool = True) -> list[str]:
    return [f.code for f in findings(source, header=header)]

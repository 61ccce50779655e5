"""The codes' registry: one text per code, read by the README's table, ``codes`` and ``explain``."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lint_helpers import findings
from torch import nn

import kl_guard
from kl_guard._codes import ALL, BY_CODE, explain
from kl_guard._findings import OPT_IN
from kl_guard._rule import Code

README = Path(__file__).resolve().parents[1] / "README.md"


def test_codes_keep_their_public_one_line_meanings() -> None:
    assert isinstance(kl_guard.CODES, types.MappingProxyType)
    assert dict(kl_guard.CODES) == {
        "KLG001": "reduction resolves to 'mean', which also divides by the number of classes",
        "KLG002": "log_target does not match the space the target is in",
        "KLG003": "input is not log-probabilities",
        "KLG004": "the loss is negative beyond rounding, NaN or infinite",
        "KLG005": "input and target shapes differ and broadcast silently",
        "KLG006": "a distribution is normalized over the wrong dimension",
        "KLG007": "target is not a probability distribution",
        "KLG008": "the target requires grad while the input does not",
        "KLG009": "a deprecated size_average or reduce argument overrides reduction",
        "KLG010": "input to cross_entropy is probabilities, not logits: softmax applied twice",
        "KLG011": "input to nll_loss is not log-probabilities",
        "KLG012": "input to binary_cross_entropy_with_logits is probabilities, not logits",
        "KLG013": "cross_entropy over a single class: the loss is 0 whatever the model does",
        "KLG014": "target of binary_cross_entropy_with_logits is outside [0, 1]",
        "KLG015": "soft target of cross_entropy is not probabilities",
    }
    with pytest.raises(TypeError):
        kl_guard.CODES["KLG099"] = "new"  # type: ignore[index]


def test_klg008_alone_is_opt_in() -> None:
    assert sorted(OPT_IN) == ["KLG008"]


def readme_rows() -> list[list[str]]:
    """The cells of each row of the README's codes table, below its header."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| code | meaning | typical cause | fix |") :].split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"\s\|\s", row.strip("| "))] for row in rows]


def test_readme_table_is_the_registry() -> None:
    expected = [[c.heading, c.title, c.cause, c.fix] for c in ALL]
    assert readme_rows() == expected, "\n".join(f"| {' | '.join(row)} |" for row in expected)


def example_codes(entry: Code, which: str) -> list[str]:
    """The codes ``entry``'s wrong or right example gets, run as it is shown,
    every code enabled (opt-in ones included); each example holds one call."""
    source: str = getattr(entry, which)
    with kl_guard.guard(mode="log", check_every=1, select=kl_guard.CODES) as guard:
        exec(compile(source, f"<{entry.code} {which}>", "exec"), {"torch": torch, "F": F, "nn": nn})
    return sorted({f.code for f in guard.findings})


def linted_codes(entry: Code, which: str) -> list[str]:
    return sorted({f.code for f in findings(getattr(entry, which))})


RUNTIME = [c for c in ALL if c.runtime]
LINT_ONLY = [c for c in ALL if not c.runtime]


@pytest.mark.parametrize("entry", RUNTIME, ids=lambda c: c.code)
def test_the_wrong_example_gets_its_code(entry: Code) -> None:
    assert entry.code in example_codes(entry, "wrong")


@pytest.mark.parametrize("entry", RUNTIME, ids=lambda c: c.code)
def test_the_right_example_is_silent(entry: Code) -> None:
    assert example_codes(entry, "right") == []


@pytest.mark.parametrize("entry", LINT_ONLY, ids=lambda c: c.code)
def test_a_lint_only_code_is_the_linters_and_not_yet_the_runtimes(entry: Code) -> None:
    # The examples run as shown; the guard does not check these losses yet
    # (issue 21), which the code's heading and its text say.
    assert (example_codes(entry, "wrong"), example_codes(entry, "right")) == ([], [])
    assert (linted_codes(entry, "wrong"), linted_codes(entry, "right")) == ([entry.code], [])
    assert entry.heading == f"{entry.code} (lint only)"
    assert "the runtime guard does not check this loss yet" in explain(entry.code)


def test_explain_reads_as_headline_meaning_wrong_right_silence() -> None:
    lines = explain("KLG003").splitlines()
    assert lines[:2] == ["KLG003: input is not log-probabilities", ""]
    assert lines[2].startswith("F.kl_div(input, target) computes")
    assert all(len(line) <= 79 for line in lines[: lines.index("Wrong:")])
    wrong, right, silence = (lines.index(label) for label in ("Wrong:", "Right:", "Silence:"))
    assert lines[wrong + 1 : right - 1] == [
        f"    {line}" for line in BY_CODE["KLG003"].wrong.splitlines()
    ]
    assert lines[right + 1 : silence - 1] == [
        f"    {line}" for line in BY_CODE["KLG003"].right.splitlines()
    ]
    assert lines[silence + 1 :] == [
        '    kl_guard.install(ignore="KLG003")  # also guard(), run --ignore KLG003',
        "    loss = F.kl_div(...)  # kl_guard: ignore[KLG003]  (this line only)",
        '    warnings.filterwarnings("ignore", category=kl_guard.KLG003Warning)  # warning only',
    ]


def test_an_opt_in_code_says_so_and_how_to_turn_it_on() -> None:
    text = explain("KLG008")
    assert text.startswith("KLG008 (opt-in): the target requires grad while the input does not\n")
    assert "    # off unless select names KLG008: install(select=...), run --select\n" in text

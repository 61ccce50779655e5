"""One code, one set of words: the runtime guard and the linter name each misuse alike.

Each code's wrong example (``_codes``) runs under a guard and goes through the
linter; for a code the linter finds, its message starts with the runtime's
headline word for word. Both read ``_words``: a copy that drifts fails here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lint_helpers import HEADER, findings
from torch import nn

import kl_guard
from kl_guard import _words
from kl_guard._codes import ALL
from kl_guard._contract import Space
from kl_guard._rule import Code

LINTED = [c for c in ALL if c.linted and c.runtime]


def runtime_finding(entry: Code) -> tuple[str, int]:
    """The headline of ``entry``'s code for its wrong example, and the line it
    points at (for a module's 'mean', where the module was built)."""
    guard = kl_guard.guard(mode="raise", check_every=1, select="ALL")
    with pytest.raises(kl_guard.KLGuardError) as info, guard:
        exec(compile(entry.wrong, "<wrong>", "exec"), {"torch": torch, "F": F, "nn": nn})
    [finding] = [f for f in info.value.findings if f.code == entry.code]
    headline = finding.message.splitlines()[0]
    assert headline.startswith(f"{entry.code}: ")
    built = [line for line in finding.message.splitlines() if "the module was built at" in line]
    where = built[0].split(":")[1] if built else finding.location.rpartition(":")[2]
    return headline.removeprefix(f"{entry.code}: "), int(where)


@pytest.mark.parametrize("entry", LINTED, ids=lambda c: c.code)
def test_the_linter_words_a_code_as_the_runtime_does(entry: Code) -> None:
    headline, line = runtime_finding(entry)
    [found] = [f for f in findings(entry.wrong) if f.code == entry.code]
    assert found.message.startswith(headline)  # KLG001's goes on with where 'mean' comes from
    assert found.line == HEADER.count("\n") + line


@pytest.mark.parametrize("entry", [c for c in ALL if not c.linted], ids=lambda c: c.code)
def test_a_code_the_linter_cannot_see_is_not_linted(entry: Code) -> None:
    # KLG004, KLG005, KLG007 and KLG008 need values, shapes or requires_grad: a run only
    assert entry.code not in {f.code for f in findings(entry.wrong)}


def test_the_shared_words_read_as_the_codes_say() -> None:
    assert _words.input_headline(Space.PROB) == (
        "input to kl_div looks like probabilities (softmax output?), not log-probabilities"
    )
    assert _words.log_target_headline(False, Space.LOGPROB) == (
        "kl_div was called with log_target=False but the target looks like log-probabilities"
    )
    assert _words.override_headline("mean", "sum") == (
        "the deprecated size_average/reduce arguments override reduction='mean': "
        "torch computes 'sum'"
    )
    assert (
        _words.misplaced_fix("softmax", 0, 1)
        == "F.softmax(x, dim=1) instead of F.softmax(x, dim=0)"
    )

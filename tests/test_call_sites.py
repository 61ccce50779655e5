"""Call sites: each line of the user's keeps its own schedule, and new code starts afresh."""

from __future__ import annotations

import sys
from types import FrameType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import (
    active_view,
    good,
    logits,
    marked_line,
    probs_input,
)
from kl_guard import _percall

GOOD = "F.kl_div(log_p, q, reduction='batchmean')"
MISUSE = "F.kl_div(p, q, reduction='batchmean')"  # probabilities as the input


def cell_namespace() -> dict[str, object]:
    s, t = logits(8, 5), logits(8, 5, seed=1)
    return {"F": F, "log_p": F.log_softmax(s, 1), "p": F.softmax(s, 1), "q": F.softmax(t, 1)}


def run_cell(source: str, times: int, namespace: dict[str, object]) -> None:
    """A notebook cell run once: its code compiled afresh, then freed."""
    code = compile(f"for _ in range({times}):\n    {source}\n", "<cell>", "exec")
    exec(code, namespace)
    del code


def test_every_regenerated_misuse_is_reported() -> None:
    """A cell re-run after an edit gets a new code object, which may get the
    id of the freed one: it must not inherit that one's schedule."""
    namespace = cell_namespace()
    kl_guard.install(mode="log")
    generations = 300
    for _ in range(generations):
        run_cell(GOOD, 40, namespace)
        run_cell(MISUSE, 3, namespace)
    [finding] = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert finding.location == "<cell>:2"
    assert finding.count == generations * 3  # each misused generation: all 3 calls checked


def test_sites_stay_bounded_over_thousands_of_generations() -> None:
    namespace = cell_namespace()
    kl_guard.install(mode="log", check_every=1000)
    policy = active_view().schedule.policy
    for _ in range(10_000):
        run_cell(GOOD, 1, namespace)
    assert len(policy) <= policy.LIMIT
    assert kl_guard.findings() == []


def test_warning_points_at_the_users_line() -> None:
    kl_guard.install()
    with pytest.warns(kl_guard.KLGuardWarning) as record:
        F.kl_div(*probs_input(), reduction="batchmean")  # warns at the user's line
    [warning] = [w for w in record if issubclass(w.category, kl_guard.KLG003Warning)]
    line = marked_line(__file__, "warns at the user's line")
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert str(warning.message).splitlines()[-1] == f"  at: tests/test_call_sites.py:{line}"


def test_code_the_user_runs_from_a_string_is_the_users() -> None:
    # Code torch generates and runs is skipped; "<string>" the user runs is not.
    source = "\n\nF.kl_div(*probs_input(), reduction='batchmean')\n"
    with kl_guard.guard(mode="log") as g:
        exec(compile(source, "<string>", "exec"), globals())
    assert {f.location for f in g.findings} == {"<string>:3"}


def test_a_module_written_in_a_string_is_the_users() -> None:
    # Its forward is called by torch (Module.__call__), but not by torch's compiler.
    source = (
        "class Distill(nn.Module):\n"
        "    def forward(self, s, t):\n"
        "        return F.kl_div(F.softmax(s, 1), F.softmax(t, 1), reduction='batchmean')\n"
        "Distill()(logits(4, 5), logits(4, 5, seed=1))\n"
    )
    with kl_guard.guard(mode="log") as g:
        exec(compile(source, "<string>", "exec"), globals())
    assert {f.location for f in g.findings} == {"<string>:3"}


def test_module_warning_points_at_the_users_line_and_is_checked_once() -> None:
    kl_guard.install()
    loss = nn.KLDivLoss(reduction="batchmean")
    with pytest.warns(kl_guard.KLGuardWarning) as record:
        loss(*probs_input())  # warns here
    codes = sorted(w.category.code for w in record)  # type: ignore[attr-defined]
    assert codes == ["KLG003", "KLG004"]
    assert {w.filename for w in record} == {__file__}
    with kl_guard.guard(check_every=1) as g, pytest.warns(kl_guard.KLGuardWarning):
        for _ in range(3):
            loss(*probs_input())
    assert [(f.code, f.count) for f in g.findings] == [("KLG003", 3), ("KLG004", 3)]


def test_a_module_call_counts_once_at_its_site_checked_or_not() -> None:
    kl_guard.install(mode="log", check_every=2)
    loss = nn.KLDivLoss(reduction="batchmean")
    for _ in range(4):
        loss(*probs_input())  # checked on calls 1 and 3
    assert [(f.code, f.count) for f in kl_guard.findings()] == [("KLG003", 2), ("KLG004", 2)]
    assert "fix: nn.KLDivLoss(" in kl_guard.findings()[0].message


def test_calls_the_policy_lets_through_never_reach_the_scheduled_path() -> None:
    """A repeat call from the latest site is let through by the wrapper's fast
    path, with no frame walk, site look-up or schedule."""
    reached: list[bool] = []  # per call of _scheduled_call: whether for F.kl_div

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is _percall._scheduled_call.__code__:
            reached.append(frame.f_locals["instance"] is None)

    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss(reduction="batchmean")
    sys.setprofile(profile)  # a profile function adds no frame: the call sites stay
    try:
        for _ in range(100):
            F.kl_div(*probs_input(), reduction="batchmean")
        functional = len(reached)
        reached.clear()
        for _ in range(10):
            criterion(*probs_input())
    finally:
        sys.setprofile(None)
    assert functional == 11  # the checked calls: 1-8, 16, 32 and 64
    # the module's checked calls (1-8), and the F.kl_div inside every module call,
    # which the scheduled path lets through for the busy mark
    assert reached.count(False) == 8
    assert reached.count(True) == 10
    assert [f.count for f in kl_guard.findings() if f.code == "KLG003"] == [11, 8]


def test_default_policy_checks_the_first_calls_then_backs_off() -> None:
    kl_guard.install(mode="log")
    for _ in range(100):
        F.kl_div(*good())
    [finding] = kl_guard.findings()
    # calls 1-8, then 16, 32 and 64
    assert finding.count == 11


def test_lines_that_take_turns_keep_their_own_schedules() -> None:
    """The fast path remembers one line; another line in between must not
    shift either line's checks."""
    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss(reduction="batchmean")
    for _ in range(100):
        F.kl_div(*probs_input(), reduction="batchmean")
        F.kl_div(*probs_input(), reduction="batchmean")
        criterion(*probs_input())
    findings = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert len({f.location for f in findings}) == 3
    assert [f.count for f in findings] == [11, 11, 11]


def test_one_module_called_from_two_lines_keeps_two_schedules() -> None:
    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss(reduction="batchmean")

    def nested() -> torch.Tensor:
        loss: torch.Tensor = criterion(*probs_input())  # one frame deeper than below
        return loss

    for _ in range(100):
        criterion(*probs_input())
        nested()
    findings = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert [f.count for f in findings] == [11, 11]


def test_check_every() -> None:
    kl_guard.install(mode="log", check_every=10)
    for _ in range(100):
        F.kl_div(*good())
    assert kl_guard.findings()[0].count == 10


def test_a_modules_klg001_names_where_it_was_built() -> None:
    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss()  # built here
    criterion(*good())  # called here
    [finding] = kl_guard.findings()
    built, called = marked_line(__file__, "built here"), marked_line(__file__, "called here")
    assert finding.location == f"tests/test_call_sites.py:{called}"
    assert (
        f"  the module was built at tests/test_call_sites.py:{built}: its reduction is set there"
        in finding.message.splitlines()
    )


def test_a_module_built_before_install_is_reported_without_it() -> None:
    criterion = nn.KLDivLoss()
    kl_guard.install(mode="log")
    criterion(*good())
    [finding] = kl_guard.findings()
    assert "was built at" not in finding.message

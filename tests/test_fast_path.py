"""The not-checked path: a loss line called again is recognized by identity alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from kl_guard import _percall


def test_a_step_of_two_loss_lines_takes_the_fast_path_for_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A distillation step calls kl_div and cross_entropy from two lines: both are
    among the two sites seen last, so neither goes the scheduled path once past
    their first calls (one slot made every call of such a step miss)."""
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))

    def step() -> None:
        F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")
        F.cross_entropy(s, y)

    kl_guard.install(mode="log", check_every=10**6)
    step()  # each line's first call is checked, and locates its site
    scheduled: list[Any] = []
    original = _percall._scheduled_call

    def counting(*args: Any) -> Any:
        scheduled.append(args)
        return original(*args)

    monkeypatch.setattr(_percall, "_scheduled_call", counting)
    for _ in range(5):
        step()
    assert scheduled == []
    assert kl_guard.counts().seen == 12


def test_three_lines_are_each_counted_and_judged() -> None:
    s, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    kl_guard.install(mode="log", check_every=10**6)
    for _ in range(3):
        F.cross_entropy(s, y)
        F.cross_entropy(s, y, label_smoothing=0.1)
        F.nll_loss(F.log_softmax(s, 1), y)
    assert kl_guard.counts().seen == 9
    assert kl_guard.findings() == []

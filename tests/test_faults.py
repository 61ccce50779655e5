"""Fault injection: whichever stage of kl_guard fails, the user's call is unaffected.

Each test breaks one stage, makes a guarded call that would otherwise be
reported, and checks that the result and the gradient are bit-identical to
torch's and that kl_guard said once, on its logger, that it failed.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from types import FrameType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import active_view, logits
from kl_guard import _arguments, _check, _patch, _percall, _policy, _reporting, _sites, _statistics

Step = Callable[[torch.Tensor], torch.Tensor]


def functional(x: torch.Tensor) -> torch.Tensor:
    # probabilities as input: a misuse, so every stage has work to do
    return F.kl_div(F.softmax(x, 1), F.softmax(logits(8, 5, seed=1), 1), reduction="batchmean")


def module(x: torch.Tensor) -> torch.Tensor:
    loss: torch.Tensor = nn.KLDivLoss(reduction="batchmean")(
        F.softmax(x, 1), F.softmax(logits(8, 5, seed=1), 1)
    )
    return loss


def run(step: Step) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits(8, 5).requires_grad_()
    loss = step(x)
    loss.backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None
    return loss.detach(), x.grad


def broken(*args: object, **kwargs: object) -> object:
    raise RuntimeError("injected")


# (where the stage is looked up, its name, the mode that reaches it)
STAGES = [
    (_sites, "user_frame_from", "raise"),
    (_policy.ScheduleTable, "site", "raise"),
    (_policy.SiteSchedule, "due", "raise"),
    (_patch.Patch, "filter_mean_warning", "raise"),
    (_arguments, "bind_arguments", "raise"),
    (_check, "describe", "raise"),
    (_check, "argument_findings", "raise"),  # _diagnosis's, where _check looks it up
    (_statistics, "screen", "raise"),
    (_check, "screen_passes", "raise"),  # _diagnosis's, where _check looks it up
    (_statistics, "compute", "raise"),
    (_statistics, "unpack", "raise"),
    (_check, "tensor_findings", "raise"),  # _diagnosis's too
    (_reporting, "attribute", "raise"),
    (_sites, "site_of", "raise"),
    (_reporting.Record, "add", "raise"),
    (_reporting, "_warn_at", "warn"),
    (_reporting.logger, "warning", "log"),
]


@pytest.mark.parametrize("step", [functional, module])
@pytest.mark.parametrize(
    ("owner", "name", "mode"),
    STAGES,
    ids=[f"{getattr(o, '__name__', 'logger')}.{n}" for o, n, _ in STAGES],
)
def test_a_failing_stage_never_reaches_the_user(
    owner: object,
    name: str,
    mode: str,
    step: Step,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = run(step)
    kl_guard.install(mode=mode, check_every=1)
    monkeypatch.setattr(owner, name, broken)
    with caplog.at_level(logging.ERROR, logger="kl_guard"):
        for _ in range(3):
            guarded = run(step)
            assert all(torch.equal(a, b) for a, b in zip(expected, guarded, strict=True))
    # Said once, not once per call; the message proves the fault was reached.
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "kl_guard"
    assert "kl_guard failed while checking a loss call" in record.getMessage()
    assert "RuntimeError: injected" in record.getMessage()


def test_a_broken_logger_cannot_say_it_but_still_does_no_harm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = run(functional)
    monkeypatch.setattr(_statistics, "compute", broken)
    monkeypatch.setattr(_reporting.logger, "error", broken)
    kl_guard.install(mode="raise", check_every=1)
    guarded = run(functional)
    assert all(torch.equal(a, b) for a, b in zip(expected, guarded, strict=True))


def test_a_failing_fast_path_sends_the_call_on_to_the_scheduled_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fast path runs outside ``safely``: an error there is said once and
    the call goes on to the scheduled path."""
    expected = run(functional)
    kl_guard.install(mode="log", check_every=3)
    run(functional)  # the site is known: the next two calls take the fast path
    getframes: list[int] = []

    def fails_once(depth: int) -> FrameType:  # the fast path's look, then the real ones
        getframes.append(depth)
        if len(getframes) == 1:
            raise RuntimeError("injected")
        return sys._getframe(depth + 1)

    monkeypatch.setattr(_percall, "_getframe", fails_once)
    with caplog.at_level(logging.ERROR, logger="kl_guard"):
        for _ in range(4):
            guarded = run(functional)
            assert all(torch.equal(a, b) for a, b in zip(expected, guarded, strict=True))
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RuntimeError: injected" in record.getMessage()


def test_a_shallower_stack_than_the_latest_sites_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fast path looks ``depth`` frames up for the latest site; a call from
    a shallower stack is simply another site, not a failure to report."""
    kl_guard.install(mode="log", check_every=3)
    run(functional)
    schedule = active_view().schedule
    schedule.recent = tuple(  # deeper than any stack
        latest._replace(depth=10**6) for latest in schedule.recent
    )  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="kl_guard"):
        run(functional)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_raise_mode_still_raises(caplog: pytest.LogCaptureFixture) -> None:
    kl_guard.install(mode="raise", check_every=1)
    with caplog.at_level(logging.ERROR, logger="kl_guard"), pytest.raises(kl_guard.KLGuardError):
        run(functional)
    assert caplog.records == []


def test_a_warning_made_an_error_by_the_user_still_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kl_guard.install(mode="warn", check_every=1)
    with (
        caplog.at_level(logging.ERROR, logger="kl_guard"),
        warnings.catch_warnings(),
        pytest.raises(kl_guard.KLG003Warning),
    ):
        warnings.simplefilter("error", kl_guard.KLGuardWarning)  # python -W error
        run(functional)
    assert caplog.records == []

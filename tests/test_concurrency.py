"""Threads: calls keep their results while others install, uninstall and guard.

At the end the state is exact: the originals are back, no layer, view or
patch is left, and the warning filters are as they were.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import ORIGINAL, fully_removed, logits, rounds
from kl_guard._config import Config
from kl_guard._policy import SiteSchedule


def assert_fully_removed(filters_before: list[object]) -> None:
    assert not kl_guard.is_installed()
    assert F.kl_div is ORIGINAL.kl_div
    assert vars(nn.KLDivLoss)["forward"] is ORIGINAL.forward
    assert fully_removed()
    assert warnings.filters == filters_before


@pytest.fixture
def filters() -> Iterator[list[object]]:
    """The warning filters before the test, compared after it."""
    with warnings.catch_warnings():
        yield list(warnings.filters)


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    """Switch threads every microsecond, not every 5 ms, so that races happen."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def run_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    return errors


def test_calls_stay_exact_while_others_install_uninstall_and_guard(
    filters: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    good = F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)
    bad = F.softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)
    calls: list[Callable[[], torch.Tensor]] = [
        lambda: F.kl_div(*good, reduction="batchmean"),
        lambda: F.kl_div(*bad, reduction="sum"),
        lambda: nn.KLDivLoss(reduction="batchmean")(*good),
        lambda: nn.KLDivLoss(reduction="none")(*bad),
    ]
    expected = [call() for call in calls]
    done = threading.Event()
    made = [0] * len(calls)

    def caller(i: int) -> Callable[[], None]:
        def work() -> None:
            while not done.is_set():
                assert torch.equal(calls[i](), expected[i])
                made[i] += 1

        return work

    def installer() -> None:
        for i in range(rounds(300)):
            kl_guard.install(mode="log", check_every=1 + i % 3)
            kl_guard.uninstall()

    def guarder() -> None:
        for _ in range(rounds(300)):
            with kl_guard.guard(mode="log", check_every=1), kl_guard.guard(mode="off"):
                pass
            g = kl_guard.guard(mode="log")
            g.start()
            kl_guard.install(mode="log")
            g.stop()

    def control() -> None:
        try:
            assert run_threads([installer, installer, guarder, guarder]) == []
        finally:
            done.set()

    with caplog.at_level(logging.WARNING, logger="kl_guard"):
        errors = run_threads([control, *(caller(i) for i in range(len(calls)))])
    assert errors == []
    assert min(made) >= 10, made  # the calls did overlap the changes
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    kl_guard.uninstall()  # the guarder's last install
    assert_fully_removed(filters)


@pytest.mark.usefixtures("filters")
def test_a_call_in_flight_across_uninstall_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call read its view while installed; uninstall() runs before it checks."""
    in_call, uninstalled = threading.Event(), threading.Event()
    due = SiteSchedule.due

    def paused(self: SiteSchedule, config: Config) -> bool:
        in_call.set()
        assert uninstalled.wait(10)
        return due(self, config)

    inp, tgt = F.log_softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)
    expected = F.kl_div(inp, tgt, reduction="batchmean")
    results: list[torch.Tensor] = []
    kl_guard.install(mode="log", check_every=1)
    # The filter is put back at each check, since user code may reset the filters.
    warnings.resetwarnings()
    monkeypatch.setattr(SiteSchedule, "due", paused)

    def call() -> None:
        results.append(F.kl_div(inp, tgt, reduction="batchmean"))

    def remove() -> None:
        assert in_call.wait(10)
        kl_guard.uninstall()
        uninstalled.set()

    assert run_threads([call, remove]) == []
    assert torch.equal(results[0], expected)
    assert_fully_removed([])  # resetwarnings() emptied the filters before the call


def test_guards_of_several_threads_nest_and_unwind(filters: list[object]) -> None:
    barrier = threading.Barrier(4)
    inp, tgt = F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)

    def worker() -> None:
        for _ in range(rounds(100)):
            barrier.wait(10)
            with kl_guard.guard(mode="log", check_every=1) as g:
                barrier.wait(10)  # all four guards active at once
                F.kl_div(inp, tgt, reduction="sum")
                barrier.wait(10)
            assert not g.active
            assert {f.code for f in g.findings} <= {"KLG003", "KLG004"}

    assert run_threads([worker] * 4) == []
    assert_fully_removed(filters)

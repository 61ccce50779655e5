"""install(), uninstall() and guard(): the patch applied, layered and removed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import ORIGINAL, good, marked_line, probs_input
from kl_guard import _compat


def test_install_patches_and_uninstall_restores_the_originals() -> None:
    kl_guard.install()
    assert F.kl_div is not ORIGINAL.kl_div
    assert nn.KLDivLoss.forward is not ORIGINAL.forward
    assert torch.nn.functional.kl_div.__wrapped__ is ORIGINAL.kl_div  # type: ignore[attr-defined]
    kl_guard.uninstall()
    assert F.kl_div is ORIGINAL.kl_div
    assert nn.KLDivLoss.forward is ORIGINAL.forward


def test_install_is_idempotent_and_updates_options() -> None:
    kl_guard.install()
    patched = F.kl_div
    kl_guard.install(mode="raise")
    assert F.kl_div is patched
    with pytest.raises(kl_guard.KLGuardError):
        F.kl_div(*probs_input(), reduction="batchmean")
    kl_guard.uninstall()
    kl_guard.uninstall()  # a no-op
    assert F.kl_div is ORIGINAL.kl_div


def test_uninstall_when_never_installed_is_a_no_op() -> None:
    kl_guard.uninstall()
    assert F.kl_div is ORIGINAL.kl_div


def test_guard_as_context_manager_nests_and_restores() -> None:
    with kl_guard.guard() as outer:
        patched = F.kl_div
        with kl_guard.guard(mode="raise") as inner, pytest.raises(kl_guard.KLGuardError):
            F.kl_div(*probs_input(), reduction="batchmean")
        assert F.kl_div is patched
        with pytest.warns(kl_guard.KLGuardWarning):
            F.kl_div(*probs_input(), reduction="batchmean")
    assert F.kl_div is ORIGINAL.kl_div
    assert [f.code for f in inner.findings] == ["KLG003", "KLG004"]
    # two call sites: one entry per (location, code)
    assert [(f.code, f.count) for f in outer.findings] == [("KLG003", 1), ("KLG004", 1)] * 2
    assert outer.findings[0].location != outer.findings[2].location


def test_guard_inside_install_keeps_the_patch_after_exit() -> None:
    kl_guard.install(ignore="KLG004")
    patched = F.kl_div
    with kl_guard.guard(mode="raise") as g, pytest.raises(kl_guard.KLGuardError) as info:
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [f.code for f in info.value.findings] == ["KLG003"]  # ignore is inherited
    assert [f.code for f in g.findings] == ["KLG003"]
    assert F.kl_div is patched


def test_guard_records_findings_in_every_mode_with_counts() -> None:
    with kl_guard.guard(mode="log", check_every=1) as g:
        for _ in range(100):
            F.kl_div(*good())  # a 'mean' call in a guard
    assert [(f.code, f.count) for f in g.findings] == [("KLG001", 100)]
    line = marked_line(__file__, "a 'mean' call in a guard")
    assert g.findings[0].location == f"tests/test_lifecycle.py:{line}"


def test_guard_as_decorator() -> None:
    @kl_guard.guard(mode="raise")
    def step() -> torch.Tensor:
        return F.kl_div(*probs_input(), reduction="batchmean")

    assert F.kl_div is ORIGINAL.kl_div
    with pytest.raises(kl_guard.KLGuardError):
        step()
    assert F.kl_div is ORIGINAL.kl_div


def test_guard_start_stop_and_reuse() -> None:
    g = kl_guard.guard(mode="log", check_every=1)
    g.start()
    with pytest.raises(RuntimeError, match="already active"):
        g.start()
    F.kl_div(*probs_input(), reduction="batchmean")
    g.stop()
    g.stop()  # a no-op
    assert F.kl_div is ORIGINAL.kl_div
    assert [(f.code, f.count) for f in g.findings] == [("KLG003", 1), ("KLG004", 1)]
    with g:  # reused: a fresh record, the same settings
        assert F.kl_div is not ORIGINAL.kl_div
        F.kl_div(*good(), reduction="batchmean")
    assert g.findings == []
    assert F.kl_div is ORIGINAL.kl_div


def test_a_new_schedule_applies_from_the_next_call() -> None:
    def misuse(calls: int) -> None:
        for _ in range(calls):
            F.kl_div(*probs_input(), reduction="batchmean")

    kl_guard.install(mode="log")
    misuse(20)  # past the warmup: the next check would be call 32
    kl_guard.install(mode="log", check_every=1)
    misuse(3)
    assert kl_guard.findings()[0].count == 9 + 3
    kl_guard.install(mode="log", check_every=1, sample_rows=16)  # the same schedule
    misuse(1)
    assert kl_guard.findings()[0].count == 9 + 4


@pytest.mark.parametrize("start", ["install", "guard"])
def test_a_torch_below_the_floor_is_refused_in_one_line(
    start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_compat, "TORCH_VERSION", "2.4.1+cu121")
    with pytest.raises(RuntimeError) as refused:
        if start == "install":
            kl_guard.install()
        else:
            kl_guard.guard().start()
    assert str(refused.value) == "kl_guard supports torch 2.6 and newer; this is torch 2.4.1+cu121."
    assert not kl_guard.is_active()
    assert F.kl_div is ORIGINAL.kl_div


def test_the_oldest_supported_torch_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "TORCH_VERSION", "2.6.0")
    kl_guard.install()
    assert kl_guard.is_active()


def test_counts_say_what_each_layer_saw() -> None:
    loss = nn.KLDivLoss(reduction="batchmean")
    kl_guard.install(mode="log", warmup=2, max_interval=4)
    with kl_guard.guard() as outer:
        for _ in range(10):
            F.kl_div(*good(), reduction="batchmean")
            loss(*good())  # the F.kl_div inside the module is not counted again
        with kl_guard.guard(check_every=1) as inner:
            F.kl_div(*good(), reduction="batchmean")
        assert inner.counts == kl_guard.Counts(seen=1, checked=1)
        # calls 1, 2, 4 and 8 of each of the two sites are checked
        assert outer.counts == kl_guard.Counts(seen=21, checked=2 * 4 + 1)
    assert kl_guard.counts() == outer.counts  # the guard's calls are install()'s too
    kl_guard.install(mode="log", check_every=3)  # a new schedule keeps the counts
    F.kl_div(*good(), reduction="batchmean")
    assert kl_guard.counts().seen == 22
    kl_guard.uninstall()
    assert kl_guard.counts() == kl_guard.Counts()

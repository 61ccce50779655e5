"""install(), uninstall() and guard(): the patch, the modes, the findings record."""

from __future__ import annotations

import logging
import sys
import warnings
from types import FrameType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import kl_guard
from helpers import logits
from kl_guard import _calls

ORIGINAL_KL_DIV = F.kl_div
ORIGINAL_FORWARD = nn.KLDivLoss.forward


def good() -> tuple[torch.Tensor, torch.Tensor]:
    return F.log_softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)


def probs_input() -> tuple[torch.Tensor, torch.Tensor]:
    return F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)


def test_install_patches_and_uninstall_restores_the_originals() -> None:
    kl_guard.install()
    assert F.kl_div is not ORIGINAL_KL_DIV
    assert nn.KLDivLoss.forward is not ORIGINAL_FORWARD
    assert torch.nn.functional.kl_div.__wrapped__ is ORIGINAL_KL_DIV  # type: ignore[attr-defined]
    kl_guard.uninstall()
    assert F.kl_div is ORIGINAL_KL_DIV
    assert nn.KLDivLoss.forward is ORIGINAL_FORWARD


def test_install_is_idempotent_and_updates_options() -> None:
    kl_guard.install()
    patched = F.kl_div
    kl_guard.install(mode="raise")
    assert F.kl_div is patched
    with pytest.raises(kl_guard.KLGuardError):
        F.kl_div(*probs_input(), reduction="batchmean")
    kl_guard.uninstall()
    kl_guard.uninstall()  # a no-op
    assert F.kl_div is ORIGINAL_KL_DIV


def test_uninstall_when_never_installed_is_a_no_op() -> None:
    kl_guard.uninstall()
    assert F.kl_div is ORIGINAL_KL_DIV


def test_warning_points_at_the_users_line() -> None:
    kl_guard.install()
    with pytest.warns(kl_guard.KLGuardWarning) as record:
        F.kl_div(*probs_input(), reduction="batchmean")  # warns here
    [warning] = [w for w in record if issubclass(w.category, kl_guard.KLG003Warning)]
    assert warning.filename == __file__
    assert warning.lineno == test_warning_points_at_the_users_line.__code__.co_firstlineno + 3
    assert str(warning.message).splitlines()[-1].endswith(f"test_patching.py:{warning.lineno}")


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


def test_warn_mode_deduplicates_per_site_and_code() -> None:
    kl_guard.install(check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            F.kl_div(*probs_input(), reduction="batchmean")
    assert sorted(w.category.__name__ for w in record) == ["KLG003Warning", "KLG004Warning"]
    assert [(f.code, f.count) for f in kl_guard.findings()] == [("KLG003", 5), ("KLG004", 5)]


def test_raise_mode_raises_from_the_users_call_every_time() -> None:
    kl_guard.install(mode="raise")
    for _ in range(2):
        with pytest.raises(kl_guard.KLGuardError) as info:
            F.kl_div(*probs_input(), reduction="batchmean")
        assert [f.code for f in info.value.findings] == ["KLG003", "KLG004"]
        assert "KLG003: input to kl_div looks like probabilities" in str(info.value)


def test_log_mode_uses_the_kl_guard_logger(caplog: pytest.LogCaptureFixture) -> None:
    kl_guard.install(mode="log")
    with caplog.at_level(logging.WARNING, logger="kl_guard"):
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [r.name for r in caplog.records] == ["kl_guard", "kl_guard"]
    assert caplog.records[0].getMessage().startswith("KLG003: ")


def test_off_mode_checks_nothing() -> None:
    kl_guard.install(mode="off")
    F.kl_div(*probs_input(), reduction="batchmean")
    assert kl_guard.findings() == []


def test_env_var_sets_the_default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "raise")
    kl_guard.install()
    with pytest.raises(kl_guard.KLGuardError):
        F.kl_div(*probs_input(), reduction="batchmean")


def test_select_and_ignore() -> None:
    kl_guard.install(mode="raise", ignore=["KLG004"])
    with pytest.raises(kl_guard.KLGuardError) as info:
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [f.code for f in info.value.findings] == ["KLG003"]
    kl_guard.install(select="KLG001")
    F.kl_div(*probs_input(), reduction="batchmean")  # KLG003 is not selected
    with pytest.raises(kl_guard.KLGuardError, match="KLG001"):
        F.kl_div(*good())


def test_guard_as_context_manager_nests_and_restores() -> None:
    with kl_guard.guard() as outer:
        patched = F.kl_div
        with kl_guard.guard(mode="raise") as inner, pytest.raises(kl_guard.KLGuardError):
            F.kl_div(*probs_input(), reduction="batchmean")
        assert F.kl_div is patched
        with pytest.warns(kl_guard.KLGuardWarning):
            F.kl_div(*probs_input(), reduction="batchmean")
    assert F.kl_div is ORIGINAL_KL_DIV
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
            F.kl_div(*good())
    assert [(f.code, f.count) for f in g.findings] == [("KLG001", 100)]
    assert g.findings[0].location.endswith(
        f"test_patching.py:{g.findings[0].location.split(':')[-1]}"
    )


def test_guard_as_decorator() -> None:
    @kl_guard.guard(mode="raise")
    def step() -> torch.Tensor:
        return F.kl_div(*probs_input(), reduction="batchmean")

    assert F.kl_div is ORIGINAL_KL_DIV
    with pytest.raises(kl_guard.KLGuardError):
        step()
    assert F.kl_div is ORIGINAL_KL_DIV


def test_guard_start_stop_and_reuse() -> None:
    g = kl_guard.guard(mode="raise")
    g.start()
    with pytest.raises(RuntimeError, match="already active"):
        g.start()
    g.stop()
    g.stop()  # a no-op
    assert F.kl_div is ORIGINAL_KL_DIV


def test_torch_mean_warning_is_replaced_while_active_and_back_after() -> None:
    kl_guard.install()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.kl_div(*good())
    assert [w.category for w in record] == [kl_guard.KLG001Warning]
    kl_guard.uninstall()
    with pytest.warns(
        UserWarning, match="reduction: 'mean' divides the total loss"
    ) as torch_warning:
        F.kl_div(*good())
    assert "torch" in torch_warning[0].filename or torch_warning[0].filename == __file__


@pytest.mark.parametrize(
    "extra",
    [((), {}), ((), {"reduction": "mean"}), ((None, None, "mean"), {})],
    ids=["default", "keyword", "positional"],
)
def test_torch_mean_warning_stays_replaced_past_the_checked_calls(
    extra: tuple[tuple[Any, ...], dict[str, Any]],
) -> None:
    """A call the policy lets through goes from wrapt's C code straight to
    torch, where torch's warning would point at the user's line: a 'mean'
    call keeps passing through the wrapper, whose frame the filter matches."""
    args, kwargs = extra
    kl_guard.install(mode="log")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(100):
            F.kl_div(*good(), *args, **kwargs)
    assert record == []
    assert kl_guard.findings()[0].count == 11


def test_torch_mean_warning_stays_replaced_for_modules_and_lines_that_switch() -> None:
    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss()  # reduction='mean' by default
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(50):
            criterion(*good())
        for reduction in ["batchmean", "mean"] * 50:  # one line, both reductions
            F.kl_div(*good(), reduction=reduction)
    assert record == []
    assert [f.code for f in kl_guard.findings()] == ["KLG001", "KLG001"]


def test_a_line_where_torch_warned_keeps_the_wrapper_whatever_its_next_call() -> None:
    """The line takes turns with another, so each call finds its site anew:
    once torch has warned there, its fast path stays in the wrapper."""
    kl_guard.install(mode="log")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(200):
            for reduction in ("batchmean", "mean"):
                F.kl_div(*good(), reduction=reduction)
            F.kl_div(*good(), reduction="sum")
    assert record == []


def test_a_module_inside_another_modules_call_keeps_torch_warning_replaced() -> None:
    """User code can run inside a module's call (a mode's ``__torch_function__``):
    a 'mean' module there must not inherit the outer module's quiet mark."""
    reference = nn.KLDivLoss()  # 'mean'

    class Reference(TorchFunctionMode):
        def __torch_function__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            if func is F.kl_div and (kwargs or {}).get("reduction") == "batchmean":
                with torch._C.DisableTorchFunction():
                    reference(*args[:2])  # before the outer module's F.kl_div
            return func(*args, **(kwargs or {}))

    kl_guard.install(mode="log")
    criterion = nn.KLDivLoss(reduction="batchmean")
    with warnings.catch_warnings(record=True) as record, Reference():
        warnings.simplefilter("always")
        for _ in range(20):
            criterion(*probs_input())
    assert record == []
    # the outer module's calls, counted once each at one line (checks 1-8, 16);
    # the reference inside its call is not counted (see _call_busy)
    assert [(f.code, f.count) for f in kl_guard.findings() if f.code == "KLG003"] == [("KLG003", 9)]


def test_a_line_that_turns_to_mean_late_never_shows_torch_warning() -> None:
    """Calls let through run torch from kl_guard's frame too, where the filter
    that KLG001 replaces torch's warning with matches."""
    kl_guard.install(mode="log")
    leaked: list[int] = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for call in range(1, 101):
            F.kl_div(*good(), reduction="batchmean" if call <= 20 else "mean")
            leaked += [call] * len(record)
            record.clear()
    assert leaked == []


def test_calls_the_policy_lets_through_never_reach_the_scheduled_path() -> None:
    """A repeat call from the latest site is let through by the wrapper's fast
    path, with no frame walk, site look-up or schedule."""
    reached: list[bool] = []  # per call of _scheduled_call: whether for F.kl_div

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is _calls._scheduled_call.__code__:
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


def test_cached_reference_keeps_the_original() -> None:
    from torch.nn.functional import kl_div as cached

    kl_guard.install(mode="raise")
    cached(*probs_input(), reduction="batchmean")  # no error: documented limit


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


def test_check_every() -> None:
    kl_guard.install(mode="log", check_every=10)
    for _ in range(100):
        F.kl_div(*good())
    assert kl_guard.findings()[0].count == 10

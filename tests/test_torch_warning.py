"""torch's own 'mean' warning: replaced by KLG001 while kl_guard is active, back after."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import kl_guard
from helpers import good, probs_input


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


@pytest.mark.parametrize("api", ["function", "module"])
def test_a_0d_input_keeps_torchs_warning_as_kl_guard_says_nothing_of_it(api: str) -> None:
    """A 0-d call cannot be judged: torch's own 'mean' warning is not swallowed."""
    inp, tgt = torch.tensor(-0.5), torch.tensor(0.6)
    kl_guard.install(check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            if api == "function":
                F.kl_div(inp, tgt)
            else:
                nn.KLDivLoss()(inp, tgt)
    assert [w.category for w in record] == [UserWarning] * 3
    assert all("divides the total loss" in str(w.message) for w in record)
    assert kl_guard.findings() == []

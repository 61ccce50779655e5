"""Another wrapt patch on the same entry points, before or after kl_guard.

Whatever the order of patching and unpatching, the other patch keeps
working, kl_guard checks each call exactly once while installed and not at
all after, and a re-install does not check twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import wrapt
from torch import nn

import kl_guard
from helpers import logits
from kl_guard import _compat

TARGETS = [
    ("torch.nn.functional", "kl_div"),
    ("torch.nn.modules.loss", "KLDivLoss.forward"),
]


@pytest.fixture(autouse=True)
def _pristine_entry_points() -> Iterator[None]:
    """Put the originals back: a switched-off kl_guard wrapper may be left in place."""
    saved = [wrapt.resolve_path(module, name) for module, name in TARGETS]
    yield
    for owner, attribute, original in saved:
        setattr(owner, attribute, original)


class OtherPatch:
    """A typical third-party patch: wrap, then later put back what it found."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self.calls = 0

    def _count(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        self.calls += 1
        return wrapped(*args, **kwargs)

    def apply(self) -> OtherPatch:
        self.owner, self.attribute, self.found = wrapt.resolve_path(self.module, self.name)
        wrapt.apply_patch(
            self.owner, self.attribute, wrapt.FunctionWrapper(self.found, self._count)
        )
        return self

    def remove(self) -> None:
        setattr(self.owner, self.attribute, self.found)


def call(name: str) -> torch.Tensor:
    inp, tgt = F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)  # KLG003
    if name == "kl_div":
        return F.kl_div(inp, tgt, reduction="batchmean")
    loss: torch.Tensor = nn.KLDivLoss(reduction="batchmean")(inp, tgt)
    return loss


def checks() -> int:
    return sum(f.count for f in kl_guard.findings() if f.code == "KLG003")


def expect(name: str, other: OtherPatch | None, *, checked: bool) -> None:
    """One call: the other patch sees it if applied; kl_guard checks it once if installed."""
    before_other, before_checks = other.calls if other else 0, checks()
    # the op as torch defines it: a call of torch.kl_div is checked while installed
    op = _compat.KL_DIV_OP
    expected = op(F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1), 2) / 8
    assert torch.equal(call(name), expected)
    if other is not None:
        assert other.calls == before_other + 1
    assert checks() == before_checks + checked


@pytest.mark.parametrize(("module", "name"), TARGETS, ids=["functional", "module"])
@pytest.mark.parametrize("kl_guard_first", [True, False], ids=["kl_guard-first", "other-first"])
@pytest.mark.parametrize(
    "remove_kl_guard_first", [True, False], ids=["unpatch-kl_guard", "unpatch-other"]
)
def test_other_patch_keeps_working_in_any_order(
    module: str, name: str, kl_guard_first: bool, remove_kl_guard_first: bool
) -> None:
    short = name.split(".")[-1]
    owner, attribute, pristine = wrapt.resolve_path(module, name)
    other = OtherPatch(module, name)
    if kl_guard_first:
        kl_guard.install(mode="log", check_every=1)
        other.apply()
    else:
        other.apply()
        kl_guard.install(mode="log", check_every=1)
    expect(short, other, checked=True)

    if remove_kl_guard_first:
        kl_guard.uninstall()
        expect(short, other, checked=False)
        other.remove()
        expect(short, None, checked=False)
    else:
        other.remove()
        kl_guard.uninstall()
        expect(short, None, checked=False)
    # Clean unless kl_guard went first and was removed first: then its
    # wrapper stays inside the other's chain, switched off.
    current = vars(owner)[attribute]
    assert (current is pristine) is not (kl_guard_first and remove_kl_guard_first)
    assert getattr(current, "__wrapped__", current) is pristine


@pytest.mark.parametrize(("module", "name"), TARGETS, ids=["functional", "module"])
def test_reinstall_under_a_left_over_wrapper_checks_once(module: str, name: str) -> None:
    short = name.split(".")[-1]
    kl_guard.install(mode="log", check_every=1)
    other = OtherPatch(module, name).apply()
    kl_guard.uninstall()  # ours stays inside the other patch, switched off
    assert isinstance(other.found, wrapt.FunctionWrapper)
    enabled = other.found._self_enabled  # wrapt calls it if it can, else takes its truth
    assert not (enabled() if callable(enabled) else enabled)
    kl_guard.install(mode="log", check_every=1)  # a new wrapper around the other's
    for _ in range(3):
        expect(short, other, checked=True)
    kl_guard.uninstall()
    expect(short, other, checked=False)
    other.remove()

"""The losses patched follow the layers, and a reference taken while patched stays checked."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from kl_guard import _deferred
from kl_guard._patch import PATCH


def test_a_reference_taken_while_patched_stays_checked_after_a_guard_patches_more() -> None:
    """A guard that patches another loss must not switch off the wrappers already on:
    a reference held outside module globals would call torch unchecked ever after."""
    probs = torch.softmax(torch.randn(16, 5), 1)
    y = torch.randint(0, 5, (16,))
    kl_guard.install(mode="log", check_every=1, select="KLG010")
    criterion = functools.partial(F.cross_entropy, ignore_index=-100)
    kl_div = functools.partial(F.kl_div, reduction="batchmean")
    with kl_guard.guard(mode="log", check_every=1, select="KLG014"):  # patches BCE too
        pass
    assert [c.name for c in PATCH.losses] == [
        "kl_div",
        "cross_entropy",
        "binary_cross_entropy_with_logits",
    ]
    criterion(probs, y)
    kl_div(probs.log(), probs)
    assert kl_guard.counts().seen == 2
    assert [f.code for f in kl_guard.findings()] == ["KLG010"]


def test_a_loss_patched_by_a_guard_stays_patched_until_the_last_layer_ends() -> None:
    kl_guard.install(ignore="cross_entropy,nll_loss,binary_cross_entropy_with_logits")
    assert [c.name for c in PATCH.losses] == ["kl_div"]
    with kl_guard.guard(select="KLG011", ignore=()):  # an inherited ignore would win
        assert "nll_loss" in [c.name for c in PATCH.losses]
    assert "nll_loss" in [c.name for c in PATCH.losses]
    kl_guard.uninstall()
    assert PATCH.losses == ()
    assert F.nll_loss is torch.nn.functional.nll_loss and not hasattr(F.nll_loss, "__wrapped__")


def test_loss_names_select_whatever_their_case() -> None:
    kl_guard.install(ignore="Cross_Entropy")
    assert "cross_entropy" not in [c.name for c in PATCH.losses]


def test_a_deferred_check_reads_other_dims_only_where_the_class_dim_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deferred, every dim is measured at once; a correct nll_loss whose class dim is
    normalized is not judged over the others ([B, C, T] with C == T, near-uniform)."""
    monkeypatch.setattr(_deferred.SWITCHES, "on_cpu", True)
    kl_guard.install(mode="warn", check_every=1)
    logits = torch.randn(8, 64, 64) * 0.01
    F.nll_loss(F.log_softmax(logits, 1), torch.randint(0, 64, (8, 64)))
    kl_guard.flush()
    assert kl_guard.findings() == []


def test_torch_jit_trace_records_no_check() -> None:
    """A check while torch.jit.trace records would put kl_guard's kernels in the graph
    (and ``full_like`` of a bool failed its alias analysis): the trace is let through."""
    kl_guard.install(check_every=1)
    with warnings.catch_warnings():
        # torch.jit.trace's deprecation (2.13+), and torch's own TracerWarnings
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            lambda z, t: F.binary_cross_entropy_with_logits(z, t),
            (torch.randn(8, 3), torch.zeros(8, 3)),
            check_trace=False,
        )
    assert str(traced.graph).count("aten::") <= 4  # torch's loss alone, none of kl_guard's
    assert kl_guard.counts().checked == 0

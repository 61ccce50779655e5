"""Deferred read-back (the CUDA path in warn and log modes), exercised on CPU tensors."""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from helpers import active_view, logits, marked_line, probs_input
from kl_guard import _check, _deferred


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_deferred.SWITCHES, "on_cpu", True)
    yield
    kl_guard.flush()


def test_finding_waits_for_a_later_call_and_keeps_its_line(deferred: None) -> None:
    kl_guard.install(check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.kl_div(*probs_input(), reduction="batchmean")  # the deferred misuse
        misuse_line = marked_line(__file__, "the deferred misuse")
        assert record == []  # nothing read back yet
        assert _deferred.pending() == 1
        F.kl_div(F.log_softmax(logits(8, 5), 1), F.softmax(logits(8, 5), 1), reduction="sum")
    assert sorted(w.category.__name__ for w in record) == ["KLG003Warning", "KLG004Warning"]
    assert {(w.filename, w.lineno) for w in record} == {(__file__, misuse_line)}


def test_flush_and_guard_exit_report_what_is_pending(deferred: None) -> None:
    with kl_guard.guard(mode="log", check_every=1) as g:
        F.kl_div(*probs_input(), reduction="batchmean")
        assert _deferred.pending() == 1
    assert _deferred.pending() == 0
    assert [f.code for f in g.findings] == ["KLG003", "KLG004"]

    kl_guard.install(mode="log", check_every=1)
    F.kl_div(*probs_input(), reduction="batchmean")
    kl_guard.flush()
    assert [f.code for f in kl_guard.findings()] == ["KLG003", "KLG004"]


def test_pending_checks_hold_no_user_tensor(deferred: None) -> None:
    kl_guard.install(mode="log", check_every=1)
    inp, tgt = probs_input()
    refs = [weakref.ref(inp), weakref.ref(tgt)]
    loss = F.kl_div(inp, tgt, reduction="batchmean")
    refs.append(weakref.ref(loss))
    del inp, tgt, loss
    gc.collect()
    assert _deferred.pending() == 1
    assert [r() for r in refs] == [None, None, None]
    kl_guard.flush()
    assert [f.code for f in kl_guard.findings()] == ["KLG003", "KLG004"]


def test_pending_queue_is_bounded(deferred: None) -> None:
    kl_guard.install(mode="log", check_every=1)
    view = active_view()
    inp, tgt = probs_input()
    call = _check.describe(inp, tgt, api="function", reduction="batchmean")
    assert call is not None
    for _ in range(3 * _deferred.LIMIT):
        # _defer alone, without the calls that would drain the queue as they go
        measurement = _check.measure(call, inp, tgt, None, sample_rows=8)
        _deferred.defer(measurement, view.config, view.records, None)
        assert _deferred.pending() <= _deferred.LIMIT
    kl_guard.flush()
    assert [(f.code, f.count) for f in kl_guard.findings()] == [("KLG003", 3 * _deferred.LIMIT)]


def test_deferred_path_measures_every_dim_at_once(deferred: None) -> None:
    # no second read-back is possible when deferred: KLG006 must still be told apart
    kl_guard.install(mode="log", check_every=1)
    F.kl_div(
        F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 0), reduction="sum"
    )
    kl_guard.flush()
    assert [f.code for f in kl_guard.findings()] == ["KLG006"]


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@requires_cuda
@pytest.mark.parametrize("mode", ["warn", "log"])
def test_cuda_checks_make_no_host_device_synchronization(mode: str) -> None:
    device = torch.device("cuda")
    s = torch.randn(64, 1000, device=device)
    t = torch.randn(64, 1000, device=device)
    kl_guard.install(mode=mode, check_every=1)
    good = (F.log_softmax(s, 1), F.softmax(t, 1))
    bad = (F.softmax(s, 1), F.softmax(t, 1))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kl_guard.KLGuardWarning)
            for _ in range(20):
                F.kl_div(*good, reduction="batchmean")
                F.kl_div(*bad, reduction="batchmean")
                torch.nn.KLDivLoss(reduction="batchmean")(*good)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    kl_guard.flush()
    assert {f.code for f in kl_guard.findings()} == {"KLG003", "KLG004"}

"""kl_guard must never change a result, swallow torch's errors, keep tensors alive or crash."""

from __future__ import annotations

import gc
import logging
import threading
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import logits, rounds
from kl_guard import _check


def step(inp_logits: torch.Tensor, tgt: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, ...]:
    x = inp_logits.clone().requires_grad_()
    loss = F.kl_div(F.log_softmax(x, 1), tgt, **kwargs)  # type: ignore[arg-type]
    loss.sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None
    return loss.detach(), x.grad


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction": "batchmean"},
        {"reduction": "none"},
        {"reduction": "sum", "log_target": True},
    ],
)
@pytest.mark.parametrize("bad_target", [False, True])
def test_results_and_gradients_are_bit_identical(
    kwargs: dict[str, object], bad_target: bool
) -> None:
    x = logits(32, 100)
    tgt = F.softmax(logits(32, 100, seed=1), 1)
    if kwargs.get("log_target"):
        tgt = tgt.log()
    if bad_target:
        tgt = tgt * 3
    baseline = step(x, tgt, **kwargs)
    kl_guard.install(mode="log", check_every=1)
    guarded = step(x, tgt, **kwargs)
    for a, b in zip(baseline, guarded, strict=False):
        assert torch.equal(a, b) or (a.isnan().any() and torch.equal(a.isnan(), b.isnan()))


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((torch.zeros(3, 4), torch.zeros(3, 5)), {"reduction": "sum"}, RuntimeError),
        ((torch.zeros(3, 4), torch.zeros(3, 4)), {"reduction": "avg"}, ValueError),
        ((torch.zeros(3, 4), "x"), {"reduction": "sum"}, TypeError),
    ],
    ids=["shapes", "reduction", "type"],
)
def test_torch_errors_pass_through_unchanged(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error) as expected:
        F.kl_div(*args, **kwargs)  # type: ignore[arg-type]
    kl_guard.install(mode="raise", check_every=1)
    with pytest.raises(error) as actual:
        F.kl_div(*args, **kwargs)  # type: ignore[arg-type]
    assert type(actual.value) is type(expected.value)
    assert str(actual.value) == str(expected.value)


def test_no_tensor_is_kept_alive() -> None:
    kl_guard.install(mode="log", check_every=1)
    inp = F.log_softmax(logits(16, 10), 1)
    tgt = F.softmax(logits(16, 10, seed=1), 1) * 2  # a misuse, so a finding is recorded
    refs = [weakref.ref(inp), weakref.ref(tgt)]
    loss = F.kl_div(inp, tgt, reduction="batchmean")
    loss_ref = weakref.ref(loss)
    nn.KLDivLoss(reduction="batchmean")(inp, tgt)
    del inp, tgt, loss
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert loss_ref() is None
    assert {f.code for f in kl_guard.findings()} == {"KLG007"}


def test_internal_error_never_reaches_the_user(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("injected")

    monkeypatch.setattr(_check, "examine", broken)
    kl_guard.install(mode="raise", check_every=1)
    inp, tgt = F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)
    expected = torch.kl_div(inp, tgt, 2) / 8
    with caplog.at_level(logging.ERROR, logger="kl_guard"):
        for _ in range(3):
            assert torch.equal(F.kl_div(inp, tgt, reduction="batchmean"), expected)
    [record] = caplog.records
    assert "kl_guard failed while checking a loss call" in record.getMessage()
    assert "injected" in record.getMessage()


def test_threads_calling_while_another_installs_and_uninstalls() -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    inp, tgt = F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)
    expected = F.kl_div(inp, tgt, reduction="batchmean")

    def caller() -> None:
        try:
            while not stop.is_set():
                assert torch.equal(F.kl_div(inp, tgt, reduction="batchmean"), expected)
                nn.KLDivLoss(reduction="batchmean")(inp, tgt)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(rounds(200)):
        kl_guard.install(check_every=1)
        with kl_guard.guard(mode="log"):
            pass
        kl_guard.uninstall()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert not kl_guard.is_active()
    assert not hasattr(F.kl_div, "__wrapped__")
    assert nn.KLDivLoss.forward.__qualname__ == "KLDivLoss.forward"

"""torch.compile under the guard: no added graph breaks, and findings still reported."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import latest_site, logits, marked_line
from kl_guard import _calls, _compat

LOSS = nn.KLDivLoss(reduction="batchmean")


def functional(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")


def module(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    loss: torch.Tensor = LOSS(F.log_softmax(s, 1), F.softmax(t, 1))
    return loss


def mean_reduction(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


# torch's own 'mean' warning in the unguarded baseline
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("fn", [functional, module, mean_reduction], ids=lambda f: f.__name__)
def test_no_graph_break_is_added(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    args = (logits(4, 5), logits(4, 5, seed=1))
    plain = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    kl_guard.install(mode="log", check_every=1)
    guarded = torch._dynamo.explain(fn)(*args)
    assert guarded.graph_break_count == plain.graph_break_count == 0
    assert guarded.graph_count == plain.graph_count == 1


def test_eager_backend_checks_at_run_time_at_the_callers_line() -> None:
    kl_guard.install(mode="log", check_every=1)
    compiled = torch.compile(mean_reduction, backend="eager")
    s, t = logits(4, 5), logits(4, 5, seed=1)
    expected = torch.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), 1)
    for _ in range(3):
        assert torch.equal(compiled(s, t), expected)  # calls the eager-compiled function
    line = marked_line(__file__, "calls the eager-compiled function")
    # once while dynamo traces (fake tensors), then at each of the 3 runs
    assert [(f.code, f.location, f.count) for f in kl_guard.findings()] == [
        ("KLG001", f"tests/test_compile.py:{line}", 4)
    ]


FLAGS = ["torch's", "fallback", "unset"]


def use_compiling_flag(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for another torch. "fallback": its torch.compiler has no flag,
    only ``is_compiling()``; "unset": its torch.compile does not set the flag
    (before 2.13), and only the fake-tensor mode of a tracing pass tells."""
    if flag == "torch's":
        return
    monkeypatch.setattr(_compat, "_has_flag", False)
    if flag == "unset":
        monkeypatch.setattr(_compat, "_is_compiling", lambda: False)
    monkeypatch.setattr(_calls, "_compiler", _compat._CompilingFlag())


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_raise_mode_never_raises_inside_the_compiler(
    backend: str, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing passes warn; only a call at run time (the eager backend's graph
    calls F.kl_div) raises, as the user's error."""
    use_compiling_flag(flag, monkeypatch)
    kl_guard.install(mode="raise", check_every=1)
    compiled = torch.compile(mean_reduction, backend=backend)
    s, t = logits(4, 5), logits(4, 5, seed=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if backend == "eager":
            with pytest.raises(kl_guard.KLGuardError):
                compiled(s, t)
        else:
            compiled(s, t)
    assert [w.category for w in record] == [kl_guard.KLG001Warning]


@pytest.mark.slow
# A cold cache runs more tracing passes (AOTAutograd through generated "<string>" code)
@pytest.mark.parametrize("caches", ["warm", "disabled"])
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_inductor_reports_argument_findings_when_it_traces(caches: str) -> None:
    kl_guard.install(mode="raise", check_every=1)
    compiled = torch.compile(mean_reduction, backend="inductor")
    s, t = logits(4, 5), logits(4, 5, seed=1)
    expected = torch.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), 1)
    # raise mode warns at trace time: an error inside the compiler would be the compiler's
    with (
        torch._inductor.config.patch(force_disable_caches=caches == "disabled"),
        pytest.warns(kl_guard.KLG001Warning) as record,
    ):
        result = compiled(s, t)  # calls the inductor-compiled function
    torch.testing.assert_close(result, expected)
    line = marked_line(__file__, "calls the inductor-compiled function")
    found = [w for w in record if issubclass(w.category, kl_guard.KLGuardWarning)]
    assert [(w.filename, w.lineno) for w in found] == [(__file__, line)]
    compiled(s, t)  # compiled code does not call back into kl_guard
    assert [(f.code, f.count) for f in kl_guard.findings()] == [("KLG001", 1)]
    counts = kl_guard.counts()  # each tracing pass that ran the call, none checked
    assert counts.checked == 0 and counts.traced >= 1 and counts.seen == counts.traced


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("reduction", ["batchmean", "mean"])
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # in export's trace
def test_an_export_trace_is_not_counted_as_an_eager_call(
    flag: str, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.export runs the user's line again on fake tensors: the same line
    as the eager calls, which the fast path must not count."""
    use_compiling_flag(flag, monkeypatch)

    class Misuse(nn.Module):
        def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.softmax(s, 1), F.softmax(t, 1), reduction=reduction)

    model, s, t = Misuse(), logits(8, 5), logits(8, 5, seed=1)
    kl_guard.install(mode="log", check_every=3)
    model(s, t)  # call 1: checked
    schedule = latest_site()
    torch.export.export(model, (s, t))
    assert latest_site() == schedule
    model(s, t)
    model(s, t)  # calls 2 and 3: not checked, unless the export counted as one
    [finding] = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert finding.count == 1
    counts = kl_guard.counts()
    assert (counts.seen - counts.traced, counts.checked) == (3, 1) and counts.traced >= 1


def test_eager_backend_keeps_torch_mean_warning_replaced() -> None:
    """Both calls in the graph come from one line of the user's (the call of
    the compiled function), and only one of them is 'mean'."""

    def two_losses(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_p, q = F.log_softmax(s, 1), F.softmax(t, 1)
        return F.kl_div(log_p, q, reduction="batchmean") + F.kl_div(log_p, q)

    kl_guard.install(mode="log")
    compiled = torch.compile(two_losses, backend="eager")
    s, t = logits(4, 5), logits(4, 5, seed=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(40):
            compiled(s, t)
    assert [str(w.message) for w in record if "divides the total loss" in str(w.message)] == []
    assert [f.code for f in kl_guard.findings()] == ["KLG001"]

"""torch.compile under the guard: checked in the graph, at the kl_div line, no graph break."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import latest_site, logits, marked_line
from kl_guard import _compat, _compat_compile, _deferred, _percall

LOSS = nn.KLDivLoss(reduction="batchmean")
BACKENDS = ["eager", "aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]


def functional(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")


def module(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    loss: torch.Tensor = LOSS(F.log_softmax(s, 1), F.softmax(t, 1))
    return loss


def mean_reduction(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))  # mean reduction


def planted(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A distillation step's losses, three of them wrong, one right."""
    log_p, log_q, q = F.log_softmax(s, 1), F.log_softmax(t, 1), F.softmax(t, 1)
    loss = F.kl_div(log_p, log_q, reduction="batchmean")  # KLG002 planted
    loss = loss + F.kl_div(s, q, reduction="batchmean")  # KLG003 planted
    loss = loss + F.kl_div(F.softmax(s * 100, 1).log(), q, reduction="sum")  # KLG004 planted
    return loss + F.kl_div(log_p, q, reduction="batchmean")  # correct


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def _lines(findings: list[kl_guard.Finding]) -> set[tuple[str, int]]:
    return {(f.code, int(f.location.rsplit(":", 1)[1])) for f in findings}


def _line(marker: str) -> int:
    return marked_line(__file__, marker)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compiled_train_step_is_checked_at_each_kl_div_line(backend: str) -> None:
    s = logits(8, 6, seed=2).requires_grad_()
    t = logits(8, 6, seed=3)
    with kl_guard.guard(mode="log", check_every=1) as block:
        planted(s, t).backward()  # type: ignore[no-untyped-call]
    eager = _lines(block.findings)
    assert {code for code, _ in eager} >= {"KLG002", "KLG003", "KLG004"}
    assert {line for _, line in eager} == {
        _line(f"{code} planted") for code in ("KLG002", "KLG003", "KLG004")
    }
    step = torch.compile(planted, backend=backend, fullgraph=True)
    with kl_guard.guard(mode="log", check_every=1) as block:
        for _ in range(3):
            step(s, t).backward()  # type: ignore[no-untyped-call]
    assert _lines(block.findings) == eager  # what eager finds, at the same lines
    assert {f.count for f in block.findings} == {3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_raise_mode_raises_from_the_compiled_call(backend: str) -> None:
    if backend == "inductor" and _compat.TORCH_VERSION.startswith("2.6."):
        pytest.skip("torch 2.6's inductor drops the recorder from graphs run without grad")
    step = torch.compile(planted, backend=backend, fullgraph=True)
    kl_guard.install(mode="raise")
    with pytest.raises(kl_guard.KLGuardError) as raised:
        step(logits(8, 6), logits(8, 6, seed=1))
    assert {(f.code, f.location) for f in raised.value.findings} == {
        ("KLG002", f"tests/test_compile.py:{_line('KLG002 planted')}"),
        ("KLG004", f"tests/test_compile.py:{_line('KLG002 planted')}"),  # the NaN it causes
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_correct_compiled_steps_stay_silent(backend: str) -> None:
    model = nn.Linear(6, 6)

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return functional(model(x), t) + module(model(x), t)

    compiled = torch.compile(step, backend=backend, fullgraph=True)
    kl_guard.install(mode="raise", check_every=1)
    for seed in range(3):
        loss = compiled(logits(8, 6, seed=seed), logits(8, 6, seed=seed + 1))
        loss.backward()  # type: ignore[no-untyped-call]
    assert kl_guard.findings() == []


def test_a_deferred_check_warns_at_the_kl_div_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path in warn mode, on CPU tensors: each call's numbers are read
    once they have landed (at the next checked call, or flush), and the
    warning names the kl_div line."""
    monkeypatch.setattr(_deferred.SWITCHES, "on_cpu", True)
    step = torch.compile(planted, backend="aot_eager", fullgraph=True)
    kl_guard.install(mode="warn", check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        step(logits(8, 6), logits(8, 6, seed=1))
        assert _deferred.pending() == 1  # the step's last call
        kl_guard.flush()
    assert {w.lineno for w in record} == {
        _line(f"{code} planted") for code in ("KLG002", "KLG003", "KLG004")
    }
    assert {w.filename for w in record} == {__file__}


class Distillation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(6, 6)
        self.loss = nn.KLDivLoss(reduction="batchmean")

    def forward(self, x: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        log_p, log_q = F.log_softmax(self.student(x), 1), F.log_softmax(teacher, 1)
        loss: torch.Tensor = self.loss(log_p, log_q)  # the module's loss
        return loss


def test_a_compiled_modules_forward_is_checked_at_its_loss_line() -> None:
    model = torch.compile(Distillation(), backend="aot_eager", fullgraph=True)
    kl_guard.install(mode="log", check_every=1)
    model(logits(8, 6), logits(8, 6, seed=1)).backward()
    [finding] = [f for f in kl_guard.findings() if f.code == "KLG002"]
    assert finding.location == f"tests/test_compile.py:{_line('the module' + chr(39) + 's loss')}"
    assert "nn.KLDivLoss(" in finding.message  # the module's fix, not F.kl_div's


def test_the_eager_backend_checks_at_the_kl_div_line_on_schedule() -> None:
    kl_guard.install(mode="log", check_every=2)
    compiled = torch.compile(mean_reduction, backend="eager")
    s, t = logits(4, 5), logits(4, 5, seed=1)
    # the op unpatched: a direct torch.kl_div call with 'mean' is a KLG001 of its own
    expected = _compat.KL_DIV_OP(F.log_softmax(s, 1), F.softmax(t, 1), 1)
    for _ in range(5):
        assert torch.equal(compiled(s, t), expected)
    # checked at runs 1, 3 and 5; nothing while dynamo traces
    assert [(f.code, f.location, f.count) for f in kl_guard.findings()] == [
        ("KLG001", f"tests/test_compile.py:{_line('mean reduction')}", 3)
    ]


def _compilations() -> dict[str, int]:
    counters = torch._dynamo.utils.counters
    return {
        "graphs": counters["stats"]["unique_graphs"],
        "breaks": sum(counters["graph_break"].values()),
    }


# torch's own 'mean' warning in the unguarded baseline
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("fn", [functional, module, mean_reduction], ids=lambda f: f.__name__)
def test_no_graph_break_or_recompile_is_added(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    args = (logits(4, 5), logits(4, 5, seed=1))
    plain = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    kl_guard.install(mode="log", check_every=1)
    guarded = torch._dynamo.explain(fn)(*args)
    assert guarded.graph_break_count == plain.graph_break_count == 0
    assert guarded.graph_count == plain.graph_count == 1
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(fn, backend="eager")
    for _ in range(4):
        compiled(*args)
    assert _compilations() == {"graphs": 1, "breaks": 0}  # no recompile


def test_installing_after_compiling_recompiles_once() -> None:
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(mean_reduction, backend="eager", fullgraph=True)
    s, t = logits(4, 5), logits(4, 5, seed=1)
    with pytest.warns(UserWarning, match="'mean' divides the total loss"):  # torch's own
        compiled(s, t)
    kl_guard.install(mode="log", check_every=1)
    compiled(s, t)
    assert [f.code for f in kl_guard.findings()] == ["KLG001"]
    kl_guard.install(mode="off")  # no view: the graph's recorder does nothing
    compiled(s, t)
    kl_guard.uninstall()
    with pytest.warns(UserWarning, match="'mean' divides the total loss"):
        compiled(s, t)
    # compiled at the first call and at install; uninstalled, the first graph serves again
    assert _compilations() == {"graphs": 2, "breaks": 0}


FLAGS = ["torch's", "fallback", "unset"]


def use_compiling_flag(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for another torch. "fallback": its torch.compiler has no flag,
    only ``is_compiling()``; "unset": its torch.compile does not set the flag
    (before 2.13), and only the fake-tensor mode of a tracing pass tells."""
    if flag == "torch's":
        return
    monkeypatch.setattr(_compat_compile, "_has_flag", False)
    if flag == "unset":
        monkeypatch.setattr(_compat_compile, "_is_compiling", lambda: False)
    monkeypatch.setattr(_percall, "_compiler", _compat_compile._CompilingFlag())


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_raise_mode_raises_from_the_compiled_call_never_inside_the_compiler(
    backend: str, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs after the graph: its KLGuardError is the user's, not wrapped
    in a compiler error, with torch's flag or either stand-in for an older torch."""
    use_compiling_flag(flag, monkeypatch)
    kl_guard.install(mode="raise", check_every=1)
    compiled = torch.compile(mean_reduction, backend=backend)
    s, t = logits(4, 5), logits(4, 5, seed=1)
    with pytest.raises(kl_guard.KLGuardError) as raised:
        compiled(s, t)
    assert type(raised.value) is kl_guard.KLGuardError
    assert [f.code for f in raised.value.findings] == ["KLG001"]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # in export's trace
def test_export_reports_argument_findings_at_the_kl_div_line() -> None:
    class Mean(nn.Module):
        def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))  # exported

    kl_guard.install(mode="raise")
    # raise mode warns at trace time: an error inside the exporter would be the exporter's
    with pytest.warns(kl_guard.KLG001Warning) as record:
        # non-strict, as torch 2.7 and newer export by default (2.6: strict)
        exported = torch.export.export(Mean(), (logits(4, 5), logits(4, 5, seed=1)), strict=False)
    assert [(w.filename, w.lineno) for w in record] == [(__file__, _line("exported"))]
    names = {str(node.target) for node in exported.graph.nodes}
    assert not any("kl_guard" in name for name in names)  # the export has no recorder


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
    torch.export.export(model, (s, t), strict=False)  # the default from torch 2.7
    assert latest_site() == schedule
    model(s, t)
    model(s, t)  # calls 2 and 3: not checked, unless the export counted as one
    [finding] = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert finding.count == 1
    counts = kl_guard.counts()
    assert (counts.seen - counts.traced, counts.checked) == (3, 1) and counts.traced >= 1


def test_eager_backend_keeps_torch_mean_warning_replaced() -> None:
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

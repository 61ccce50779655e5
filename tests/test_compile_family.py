"""torch.compile and torch.export of the loss family: checked in the graph, at the loss line."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import logits, marked_line
from kl_guard import _compat, _deferred

SMOOTHED = nn.CrossEntropyLoss(label_smoothing=0.1)
BCE = nn.BCEWithLogitsLoss()
Losses = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def correct(x: torch.Tensor, labels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    loss: torch.Tensor = F.cross_entropy(x, labels)
    loss = loss + SMOOTHED(x, labels)
    loss = loss + F.nll_loss(F.log_softmax(x, 1), labels)
    loss = loss + BCE(x, bits)
    return loss


def planted(x: torch.Tensor, labels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    loss: torch.Tensor = F.cross_entropy(F.softmax(x, 1), labels)  # KLG010 planted
    loss = loss + BCE(x, bits * 2 - 1)  # KLG014 planted
    return loss


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def _line(marker: str) -> int:
    return marked_line(__file__, marker)


def _batch(features: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = logits(16, features, seed=1)
    labels = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(2))
    return x, labels, (logits(16, 5, seed=3) > 0).float()


def _train(losses: Losses, backend: str | None, steps: int) -> list[tuple[str, str, int]]:
    """``steps`` steps of a small model trained on ``losses`` (compiled by
    ``backend``, eager for None) under the guard; the findings."""
    torch.manual_seed(0)
    model = nn.Linear(6, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x: torch.Tensor, labels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        return losses(3 * model(x), labels, bits)

    run = step if backend is None else torch.compile(step, backend=backend, fullgraph=True)
    with kl_guard.guard(mode="log", check_every=1) as block:
        for _ in range(steps):
            optimizer.zero_grad()
            run(*_batch()).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    assert block.counts.checked >= steps * (4 if losses is correct else 2)  # every call was checked
    return sorted((f.code, f.location, f.count) for f in block.findings)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("losses", [correct, planted], ids=lambda f: f.__name__)
def test_a_compiled_train_step_finds_what_eager_finds_at_the_loss_lines(
    losses: Losses, backend: str
) -> None:
    """fullgraph=True: a graph break would fail the compile."""
    eager = _train(losses, None, 1)
    compiled = _train(losses, backend, 3)
    assert [(code, location) for code, location, _ in compiled] == [
        (code, location) for code, location, _ in eager
    ]
    assert {count for _, _, count in compiled} <= {3}
    here = "tests/test_compile_family.py"
    expected = [] if losses is correct else [("KLG010", "planted"), ("KLG014", "planted")]
    assert [(code, location) for code, location, _ in compiled] == [
        (code, f"{here}:{_line(f'{code} {marker}')}") for code, marker in expected
    ]


class LanguageModel(nn.Module):
    """Next-token prediction: the loss inside forward, over [B*T, V], padding ignored."""

    def __init__(self, vocabulary: int = 11, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.head = nn.Linear(width, vocabulary)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.head(self.embed(tokens))
        return F.cross_entropy(out.view(-1, out.size(-1)), labels.view(-1), ignore_index=-100)


def test_a_language_model_step_is_silent_with_no_graph_break() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (4, 7), generator=g)
    labels = tokens.roll(-1, 1)
    labels[:, 5:] = -100  # padding
    model = LanguageModel()
    optimizer = torch.optim.AdamW(model.parameters())
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    kl_guard.install(mode="raise", check_every=1)
    for _ in range(3):
        optimizer.zero_grad()
        compiled(tokens, labels).backward()
        optimizer.step()
    assert kl_guard.findings() == []
    assert kl_guard.counts().checked == 3
    counters = torch._dynamo.utils.counters
    assert (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())) == (1, 0)


def _kl_div(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")


def _cross_entropy(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(s, F.softmax(t, 1))


def _unnumbered(reason: str | None) -> str | None:
    return None if reason is None else re.sub(r"primals_\d+", "primals", reason)


def _inductor_verdicts(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[list[tuple[str | None, object]], list[torch.fx.Node]]:
    """What inductor decides of CUDA graphs (mode="reduce-overhead") for each graph
    it compiles of a step with ``loss``: its own reason to skip them, and the first
    node it would refuse (asked where graph partition is off); and the recorders."""
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner
    from torch._inductor.utils import get_first_incompatible_cudagraph_node

    verdicts: list[tuple[str | None, object]] = []
    records: list[torch.fx.Node] = []

    def inner(gm: torch.fx.GraphModule, *args: Any, **kwargs: Any) -> Any:
        compiled: Any = compile_fx_inner(gm, *args, **kwargs)
        refused = get_first_incompatible_cudagraph_node(gm)
        verdicts.append((compiled.disabled_cudagraphs_reason, refused))
        records.extend(n for n in gm.graph.nodes if str(n.target) == "kl_guard.record.default")
        return compiled

    def inductor(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        return compile_fx(gm, example_inputs, inner_compile=inner)

    torch._dynamo.reset()
    model = nn.Linear(5, 5)
    step = torch.compile(lambda s, t: loss(model(s), t), backend=inductor, fullgraph=True)
    # no cache: a cached graph would not reach inner
    with (
        torch._inductor.config.patch({"triton.cudagraphs": True, "fx_graph_cache": False}),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        step(logits(4, 5), logits(4, 5, seed=1)).backward()  # type: ignore[no-untyped-call]
    return verdicts, records


@pytest.mark.slow
@pytest.mark.parametrize("loss", [_kl_div, _cross_entropy], ids=lambda f: f.__name__[1:])
def test_the_recorder_leaves_cuda_graphs_to_inductor(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """inductor's reasons to skip CUDA graphs are the same with the recorder in the
    graph as without it (on CPU, the device's own). The recorder is the one node it
    keeps out of a capture (``cudagraph_unsafe``): with graph partition, inductor
    runs it between the graph's CUDA-graphed parts, where a capture would replay
    the graph without ever checking again."""
    plain, _ = _inductor_verdicts(loss)
    kl_guard.install(mode="log", check_every=1)
    guarded, records = _inductor_verdicts(loss)
    # torch 2.6 names the first CPU input, whose number the recorder's may change
    assert [_unnumbered(reason) for reason, _ in guarded] == [
        _unnumbered(reason) for reason, _ in plain
    ]
    assert [refused for _, refused in plain] == [None, None]  # forward, backward
    if not _compat.PRIMARY["side_effect_op"]:  # torch 2.6: the op hides in an effect token
        return
    [record] = records  # in the forward graph, mutating none of its inputs
    assert isinstance(record.target, torch._ops.OpOverload)
    assert not record.target._schema.is_mutable
    if _compat.PRIMARY["cudagraph_unsafe_tag"]:
        assert torch.Tag.cudagraph_unsafe in record.target.tags
        assert [refused for _, refused in guarded] == [record, None]
        assert torch._inductor.config.graph_partition  # partitioned around, not skipped
    assert kl_guard.counts().checked == 1


class OneClass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(x), y)  # one class


def _targets(graph: torch.fx.Graph) -> list[object]:
    return [node.target for node in graph.nodes if node.op == "call_function"]


def test_export_reports_one_class_once_and_uninstall_restores_torchs_function() -> None:
    x, y = logits(8, 6), (logits(8, 1, seed=1) > 0).float()
    kl_guard.install(mode="raise")
    # raise mode warns at trace time: an error inside the exporter would be the exporter's
    with pytest.warns(kl_guard.KLG013Warning) as record:
        exported = torch.export.export(OneClass(), (x, y), strict=False)
    assert [(w.filename, w.lineno) for w in record] == [(__file__, _line("one class"))]
    # once, however many passes ran it; torch 2.6 keeps no context over an export's passes
    if not _compat.TORCH_VERSION.startswith("2.6."):
        assert [f.count for f in kl_guard.findings()] == [1]
    assert not any("kl_guard" in str(target) for target in _targets(exported.graph))

    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        graphs.append(gm)
        return gm.forward

    kl_guard.uninstall()
    torch.compile(OneClass(), backend=capture, fullgraph=True)(x, y)
    [graph] = graphs
    assert F.cross_entropy in _targets(graph.graph)  # torch's own, one node as dynamo keeps it
    assert not any("kl_guard" in str(target) for target in _targets(graph.graph))


def test_a_deferred_check_warns_at_the_loss_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path in warn mode, on CPU tensors: each call's numbers are read
    once they have landed (at the next checked call, or flush)."""
    monkeypatch.setattr(_deferred.SWITCHES, "on_cpu", True)
    step = torch.compile(planted, backend="aot_eager", fullgraph=True)
    kl_guard.install(mode="warn", check_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        # kl_guard's alone: dynamo warns of its own on some Pythons (3.13.0's guards)
        def record() -> list[tuple[object, str, int]]:
            return [
                (w.category, w.filename, w.lineno)
                for w in caught
                if issubclass(w.category, kl_guard.KLGuardWarning)
            ]

        try:
            step(*_batch(features=5))
            assert record() == [  # read at the second call
                (kl_guard.KLG010Warning, __file__, _line("KLG010 planted"))
            ]
            assert _deferred.pending() == 1
        finally:
            kl_guard.flush()  # never left for a later test to report
    assert record()[1:] == [(kl_guard.KLG014Warning, __file__, _line("KLG014 planted"))]

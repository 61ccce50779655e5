"""kl_guard beside what else torch offers: compile, torch.func, autocast,
TorchScript, DistributedDataParallel, pickling and copying."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import ORIGINAL, logits

REPO = Path(__file__).resolve().parent.parent
# torch deprecates torch.jit.script: a DeprecationWarning in 2.10 to 2.13, a FutureWarning from 2.14
JIT_SCRIPT_DEPRECATED = "`torch.jit.script` is deprecated"


def functional(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="batchmean")


class Distill(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.loss = nn.KLDivLoss(reduction="batchmean")

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = self.loss(F.log_softmax(student, 1), F.softmax(teacher, 1))
        return loss


class Functional(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return functional(student, teacher)


def both(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    module: torch.Tensor = Distill()(student, teacher)
    return functional(student, teacher) + module


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    return logits(8, 5), logits(8, 5, seed=1, scale=3)


@contextlib.contextmanager
def strict(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every call checked, in raise mode; kl_guard must never say it failed."""
    with kl_guard.guard(mode="raise", check_every=1), caplog.at_level(logging.ERROR, "kl_guard"):
        yield
    assert [r for r in caplog.records if r.name == "kl_guard"] == []


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_eager_backend_without_graph_breaks(caplog: pytest.LogCaptureFixture) -> None:
    expected = both(*pair())
    with strict(caplog):
        assert torch._dynamo.explain(both)(*pair()).graph_break_count == 0
        assert torch.equal(torch.compile(both, backend="eager")(*pair()), expected)


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_inductor_backend(caplog: pytest.LogCaptureFixture) -> None:
    expected = torch.compile(both, backend="inductor")(*pair())
    torch._dynamo.reset()
    with strict(caplog):
        checked = torch.compile(both, backend="inductor")(*pair())
    # The same to rounding: the graph hands the loss's operands to kl_guard,
    # and inductor may fuse what computes them otherwise.
    torch.testing.assert_close(checked, expected)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_torch_func_grad_and_vmap(caplog: pytest.LogCaptureFixture) -> None:
    student, teacher = pair()

    def per_row(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="sum")

    def probs_as_input(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.softmax(s, -1), F.softmax(t, -1), reduction="sum")

    def module_loss(s: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = Distill()(s, teacher)
        return loss

    def run() -> list[torch.Tensor]:
        return [
            torch.func.grad(per_row)(student[0], teacher[0]),
            torch.func.vmap(per_row)(student, teacher),
            torch.func.vmap(torch.func.grad(per_row))(student, teacher),
            torch.func.grad(module_loss)(student),
            # wrapped tensors are skipped, not judged: no KLGuardError here
            torch.func.vmap(probs_as_input)(student, teacher),
        ]

    expected = run()
    with strict(caplog):
        assert all(torch.equal(a, b) for a, b in zip(expected, run(), strict=True))


def test_autocast_bfloat16_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 5)
    x, teacher = logits(8, 8), F.softmax(logits(8, 5, seed=1), 1)

    def run() -> list[torch.Tensor]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            student = model(x)
            assert student.dtype == torch.bfloat16
            loss = F.kl_div(F.log_softmax(student, 1), teacher, reduction="batchmean")
            # bf16 input against a float32 target
            log_q = F.log_softmax(student.float(), 1).bfloat16()
            loss = loss + nn.KLDivLoss(reduction="batchmean")(log_q, teacher)
        loss.backward()
        assert model.weight.grad is not None
        return [loss.detach(), model.weight.grad.clone()]

    expected = run()
    with strict(caplog):
        assert all(torch.equal(a, b) for a, b in zip(expected, run(), strict=True))


@pytest.mark.filterwarnings(f"ignore:{JIT_SCRIPT_DEPRECATED}:DeprecationWarning")
@pytest.mark.filterwarnings(f"ignore:{JIT_SCRIPT_DEPRECATED}:FutureWarning")
@pytest.mark.parametrize("holder", [Distill, Functional])
@pytest.mark.parametrize("scripted_while_installed", [False, True])
def test_torchscript(holder: type[nn.Module], scripted_while_installed: bool) -> None:
    expected = holder()(*pair())
    if scripted_while_installed:
        kl_guard.install(mode="raise", check_every=1)
    scripted = torch.jit.script(holder())
    kl_guard.install(mode="raise", check_every=1)
    assert torch.equal(scripted(*pair()), expected)
    kl_guard.uninstall()
    assert torch.equal(scripted(*pair()), expected)
    assert vars(nn.KLDivLoss)["forward"] is ORIGINAL.forward


class Holder(nn.Module):
    """A model that keeps a KLDivLoss, a bound forward and F.kl_div itself."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 5)
        self.criterion = nn.KLDivLoss(reduction="batchmean")
        self.bound = self.criterion.forward
        self.fn = functools.partial(F.kl_div, reduction="batchmean")

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        log_q, p = F.log_softmax(self.linear(student), 1), F.softmax(teacher, 1)
        out: torch.Tensor = self.criterion(log_q, p) + self.bound(log_q, p) + self.fn(log_q, p)
        return out


def saved(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def loaded(blob: bytes) -> Holder:
    model: Holder = torch.load(io.BytesIO(blob), weights_only=False)
    return model


def test_pickle_save_deepcopy_and_state_dict_while_installed() -> None:
    kl_guard.install(mode="raise", check_every=1)
    torch.manual_seed(0)
    model = Holder()
    expected = model(*pair())
    blob, pickled = saved(model), pickle.dumps(model)
    fresh = Holder()
    fresh.load_state_dict(model.state_dict())
    copies: list[nn.Module] = [loaded(blob), pickle.loads(pickled), copy.deepcopy(model), fresh]
    assert copy.copy(F.kl_div) is F.kl_div
    assert copy.deepcopy(F.kl_div) is F.kl_div
    for restored in copies:
        assert torch.equal(restored(*pair()), expected)

    kl_guard.uninstall()
    for restored in (loaded(blob), pickle.loads(pickled)):
        assert type(restored.criterion).forward is ORIGINAL.forward
        assert restored.fn.func is ORIGINAL.kl_div
        assert torch.equal(restored(*pair()), expected)


def test_a_reference_taken_before_install_cannot_be_pickled_while_installed() -> None:
    """Documented limit: pickle finds kl_guard's wrapper under the function's name."""
    early = functools.partial(F.kl_div, reduction="batchmean")
    kl_guard.install()
    with pytest.raises(pickle.PicklingError, match="not the same object"):
        pickle.dumps(early)
    kl_guard.uninstall()
    assert pickle.loads(pickle.dumps(early)).func is ORIGINAL.kl_div


@pytest.mark.slow
def test_distributed_data_parallel_reports_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KL_GUARD_MODE", None)
    store = tmp_path / "store"  # a file store: no port, nothing beyond this machine
    ranks = [
        subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "ddp_worker.py"), str(rank), str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=240) for process in ranks]
    finally:
        for process in ranks:
            process.kill()
    for process, (_, err) in zip(ranks, outputs, strict=True):
        assert process.returncode == 0, err
    rank0, rank1 = (json.loads(out.splitlines()[-1]) for out, _ in outputs)

    for report in (rank0, rank1):
        for run in report.values():
            assert run["identical"]
            assert run["ranks_in_messages"]
    # Every rank records what it sees, with its rank ...
    assert rank0["all_ranks=False"]["found"] == [["KLG001", 0]]
    assert rank1["all_ranks=False"]["found"] == [["KLG001", 1], ["KLG003", 1], ["KLG004", 1]]
    # ... but by default only rank 0 warns: once per run, not once per rank.
    assert rank0["all_ranks=False"]["warned"] == ["KLG001"]
    assert rank1["all_ranks=False"]["warned"] == []
    assert rank0["all_ranks=True"]["warned"] == ["KLG001"]
    assert rank1["all_ranks=True"]["warned"] == ["KLG001", "KLG003", "KLG004"]

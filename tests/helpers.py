"""Calls shared by the tests: correct ones that must stay silent, misuses that must not."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from kl_guard import _lifecycle, _patch, _percall

Tensors = tuple[torch.Tensor, torch.Tensor]


def rounds(n: int) -> int:
    """A stress test's ``n`` rounds, a third of them on the oldest and newest torch
    (``.ci/versions``, ``HYPOTHESIS_PROFILE=versions``): what differs between releases is
    torch's behaviour, which a few rounds reach; the main job runs them all."""
    return max(1, n // 3) if os.environ.get("HYPOTHESIS_PROFILE") == "versions" else n


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], Tensors]
    reduction: str = "batchmean"
    log_target: bool = False

    def tensors(self) -> Tensors:
        return self.make()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed)) * scale


def one_hot(n: int, c: int) -> torch.Tensor:
    return F.one_hot(torch.arange(n) % c, c).float()


def smoothed(n: int, c: int, eps: float = 0.1) -> torch.Tensor:
    return one_hot(n, c) * (1 - eps) + eps / c


def distillation(temperature: float) -> Tensors:
    student, teacher = logits(32, 100), logits(32, 100, seed=1, scale=5)
    return (
        F.log_softmax(student / temperature, 1),
        F.softmax(teacher / temperature, 1),
    )


def masked_tokens() -> Tensors:
    s, t = logits(2, 6, 11, seed=1), logits(2, 6, 11, seed=2)
    target = F.softmax(t, -1)
    target[0, 4:] = 0
    target[1, 5:] = 0
    inp = F.log_softmax(s, -1)
    inp[0, 4:] = 0  # padding positions of the input hold anything
    return inp, target


CORRECT: list[Case] = [
    Case("2d", lambda: (F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1))),
    Case(
        "2d-sum",
        lambda: (F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)),
        reduction="sum",
    ),
    Case(
        "2d-none",
        lambda: (F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)),
        reduction="none",
    ),
    *[Case(f"distill-T{T}", functools.partial(distillation, T)) for T in (0.1, 1.0, 4.0, 20.0)],
    Case("one-hot", lambda: (F.log_softmax(logits(12, 7), 1), one_hot(12, 7))),
    Case("label-smoothed", lambda: (F.log_softmax(logits(12, 7), 1), smoothed(12, 7))),
    Case("identical", lambda: (F.log_softmax(logits(64, 1000), 1), F.softmax(logits(64, 1000), 1))),
    Case(
        "log-target",
        lambda: (F.log_softmax(logits(16, 10), 1), F.log_softmax(logits(16, 10, seed=1), 1)),
        log_target=True,
    ),
    Case(
        "tokens-BTV",
        lambda: (F.log_softmax(logits(4, 9, 50), -1), F.softmax(logits(4, 9, 50, seed=1), -1)),
    ),
    Case(
        "dense-NCT",
        lambda: (F.log_softmax(logits(4, 6, 30), 1), F.softmax(logits(4, 6, 30, seed=1), 1)),
    ),
    Case(
        "dense-NCHW",
        lambda: (F.log_softmax(logits(2, 5, 8, 9), 1), F.softmax(logits(2, 5, 8, 9, seed=1), 1)),
    ),
    Case(
        "channels-last",
        lambda: (
            F.log_softmax(logits(2, 5, 8, 9), 1).contiguous(memory_format=torch.channels_last),
            F.softmax(logits(2, 5, 8, 9, seed=1), 1).contiguous(memory_format=torch.channels_last),
        ),
    ),
    Case(
        "attention-BHTT",
        lambda: (F.log_softmax(logits(2, 3, 7, 7), -1), F.softmax(logits(2, 3, 7, 7, seed=1), -1)),
    ),
    Case("masked-padding", masked_tokens, reduction="sum"),
    Case(
        "f16",
        lambda: (
            F.log_softmax(logits(16, 1000), 1).half(),
            F.softmax(logits(16, 1000, seed=1), 1).half(),
        ),
    ),
    Case(
        "bf16",
        lambda: (
            F.log_softmax(logits(16, 1000).bfloat16(), 1),
            F.softmax(logits(16, 1000, seed=1).bfloat16(), 1),
        ),
    ),
    Case(
        "f64",
        lambda: (
            F.log_softmax(logits(16, 10).double(), 1),
            F.softmax(logits(16, 10, seed=1).double(), 1),
        ),
    ),
    Case(
        "vocab-50k-bf16",
        lambda: (
            F.log_softmax(logits(4, 50_257).bfloat16(), 1),
            F.softmax(logits(4, 50_257, seed=1, scale=3).bfloat16(), 1),
        ),
    ),
    Case(
        "vocab-50k-f16",
        lambda: (
            F.log_softmax(logits(4, 50_257), 1).half(),
            F.softmax(logits(4, 50_257, seed=1), 1).half(),
        ),
    ),
    # Found by test_properties: rounding to bf16 moves the logsumexp of a
    # near-uniform row over a large vocabulary by up to 0.04.
    Case(
        "bf16-near-uniform-32k",
        lambda: (
            F.log_softmax(logits(32_000, scale=0.1).bfloat16(), 0),
            F.softmax(logits(32_000, seed=1).bfloat16(), 0),
        ),
        reduction="sum",
    ),
    Case(
        "bf16-near-uniform-log-target",
        lambda: (
            F.log_softmax(logits(4, 10_000).bfloat16(), 1),
            F.log_softmax(logits(4, 10_000, seed=1, scale=0.1).bfloat16(), 1),
        ),
        log_target=True,
    ),
    # Found by test_properties: near uniform, [1, 3, 3] is normalized along both
    # dims, and the unreduced loss read along the other one dips below 0.
    Case(
        "near-uniform-NCT-none",
        lambda: (
            F.log_softmax(logits(1, 3, 3, scale=0.1 / 12), 1),
            F.softmax(logits(1, 3, 3, seed=1, scale=0.1 / 12), 1),
        ),
        reduction="none",
    ),
    Case(
        "big-batch",
        lambda: (F.log_softmax(logits(4096, 10), 1), F.softmax(logits(4096, 10, seed=1), 1)),
    ),
]

MISUSES: list[tuple[str, Case]] = [
    ("KLG001", Case("mean", CORRECT[0].make, reduction="mean")),
    (
        "KLG002",
        Case(
            "log-target-missing",
            lambda: (F.log_softmax(logits(16, 10), 1), F.log_softmax(logits(16, 10, seed=1), 1)),
        ),
    ),
    ("KLG002", Case("log-target-on-probs", CORRECT[0].make, log_target=True)),
    (
        "KLG003",
        Case(
            "input-probs",
            lambda: (F.softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 1)),
        ),
    ),
    (
        "KLG003",
        Case("input-logits", lambda: (logits(16, 10), F.softmax(logits(16, 10, seed=1), 1))),
    ),
    (
        "KLG003",
        Case(
            "swapped",
            lambda: (F.softmax(logits(16, 10), 1), F.log_softmax(logits(16, 10, seed=1), 1)),
        ),
    ),
    (
        "KLG003",
        Case("tokens-logits", lambda: (logits(4, 9, 50), F.softmax(logits(4, 9, 50, seed=1), -1))),
    ),
    (
        "KLG004",
        Case(
            "neg-inf-input",
            lambda: (
                F.softmax(logits(8, 6, scale=30), 1).log(),
                F.softmax(logits(8, 6, seed=1, scale=30), 1),
            ),
        ),
    ),
    (
        "KLG004",
        Case(
            "log-target-one-hot",
            lambda: (F.log_softmax(logits(12, 7), 1), one_hot(12, 7).log()),
            log_target=True,
        ),
    ),
    (
        "KLG005",
        Case(
            "broadcast",
            lambda: (F.log_softmax(logits(16, 10), 1), F.softmax(logits(10, seed=1), 0)),
        ),
    ),
    (
        "KLG006",
        Case(
            "target-over-batch",
            lambda: (F.log_softmax(logits(16, 10), 1), F.softmax(logits(16, 10, seed=1), 0)),
        ),
    ),
    (
        "KLG006",
        Case(
            "dense-over-width",
            lambda: (
                F.log_softmax(logits(2, 5, 8, 9), 1),
                F.softmax(logits(2, 5, 8, 9, seed=1), 2),
            ),
        ),
    ),
    (
        "KLG007",
        Case(
            "target-unnormalized",
            lambda: (F.log_softmax(logits(16, 10), 1), logits(16, 10, seed=1).exp()),
        ),
    ),
    (
        "KLG007",
        Case(
            "target-sigmoid",
            lambda: (F.log_softmax(logits(16, 10), 1), torch.sigmoid(logits(16, 10, seed=1))),
        ),
    ),
    (
        "KLG007",
        Case("target-logits", lambda: (F.log_softmax(logits(16, 10), 1), logits(16, 10, seed=1))),
    ),
    (
        "KLG007",
        Case(
            "log-target-logits",
            lambda: (F.log_softmax(logits(16, 10), 1), logits(16, 10, seed=1)),
            log_target=True,
        ),
    ),
]


class Originals(NamedTuple):
    kl_div: Callable[..., torch.Tensor]
    forward: Callable[..., torch.Tensor]


#: The entry points as torch defines them, captured before any test installs kl_guard;
#: in a tuple, since install() points module globals that hold F.kl_div at its wrapper.
ORIGINAL = Originals(F.kl_div, torch.nn.KLDivLoss.forward)


def good() -> Tensors:
    """A correct call's tensors: log-probabilities and probabilities over dim 1."""
    return F.log_softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)


def probs_input() -> Tensors:
    """The commonest misuse: probabilities as the input (KLG003, KLG004)."""
    return F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)


def active_view() -> _percall.View:
    """What the wrappers read now (kl_guard must be active and not off)."""
    view = _percall.ACTIVE.view
    assert view is not None, "kl_guard is not active"
    return view


def latest_site() -> tuple[object, int]:
    """The latest call site of the active layer and its countdown, to compare later."""
    latest = active_view().schedule.recent[0]
    return latest, latest.site.skip


def fully_removed() -> bool:
    """No layer, no view and no patch is left."""
    layers = _lifecycle._LAYERS
    return (layers.base, layers.guards, _percall.ACTIVE.view, _patch.PATCH.on) == (
        None,
        [],
        None,
        False,
    )


def marked_line(path: str, marker: str) -> int:
    """The line of ``path`` that carries the comment ``# <marker>``: exactly one must."""
    with open(path) as f:
        lines = [n for n, text in enumerate(f, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(lines) == 1, f"{marker!r} marks lines {lines} of {path}"
    return lines[0]


def misuse_line(script: Path) -> str:
    """Where kl_guard locates the line of ``script`` marked ``# misuse``: ``name:line``."""
    return f"{script.name}:{marked_line(str(script), 'misuse')}"


def run_training(cwd: Path, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``command``, a training script as tests/frameworks launches it, run to its end in
    ``cwd``: one intra-op thread per process (the ranks share a few cores), nothing
    downloaded and no user configuration read (models come from configs). A run still
    going after ``timeout`` seconds fails the test with the end of its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf")}
    env.pop("KL_GUARD_MODE", None)
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"{' '.join(command)} still ran after {timeout} s\n{stderr[-4000:]}")


def run_subprocess(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m kl_guard run ARGS`` in a fresh interpreter, in ``cwd``."""
    # One intra-op thread: on a busy machine, threads contending for a few
    # cores make each op on these tiny tensors a thousand times slower.
    return subprocess.run(
        [sys.executable, "-m", "kl_guard", "run", *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

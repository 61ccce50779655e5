"""Property tests: silent on every correct call, the right code on every single misuse.

One generator draws a correct call (dtype, layout, class count, temperature,
target kind, ``log_target``, reduction); the misuse tests inject exactly one
pitfall into the same draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hypothesis import assume, example, given
from hypothesis import strategies as st

import kl_guard
from helpers import Tensors
from kl_guard._check import _screened_correct, describe, kl_div_unchecked
from kl_guard._signature import candidate_dims

#: Every layout the core infers: its name and the dim holding the distribution.
LAYOUTS = {
    "[C]": 0,
    "[N, C]": 1,
    "[B, T, V]": 2,
    "[N, C, T]": 1,
    "[N, C, H, W]": 1,
    "[B, H, T, T]": 3,
}
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TARGETS = ("soft", "peaked", "one-hot", "smoothed", "masked")
# Bounded so that a hundred draws of up to a 50k vocabulary stay fast.
MAX_ELEMENTS = 200_000
MAX_CLASSES = 50_000
# Vocabularies people use, and anything in between.
CLASS_COUNTS = st.sampled_from([2, 10, 1000, 32_000, MAX_CLASSES]) | st.integers(2, MAX_CLASSES)


@dataclasses.dataclass(frozen=True)
class Draw:
    """One correct kl_div call, as the parameters to build it from."""

    layout: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    temperature: float
    scale: float
    target: str
    log_target: bool
    reduction: str
    seed: int

    @property
    def dim(self) -> int:
        return LAYOUTS[self.layout]

    @property
    def classes(self) -> int:
        return self.shape[self.dim]

    def _generator(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 4 + stream)

    def logits(self, stream: int, scale: float | None = None) -> torch.Tensor:
        """Logits divided by the temperature, in the draw's dtype."""
        x = torch.randn(self.shape, generator=self._generator(stream))
        return (x * (self.scale if scale is None else scale) / self.temperature).to(self.dtype)

    def _one_hot(self) -> torch.Tensor:
        rows = self.shape[: self.dim] + self.shape[self.dim + 1 :]
        labels = torch.randint(self.classes, rows, generator=self._generator(2))
        return F.one_hot(labels, self.classes).movedim(-1, self.dim).to(self.dtype)

    def target_tensor(self, *, log: bool) -> torch.Tensor:
        """The teacher's distribution, as probabilities or (``log``) log-probabilities."""
        normalize = F.log_softmax if log else F.softmax
        if self.target in ("soft", "masked"):
            target = normalize(self.logits(1), self.dim)
        elif self.target == "peaked":
            target = normalize(self.logits(1, scale=50.0), self.dim)
        elif self.target == "one-hot":
            # log(one_hot) holds -inf, which torch turns into NaN with
            # log_target=True (a real KLG004): a log target comes from log_softmax.
            one_hot = self._one_hot()
            peaked = F.log_softmax(one_hot.float() * 30, self.dim)
            target = peaked.to(self.dtype) if log else one_hot
        else:
            eps = 0.1
            smoothed = self._one_hot().double() * (1 - eps) + eps / self.classes
            target = (smoothed.log() if log else smoothed).to(self.dtype)
        if self.target == "masked":
            # Padding: whole rows of the target are zero.
            rows = target.sum(self.dim, keepdim=True)
            keep = torch.rand(rows.shape, generator=self._generator(3)) < 0.6
            keep.view(-1)[0] = True  # a sequence has a first token, and it is always sampled
            target = target * keep.to(self.dtype)
        return target

    def tensors(self) -> Tensors:
        return F.log_softmax(self.logits(0), self.dim), self.target_tensor(log=self.log_target)


@st.composite
def shapes(draw: st.DrawFn, layout: str) -> tuple[int, ...]:
    """A shape of ``layout`` with 2 to 50k classes and at most MAX_ELEMENTS elements."""
    dim = LAYOUTS[layout]
    if layout == "[B, H, T, T]":
        t = draw(st.integers(2, math.isqrt(MAX_ELEMENTS)) | st.sampled_from([2, 16, 128, 447]))
        budget = MAX_ELEMENTS // (t * t)
        b = draw(st.integers(1, min(budget, 4)))
        return (b, draw(st.integers(1, min(budget // b, 4))), t, t)
    classes = draw(CLASS_COUNTS)
    shape = [classes]
    budget = MAX_ELEMENTS // classes
    for _ in range(len(layout.split(",")) - 1):
        size = draw(st.integers(1, max(1, min(budget, 64))))
        budget //= size
        shape.append(size)
    others = shape[1:]
    return (*others[:dim], classes, *others[dim:])


@st.composite
def correct_calls(
    draw: st.DrawFn, reductions: tuple[str, ...] = ("none", "sum", "batchmean", "mean")
) -> Draw:
    layout = draw(st.sampled_from(list(LAYOUTS)))
    target = draw(st.sampled_from(TARGETS))
    return Draw(
        layout=layout,
        shape=draw(shapes(layout)),
        dtype=draw(st.sampled_from(DTYPES)),
        temperature=draw(st.sampled_from([0.1, 1.0, 2.0, 4.0, 20.0]) | st.floats(0.1, 20.0)),
        scale=draw(st.sampled_from([0.1, 1.0, 10.0]) | st.floats(0.1, 10.0)),
        target=target,
        # A masked row of log-probabilities would be -inf, which is NaN in torch.
        log_target=target != "masked" and draw(st.booleans()),
        reduction=draw(st.sampled_from(reductions)),
        seed=draw(st.integers(0, 2**30)),
    )


def assume_no_overflow(inp: torch.Tensor, tgt: torch.Tensor, call: Draw) -> None:
    """A float16 sum past 65504 is inf: KLG004 rightly says so (test_check covers it)."""
    loss = kl_div_unchecked(inp, tgt.detach(), call.reduction, call.log_target)
    assume(bool(loss.isfinite().all()))


@given(call=correct_calls(), sample_rows=st.sampled_from([16, 64]))
def test_correct_calls_are_silent(call: Draw, sample_rows: int) -> None:
    inp, tgt = call.tensors()
    assume_no_overflow(inp, tgt, call)
    found = kl_guard.check(
        inp, tgt, reduction=call.reduction, log_target=call.log_target, sample_rows=sample_rows
    )
    # 'mean' is never the KL per sample: KLG001 by design, and nothing else.
    assert [f.code for f in found] == (["KLG001"] if call.reduction == "mean" else [])


@given(call=correct_calls(), sample_rows=st.sampled_from([16, 64]))
@example(  # bfloat16 rounding puts the logsumexp at 0.021, past the norm tolerance
    call=Draw(
        layout="[C]",
        shape=(50000,),
        dtype=torch.bfloat16,
        temperature=6.0,
        scale=1.5,
        target="soft",
        log_target=False,
        reduction="none",
        seed=0,
    ),
    sample_rows=16,
)
def test_the_screen_confirms_correct_calls_on_the_first_candidate_dim(
    call: Draw, sample_rows: int
) -> None:
    # The fast path must really be taken: a screen that never passed would
    # leave every check correct, but at the cost of the full statistics.
    assume(candidate_dims(call.shape)[0] == call.dim)
    inp, tgt = call.tensors()
    assume_no_overflow(inp, tgt, call)
    loss = kl_div_unchecked(inp, tgt, call.reduction, call.log_target)
    described = describe(
        inp, tgt, api="function", reduction=call.reduction, log_target=call.log_target
    )
    assert described is not None
    assert _screened_correct(described, inp, tgt, loss, sample_rows, loss_from_torch=True)


def assume_nowhere_normalized(x: torch.Tensor, dims: list[int], *, log: bool) -> None:
    """Only an unambiguous misuse counts: no row of ``x`` sums to 1 over ``dims`` by chance.

    A peaked tensor can be: one-hot columns * 0.5 sum to 1 over the batch.
    """
    p = x.detach().double()
    for dim in dims:
        sums = (p.exp() if log else p).sum(dim)
        assume(bool(((sums - 1).abs() > 0.1).all()))


def _wrong_dim(call: Draw, data: st.DataObject) -> Tensors:
    others = [d for d, size in enumerate(call.shape) if d != call.dim and size > 1]
    assume(others)
    wrong = data.draw(st.sampled_from(others))
    inp = call.tensors()[0]
    tgt = (F.log_softmax if call.log_target else F.softmax)(call.logits(1), wrong)
    assume_nowhere_normalized(tgt, [call.dim], log=call.log_target)
    assume_nowhere_normalized(inp, [wrong], log=True)
    return inp, tgt


def _unnormalized(call: Draw, data: st.DataObject) -> Tensors:
    # Scaled above 1: a target scaled below 1 is a slice of a distribution
    # (test_distillation.py), silent by design.
    inp, tgt = call.tensors()
    scale = data.draw(st.sampled_from([2.0, 3.0]))
    if call.log_target:
        # log-scores above their normalization, still with negative values
        # (all non-negative ones would look like probabilities: KLG002)
        tgt = tgt + math.log(scale)
        assume(bool((tgt < 0).any()))
    else:
        tgt = tgt * scale
    dims = [d for d, size in enumerate(call.shape) if size > 1]
    assume_nowhere_normalized(tgt, dims, log=call.log_target)
    return inp, tgt


def _broadcast(call: Draw, data: st.DataObject) -> Tensors:
    assume(len(call.shape) >= 2)
    inp, tgt = call.tensors()
    return inp, tgt[0]


#: name -> (code, overrides of the draw, how to build the tensors).
Inject = Callable[[Draw, st.DataObject], Tensors]
MISUSES: dict[str, tuple[str, dict[str, object], Inject]] = {
    "probabilities as input": (
        "KLG003",
        {},
        lambda c, _: (F.softmax(c.logits(0), c.dim), c.tensors()[1]),
    ),
    "logits as input": ("KLG003", {}, lambda c, _: (c.logits(0), c.tensors()[1])),
    "input and target swapped": ("KLG003", {"log_target": False}, lambda c, _: c.tensors()[::-1]),
    "log target without log_target=True": (
        "KLG002",
        {"log_target": False},
        lambda c, _: (c.tensors()[0], c.target_tensor(log=True)),
    ),
    "probabilities with log_target=True": (
        "KLG002",
        {"log_target": True},
        lambda c, _: (c.tensors()[0], c.target_tensor(log=False)),
    ),
    "target normalized over a wrong dim": ("KLG006", {}, _wrong_dim),
    "unnormalized target": ("KLG007", {}, _unnormalized),
    "broadcast target": ("KLG005", {}, _broadcast),
    "target requires grad": (
        "KLG008",
        {},
        lambda c, _: (c.tensors()[0], c.tensors()[1].requires_grad_()),
    ),
    "reduction mean": ("KLG001", {"reduction": "mean"}, lambda c, _: c.tensors()),
}
# A wrong space or normalization makes a negative or NaN loss likely: KLG004
# may come with these, naming them as its cause.
CAUSES_OF_KLG004 = {"KLG002", "KLG003", "KLG006", "KLG007"}


@given(
    call=correct_calls(reductions=("none", "sum", "batchmean")),
    misuse=st.sampled_from(list(MISUSES)),
    data=st.data(),
)
def test_each_misuse_gets_its_code(call: Draw, misuse: str, data: st.DataObject) -> None:
    code, overrides, inject = MISUSES[misuse]
    call = dataclasses.replace(call, **overrides)  # type: ignore[arg-type]
    if call.log_target and call.target == "masked":
        call = dataclasses.replace(call, target="soft")
    inp, tgt = inject(call, data)
    assume_no_overflow(inp, tgt, call)
    if misuse == "logits as input":
        # Logits whose every row has a logsumexp below 0 (all negative, few classes)
        # are exactly a slice of log-probabilities (a vocabulary shard): README, Limits.
        assume(torch.logsumexp(inp.double(), call.dim).max().item() > 0.05)
    found = kl_guard.check(
        inp, tgt, reduction=call.reduction, log_target=call.log_target, select="ALL"
    )
    codes = [f.code for f in found]
    allowed = {code, "KLG004"} if code in CAUSES_OF_KLG004 else {code}
    assert code in codes
    assert set(codes) <= allowed, codes

"""Property tests of the loss family: silent on every correct idiom, the right code on
each misuse planted into one.

A draw is one call of cross_entropy, nll_loss or BCE-with-logits as people write it
(a head, a layout, a dtype, a target, the loss's options, the functional or the module
form); the misuse tests change exactly one thing in such a draw. Each call goes through
the patched loss under ``install(mode="raise", check_every=1)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import kl_guard
from kl_guard import _family_check, _family_rules
from kl_guard._classify import norm_tolerance
from kl_guard._contract import BCE_WITH_LOGITS, CROSS_ENTROPY, NLL_LOSS, LossContract
from kl_guard._family_rules import Elements, Numbers, Rows

DTYPES = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])
REDUCTIONS = st.sampled_from(["none", "mean", "sum"])
APIS = st.sampled_from(["function", "module"])
SEEDS = st.integers(0, 2**30)
#: Few examples each: the whole file runs in seconds (the profile's deadline=None stands).
BOUNDED = settings(max_examples=30)
#: Large vocabularies, in elements per call.
MAX_ELEMENTS = 400_000
VOCABULARIES = st.sampled_from([32_000, 50_257, 128_256, 152_064]) | st.integers(32_000, 152_064)
SAMPLE_ROWS = 32


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclasses.dataclass(frozen=True, repr=False)
class Case:
    """One call; its repr is how it was drawn (hypothesis prints it)."""

    loss: LossContract
    input: torch.Tensor
    target: torch.Tensor
    options: Mapping[str, object]
    api: str
    drawn: str
    #: the head's output before any activation (what a misuse would pass instead)
    logits: torch.Tensor
    #: the head gives the same row everywhere (a zero-initialized head, a bias)
    constant: bool = False

    def __repr__(self) -> str:
        return self.drawn

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.drawn)

    @property
    def class_dim(self) -> int:
        return 1 if self.input.dim() >= 2 else 0

    @property
    def dtype(self) -> torch.dtype:
        return self.input.dtype

    def but(self, why: str, **changes: object) -> Case:
        return dataclasses.replace(self, drawn=f"{self.drawn}, then {why}", **changes)  # type: ignore[arg-type]


def codes(case: Case) -> list[str]:
    """The codes kl_guard raises for the call (install() again only updates the settings)."""
    kl_guard.install(mode="raise", check_every=1)
    if case.api == "function":
        criterion: Callable[..., torch.Tensor] = functools.partial(
            getattr(F, case.loss.name), **case.options
        )
    else:
        criterion = getattr(nn, case.loss.module)(**case.options)
    try:
        criterion(case.input, case.target)
    except kl_guard.KLGuardError as error:
        return [f.code for f in error.findings]
    return []


def read(case: Case, dim: int) -> Rows | None:
    """What a check reads of the input along ``dim``: the rows the rules count."""
    bound = {"input": case.input, "target": case.target, **case.options}
    call = _family_check.describe(case.loss, bound, "function")
    if call is None:  # nothing kl_guard reads (an empty batch)
        return None
    m = _family_check.measure(
        call, case.input, case.target, None, sample_rows=SAMPLE_ROWS, dims=(dim,), with_target=False
    )
    return m.numbers(m.read()).input.get(dim)


def enough_rows(case: Case, dim: int) -> bool:
    """Whether the rows read along ``dim`` are as many distinct ones as KLG010 asks for."""
    rows = read(case, dim)
    return rows is not None and rows.distinct >= _family_rules._rows_needed(rows.size)


# --- the heads and targets of class losses --------------------------------------------


@st.composite
def class_shapes(draw: st.DrawFn) -> tuple[str, tuple[int, ...]]:
    """A layout and its shape, the class dim 1 (0 for an unbatched [C])."""
    layout = draw(st.sampled_from(["[N, C]", "[C]", "[B, C, Q]", "[B, V, T]", "[N, V]"]))
    if layout == "[N, C]":
        classes = draw(st.sampled_from([2, 3, 5, 10, 91, 1000]) | st.integers(2, 2000))
        return layout, (draw(st.integers(1, 64) | st.just(0)), classes)
    if layout == "[C]":
        return layout, (draw(st.integers(2, 1000)),)
    if layout == "[B, C, Q]":  # a detection head: classes per query
        classes = draw(st.sampled_from([2, 3, 21, 81, 92]) | st.integers(2, 100))
        return layout, (draw(st.integers(1, 4)), classes, draw(st.integers(1, 300)))
    vocabulary = draw(VOCABULARIES)
    others = draw(st.integers(1, min(4, MAX_ELEMENTS // vocabulary)))
    if layout == "[N, V]":
        return layout, (others, vocabulary)
    return layout, (1, vocabulary, others)  # [B, V, T]: a sequence model's output


def raw_logits(shape: tuple[int, ...], seed: int, scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed)) * scale


@st.composite
def heads(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[str, torch.Tensor, bool]:
    """A classifier's output in float32: its name, the values, whether every row is the same."""
    dim = 1 if len(shape) >= 2 else 0
    seed = draw(SEEDS)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]) | st.floats(0.1, 10.0))
    head = draw(st.sampled_from(["linear", "tanh", "sigmoid", "zero", "bias", "prior"]))
    logits = raw_logits(shape, seed, scale)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    if head == "tanh":  # bounded logits
        return f"tanh head x{scale:.3g} x5", 5 * torch.tanh(logits), False
    if head == "sigmoid":  # sigmoid-bounded logits, used as logits: correct, if unusual
        return (
            f"sigmoid-bounded head x{min(scale, 4):.3g}",
            torch.sigmoid(logits * min(scale, 4) / scale),
            False,
        )
    if head == "zero":
        return "zero-initialized head", torch.zeros(shape), True
    bias = raw_logits((shape[dim],), seed + 1, 1.0).view(view)
    if head == "bias":  # a head whose weights are still 0
        return "bias-only head", bias.expand(shape).contiguous(), True
    if head == "prior":  # the log of a class prior as bias, small weights
        prior = F.log_softmax(bias, dim)
        return "prior-bias head", prior + logits * 0.01, False
    return f"linear head x{scale:.3g}", logits, False


@st.composite
def contrastive(draw: st.DrawFn) -> tuple[str, torch.Tensor, torch.Tensor]:
    """CLIP's image-text logits, or SimCLR's with -inf on the diagonal, and their labels."""
    kind = draw(st.sampled_from(["clip", "simclr", "cosine"]))
    n = draw(st.integers(2, 64))
    features = F.normalize(
        torch.randn(2, n, draw(st.integers(4, 128)), generator=gen(draw(SEEDS))), dim=-1
    )
    temperature = draw(st.sampled_from([0.01, 0.07, 0.1, 0.5]))
    if kind == "simclr":
        z = features.reshape(2 * n, -1)
        sim = z @ z.T / temperature
        sim.fill_diagonal_(-math.inf)
        return (
            f"SimCLR logits [{2 * n}, {2 * n}] / {temperature}",
            sim,
            (torch.arange(2 * n) + n) % (2 * n),
        )
    sim = features[0] @ features[1].T
    if kind == "cosine":  # raw cosine similarities, no temperature: in [-1, 1]
        return f"cosine similarities [{n}, {n}]", sim, torch.arange(n)
    return f"CLIP logits [{n}, {n}] / {temperature}", sim / temperature, torch.arange(n)


@st.composite
def class_indices(
    draw: st.DrawFn, shape: tuple[int, ...], dim: int
) -> tuple[str, torch.Tensor, dict[str, object]]:
    """Class-index targets, some (or all) ignored, and the options that say so."""
    rows = shape[:dim] + shape[dim + 1 :]
    seed = draw(SEEDS)
    target = torch.randint(shape[dim], rows, generator=gen(seed))
    ignore = draw(st.sampled_from([-100, 255]))
    share = draw(st.sampled_from([0.0, 0.3, 1.0]))
    ignored = torch.rand(rows, generator=gen(seed + 1)) < share
    target = torch.where(ignored, torch.tensor(ignore), target)
    options: dict[str, object] = {} if ignore == -100 else {"ignore_index": ignore}
    return f"class indices, {share:.0%} ignored ({ignore})", target, options


@st.composite
def soft_targets(draw: st.DrawFn, shape: tuple[int, ...], dim: int) -> tuple[str, torch.Tensor]:
    """Probabilities per class in float32: mixup, cutmix, label smoothing, a teacher."""
    kind = draw(
        st.sampled_from(
            ["mixup", "cutmix", "smoothing", "teacher", "teacher-bf16", "teacher-mixup"]
        )
    )
    seed = draw(SEEDS)
    classes = shape[dim]
    rows = shape[:dim] + shape[dim + 1 :]

    def one_hot(s: int) -> torch.Tensor:
        labels = torch.randint(classes, rows, generator=gen(s))
        return F.one_hot(labels, classes).movedim(-1, dim).float()

    def teacher(s: int, bf16: bool) -> torch.Tensor:
        t = raw_logits(shape, s, 3.0) / draw(st.sampled_from([1.0, 2.0, 4.0]))
        return F.softmax(t.bfloat16() if bf16 else t, dim).float()

    lam = draw(st.floats(0.0, 1.0))
    if kind in ("mixup", "cutmix"):  # cutmix's lam is the area pasted
        return f"{kind} targets, lam {lam:.3g}", lam * one_hot(seed) + (1 - lam) * one_hot(seed + 1)
    if kind == "smoothing":
        eps = draw(st.sampled_from([0.05, 0.1, 0.2]))
        return f"smoothed one-hot targets, eps {eps}", one_hot(seed) * (1 - eps) + eps / classes
    if kind == "teacher-mixup":
        return "a mixup of bf16 teachers' softmax", lam * teacher(seed, True) + (1 - lam) * teacher(
            seed + 1, True
        )
    return f"a {kind}'s softmax", teacher(seed, kind == "teacher-bf16")


@st.composite
def cross_entropy_calls(draw: st.DrawFn, targets: tuple[str, ...] = ("index", "soft")) -> Case:
    """A classifier's or a contrastive model's logits, with class indices or soft targets."""
    dtype = draw(DTYPES)
    if "index" in targets and draw(st.integers(0, 5)) == 0:
        head, logits, target = draw(contrastive())
        shape, constant, drawn = tuple(logits.shape), False, f"{head}, {dtype}"
        options: dict[str, object] = {}
    else:
        layout, shape = draw(class_shapes())
        head, logits, constant = draw(heads(shape))
        kind = draw(st.sampled_from(targets))
        dim = 1 if len(shape) >= 2 else 0
        if kind == "index":
            what, target, options = draw(class_indices(shape, dim))
        else:
            what, target = draw(soft_targets(shape, dim))
            target, options = target.to(dtype), {}
        drawn = f"{layout} {shape} {dtype}, {head}, {what}"
    if draw(st.booleans()):
        options["weight"] = (
            torch.rand(shape[1 if len(shape) >= 2 else 0], generator=gen(1)) + 0.1
        ).to(dtype)
    smoothing = draw(st.sampled_from([0.0, 0.1]))
    if smoothing:
        options["label_smoothing"] = smoothing
    options["reduction"] = draw(REDUCTIONS)
    input = logits.to(dtype)
    if draw(st.booleans()) and not constant:  # log-probabilities are correct input too
        input, drawn = F.log_softmax(input, 1 if input.dim() >= 2 else 0), f"{drawn}, log_softmax"
    api = draw(APIS)
    return Case(
        CROSS_ENTROPY,
        input,
        target,
        options,
        api,
        f"{api}: {drawn}, {options_text(options)}",
        logits.to(dtype),
        constant,
    )


def options_text(options: Mapping[str, object]) -> str:
    return ", ".join(
        f"{k}={'tensor' if isinstance(v, torch.Tensor) else v!r}" for k, v in options.items()
    )


@st.composite
def nll_loss_calls(draw: st.DrawFn) -> Case:
    """log_softmax, the log of a renormalized top-k (-inf elsewhere), or a class subset."""
    dtype = draw(DTYPES)
    layout, shape = draw(class_shapes())
    dim = 1 if len(shape) >= 2 else 0
    seed = draw(SEEDS)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 30.0]))
    kind = draw(st.sampled_from(["log_softmax", "log-top-k", "subset"]))
    logits = raw_logits(shape, seed, scale).to(dtype)
    if kind == "log-top-k":
        k = draw(st.integers(1, shape[dim]))
        probs = F.softmax(logits, dim)
        top = probs.topk(k, dim)
        kept = torch.zeros_like(probs).scatter(dim, top.indices, top.values)
        input = (kept / kept.sum(dim, keepdim=True)).log()
    elif kind == "subset":  # the log-probabilities of some classes only
        k = draw(st.integers(2, shape[dim]))
        input = F.log_softmax(logits, dim).narrow(dim, 0, k)
        logits = logits.narrow(dim, 0, k)
        shape = tuple(input.shape)
    else:
        input = F.log_softmax(logits, dim)
    what, target, options = draw(class_indices(shape, dim))
    if draw(st.booleans()):
        options["weight"] = (torch.rand(shape[dim], generator=gen(1)) + 0.1).to(dtype)
    options["reduction"] = draw(REDUCTIONS)
    api = draw(APIS)
    drawn = f"{api}: {layout} {shape} {dtype}, {kind} x{scale}, {what}, {options_text(options)}"
    return Case(NLL_LOSS, input, target, options, api, drawn, logits)


# --- binary heads and targets ---------------------------------------------------------


@st.composite
def bce_calls(draw: st.DrawFn) -> Case:
    dtype = draw(DTYPES)
    layout = draw(st.sampled_from(["[N]", "[N, K]", "[B, 1, H, W]"]))
    if layout == "[N]":
        shape: tuple[int, ...] = (draw(st.integers(1, 256)),)
    elif layout == "[N, K]":
        shape = (draw(st.integers(1, 128)), draw(st.integers(1, 80)))
    else:
        shape = (
            draw(st.integers(1, 4)),
            1,
            4 * draw(st.integers(2, 16)),
            4 * draw(st.integers(2, 16)),
        )
    seed = draw(SEEDS)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]) | st.floats(0.1, 10.0))
    head = draw(st.sampled_from(["linear", "tanh", "prior", "zero"]))
    noise = raw_logits(shape, seed, 1.0)
    if head == "linear":
        shift = draw(st.floats(-3.0, 3.0))
        logits, head = noise * scale + shift, f"linear head x{scale:.3g} {shift:+.3g}"
    elif head == "tanh":
        logits, head = torch.tanh(noise * scale), f"tanh head x{scale:.3g}"
    elif head == "prior":  # bias log(p / (1 - p)), weights small or 0
        p = draw(st.sampled_from([0.01, 0.1, 0.5, 0.6]))
        w = draw(st.sampled_from([0.0, 0.01, 0.1]))
        logits, head = math.log(p / (1 - p)) + w * noise, f"prior-bias head p={p} w={w}"
    else:
        logits = torch.zeros(shape)
    kind = draw(st.sampled_from(["labels", "soft", "smoothed", "resized"]))
    labels = (raw_logits(shape, seed + 1, 1.0) > 0).float()
    if kind == "soft":
        target = torch.rand(shape, generator=gen(seed + 2))
    elif kind == "smoothed":
        target = labels * 0.9 + 0.05
    elif kind == "resized" and layout == "[B, 1, H, W]":  # a mask resized: overshoots [0, 1]
        mode = draw(st.sampled_from(["bicubic", "bilinear"]))
        small = (raw_logits((shape[0], 1, shape[2] // 4, shape[3] // 4), seed + 3, 1.0) > 0).float()
        target = F.interpolate(small, size=shape[2:], mode=mode, align_corners=False)
        kind = f"a mask resized {mode}"
    else:
        target, kind = labels, "labels"
    options: dict[str, object] = {"reduction": draw(REDUCTIONS)}
    if draw(st.booleans()):
        options["pos_weight"] = (torch.rand(shape[-1:], generator=gen(4)) * 3 + 0.5).to(dtype)
    if draw(st.booleans()):  # some elements count for nothing
        options["weight"] = (torch.rand(shape, generator=gen(5)) > 0.3).to(dtype)
    api = draw(APIS)
    drawn = f"{api}: {layout} {shape} {dtype}, {head}, {kind}, {options_text(options)}"
    return Case(
        BCE_WITH_LOGITS,
        logits.to(dtype),
        target.to(dtype),
        options,
        api,
        drawn,
        logits.to(dtype),
        head == "zero",
    )


# --- correct calls: silent -----------------------------------------------------------


@BOUNDED
@given(case=cross_entropy_calls())
def test_cross_entropy_idioms_are_silent(case: Case) -> None:
    assert codes(case) == []


@BOUNDED
@given(case=nll_loss_calls())
def test_nll_loss_idioms_are_silent(case: Case) -> None:
    assert codes(case) == []


@BOUNDED
@given(case=bce_calls())
def test_bce_with_logits_idioms_are_silent(case: Case) -> None:
    assert codes(case) == []


# --- one misuse planted: its code -----------------------------------------------------


def other_dims(case: Case) -> list[int]:
    return [d for d, size in enumerate(case.input.shape) if d != case.class_dim and size > 1]


def softmax_into_cross_entropy(case: Case, data: st.DataObject) -> Case:
    assume(not case.constant)
    planted = case.but("softmax", input=F.softmax(case.logits, case.class_dim))
    assume(enough_rows(planted, case.class_dim))
    return planted


def softmax_over_another_dim(case: Case, data: st.DataObject) -> Case:
    others = other_dims(case)
    assume(others and not case.constant)
    dim = data.draw(st.sampled_from(others))
    planted = case.but(f"softmax over dim {dim}", input=F.softmax(case.logits, dim))
    assume(enough_rows(planted, dim))
    return planted


def one_class(case: Case, data: st.DataObject) -> Case:
    dim = case.class_dim
    target = (
        case.target.narrow(dim, 0, 1)
        if case.target.is_floating_point()
        else case.target.clamp(max=0)
    )
    if case.target.is_floating_point():
        target = torch.ones_like(target)
    options = dict(case.options)
    if "weight" in options:
        options["weight"] = options["weight"][:1]  # type: ignore[index]
    return case.but("one class", input=case.input.narrow(dim, 0, 1), target=target, options=options)


def log_target(case: Case, data: st.DataObject) -> Case:
    return case.but("the target's log", target=case.target.log())


def logit_target(case: Case, data: st.DataObject) -> Case:
    target = raw_logits(tuple(case.input.shape), data.draw(SEEDS), 3.0).to(case.dtype)
    assume(target.float().amin() < -norm_tolerance(str(case.dtype).removeprefix("torch.")))
    return case.but("teacher logits as target", target=target)


def multi_hot(case: Case, data: st.DataObject) -> Case:
    dim, classes = case.class_dim, case.input.shape[case.class_dim]
    rows = case.input.shape[:dim] + case.input.shape[dim + 1 :]
    first = torch.randint(classes, rows, generator=gen(data.draw(SEEDS)))
    second = (first + 1 + torch.randint(classes - 1, rows, generator=gen(1))) % classes
    hot = F.one_hot(first, classes) + F.one_hot(second, classes)  # two labels per row
    return case.but("two labels per row", target=hot.movedim(-1, dim).to(case.dtype))


Plant = Callable[[Case, st.DataObject], Case]
#: name -> (code, the targets it is planted with, how)
CROSS_ENTROPY_MISUSES: dict[str, tuple[str, tuple[str, ...], Plant]] = {
    "softmax": ("KLG010", ("index", "soft"), softmax_into_cross_entropy),
    "softmax over another dim": ("KLG010", ("index", "soft"), softmax_over_another_dim),
    "one class": ("KLG013", ("index", "soft"), one_class),
    "log-probabilities as soft target": ("KLG015", ("soft",), log_target),
    "logits as soft target": ("KLG015", ("soft",), logit_target),
    "multi-hot target": ("KLG015", ("soft",), multi_hot),
}


@BOUNDED
@given(misuse=st.sampled_from(list(CROSS_ENTROPY_MISUSES)), data=st.data())
def test_each_cross_entropy_misuse_gets_its_code(misuse: str, data: st.DataObject) -> None:
    code, targets, plant = CROSS_ENTROPY_MISUSES[misuse]
    case = data.draw(cross_entropy_calls(targets), label="case")
    assume(case.input.numel() > 0)  # an empty batch holds no misuse
    assert codes(plant(case, data)) == [code]


def probabilities_into_nll(case: Case, data: st.DataObject) -> Case:
    return case.but("exp of its input", input=case.input.exp())


def sigmoid_into_nll(case: Case, data: st.DataObject) -> Case:
    return case.but("the sigmoid of its logits", input=torch.sigmoid(case.logits))


def logits_into_nll(case: Case, data: st.DataObject) -> Case:
    # all-negative logits are a part of a distribution (docs/evidence.md 2): no margin
    tol = norm_tolerance(str(case.dtype).removeprefix("torch."))
    assume(case.logits.numel() and case.logits.float().amax() > tol)
    return case.but("its logits", input=case.logits)


def log_softmax_over_another_dim(case: Case, data: st.DataObject) -> Case:
    others = other_dims(case)
    assume(others)
    dim = data.draw(st.sampled_from(others))
    planted = case.but(f"log_softmax over dim {dim}", input=F.log_softmax(case.logits, dim))
    call = _family_check.describe(
        NLL_LOSS, {"input": planted.input, "target": planted.target}, "function"
    )
    assert call is not None
    here, there = read(planted, case.class_dim), read(planted, dim)
    # the class dim must not read as log-probabilities itself, nor the other as one row
    assume(_family_rules.wants_other_dims(call, Numbers({case.class_dim: here} if here else {})))
    assume(there is not None and there.distinct >= 2)
    return planted


NLL_LOSS_MISUSES: dict[str, Plant] = {
    "probabilities": probabilities_into_nll,
    "sigmoid outputs": sigmoid_into_nll,
    "raw logits": logits_into_nll,
    "log_softmax over another dim": log_softmax_over_another_dim,
}


@BOUNDED
@given(case=nll_loss_calls(), misuse=st.sampled_from(list(NLL_LOSS_MISUSES)), data=st.data())
def test_each_nll_loss_misuse_gets_its_code(case: Case, misuse: str, data: st.DataObject) -> None:
    planted = NLL_LOSS_MISUSES[misuse](case, data)
    # a row of zeros is padding: probabilities that underflow to 0 hold no evidence
    rows = read(planted, case.class_dim)
    assume(rows is not None and rows.kept > 0)
    assert codes(planted) == ["KLG011"]


def counted(case: Case) -> torch.Tensor:
    """The target's values whose weight is not 0."""
    weight = case.options.get("weight")
    target = case.target.float()
    if isinstance(weight, torch.Tensor):
        return target[weight.expand_as(target) != 0]
    return target.reshape(-1)


def saturated_sigmoid(case: Case, data: st.DataObject) -> Case:
    """A model trained on its sigmoid's outputs: they saturate (docs/evidence.md 3)."""
    confidence = data.draw(st.sampled_from([10.0, 30.0]))
    planted = case.but(
        f"the sigmoid of x{confidence}", input=torch.sigmoid(case.logits * confidence)
    )
    x = planted.input.float()
    e = Elements(
        x.numel(),
        float(x.amin()),
        float(x.amax()),
        int(((x > 0) & (x <= _family_rules.WALL)).sum()),
        int(((x >= 1 - _family_rules.WALL) & (x <= 1)).sum()),
        0.0,
        1.0,
    )
    # a fresh model's sigmoid (0.5 +- 0.13) has no margin: silent by design
    assume(_family_rules.sigmoid_outputs(e))
    return planted


def out_of_range(why: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Plant:
    def plant(case: Case, data: st.DataObject) -> Case:
        return case.but(why, target=change(case.target))

    return plant


BCE_MISUSES: dict[str, tuple[str, Plant]] = {
    "saturated sigmoid": ("KLG012", saturated_sigmoid),
    "labels in {-1, 1}": ("KLG014", out_of_range("2 * target - 1", lambda t: 2 * t - 1)),
    "masks in {0, 255}": ("KLG014", out_of_range("target * 255", lambda t: t * 255)),
}


@BOUNDED
@given(case=bce_calls(), misuse=st.sampled_from(list(BCE_MISUSES)), data=st.data())
def test_each_bce_with_logits_misuse_gets_its_code(
    case: Case, misuse: str, data: st.DataObject
) -> None:
    code, plant = BCE_MISUSES[misuse]
    planted = plant(case, data)
    if code == "KLG014":
        values = counted(planted)
        outside = bool(
            (
                (values < -_family_rules.TARGET_MARGIN) | (values > 1 + _family_rules.TARGET_MARGIN)
            ).any()
        )
        # silent by design under 'none' (masked afterwards) and where the weight is 0
        expected = [code] if outside and planted.options["reduction"] != "none" else []
        assert codes(planted) == expected
    else:
        assert codes(planted) == [code]

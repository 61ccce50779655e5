"""A 1-D kl_div call is not always one distribution: a flattened selection is judged element-wise.

A distillation kernel selects the valid entries of ``[B, T, V]`` or top-k
``[B, T, K]`` log-probabilities with a boolean mask, which flattens several
tokens' distributions into one 1-D vector; its sum and logsumexp say
nothing. Where neither side sums to 1, only what holds element by element is
judged: a log-probability is never above 0, a probability never outside
[0, 1]. Hypothesis draws the selections (silent, under the guard and through
``check``) and plants one misuse in them (still found); the messages of the
element-wise findings are pinned line by line, beside those of a 1-D vocabulary
vector, which is one distribution and is judged as one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import kl_guard
from helpers import Tensors, logits, marked_line
from kl_guard._messages import fmt

LAYOUTS = ("[B, T, V]", "[B, T, K] top-k", "[B, T, K] top-k renormalized")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
REDUCTIONS = ("sum", "none", "batchmean")
MAX_ELEMENTS = 40_000
VOCABULARIES = st.sampled_from([2, 10, 1000, 16_384]) | st.integers(2, 4096)
#: How far from 1 a side's total must be for no side to look like one distribution
#: (the half-precision tolerances of a row sum and a logsumexp are within it).
NOT_ONE = 0.1


@dataclasses.dataclass(frozen=True)
class Selection:
    """Student and teacher log-probabilities, masked to 1-D as a distillation kernel does."""

    layout: str
    batch: int
    tokens: int
    vocab: int
    k: int
    dtype: torch.dtype
    scale: float
    keep: float
    drop_entries: bool  # some top-k entries are invalid too, not only padding tokens
    log_target: bool
    reduction: str
    seed: int

    def _generator(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 8 + stream)

    @functools.cached_property
    def _logits(self) -> Tensors:
        shape = (self.batch, self.tokens, self.vocab)
        return (
            (torch.randn(shape, generator=self._generator(0)) * self.scale).to(self.dtype),
            (torch.randn(shape, generator=self._generator(1)) * self.scale).to(self.dtype),
        )

    @functools.cached_property
    def _log_probs(self) -> Tensors:
        student, teacher = self._logits
        return F.log_softmax(student, -1), F.log_softmax(teacher, -1)

    @functools.cached_property
    def _ids(self) -> torch.Tensor:
        """The teacher's top-k ids, which the kernel gathers both sides at."""
        return self._log_probs[1].topk(self.k, -1).indices

    def raw(self, stream: int) -> torch.Tensor:
        """The logits of ``stream`` (0: the student, 1: the teacher) in the
        kernel's layout, before masking."""
        x = self._logits[stream]
        return x if self.layout == "[B, T, V]" else x.gather(-1, self._ids)

    def full(self, stream: int) -> torch.Tensor:
        """What the kernel holds before masking, as log-probabilities."""
        logp = self._log_probs[stream]
        if self.layout == "[B, T, V]":
            return logp
        top = logp.gather(-1, self._ids)
        return F.log_softmax(top, -1) if self.layout.endswith("renormalized") else top

    @functools.cached_property
    def _mask(self) -> torch.Tensor:
        """Valid entries, as a [B, T, V or K] mask: whole padding tokens, and,
        with ``drop_entries``, single entries. Two tokens are always valid."""
        width = self.vocab if self.layout == "[B, T, V]" else self.k
        tokens = torch.rand(self.batch, self.tokens, generator=self._generator(2)) < self.keep
        tokens.view(-1)[:2] = True
        mask = tokens.unsqueeze(-1).expand(self.batch, self.tokens, width)
        if self.drop_entries:
            entries = torch.rand(mask.shape, generator=self._generator(3)) < 0.8
            entries[..., 0] = True
            mask = mask & entries
        return mask

    def select(self, x: torch.Tensor) -> torch.Tensor:
        selected = x[self._mask]
        assert selected.dim() == 1
        return selected

    def log_probs(self) -> Tensors:
        """The student's and the teacher's selected log-probabilities, 1-D."""
        return self.select(self.full(0)), self.select(self.full(1))

    def target(self, log_q: torch.Tensor) -> torch.Tensor:
        return log_q if self.log_target else log_q.exp()


@st.composite
def selections(draw: st.DrawFn) -> Selection:
    layout = draw(st.sampled_from(LAYOUTS))
    # a top-1 slice renormalized is log 1 = 0 everywhere, a KL of 0 whatever the model
    vocab = draw(VOCABULARIES.map(lambda v: max(v, 3)) if layout == LAYOUTS[2] else VOCABULARIES)
    batch = draw(st.integers(1, max(1, min(4, MAX_ELEMENTS // (2 * vocab)))))
    # two tokens at least (_mask keeps the first two): several distributions in one vector
    most = max(2, min(16, MAX_ELEMENTS // (vocab * batch)))
    tokens = draw(st.integers(2 if batch == 1 else 1, most))
    return Selection(
        layout=layout,
        batch=batch,
        tokens=tokens,
        vocab=vocab,
        k=draw(st.integers(2 if layout == LAYOUTS[2] else 1, min(vocab - 1, 64))),
        dtype=draw(st.sampled_from(DTYPES)),
        scale=draw(st.sampled_from([0.1, 1.0, 4.0, 10.0]) | st.floats(0.1, 10.0)),
        keep=draw(st.sampled_from([0.3, 0.7, 1.0])),
        drop_entries=draw(st.booleans()),
        log_target=draw(st.booleans()),
        reduction=draw(st.sampled_from(REDUCTIONS)),
        seed=draw(st.integers(0, 2**30)),
    )


def jsd_calls(log_p: torch.Tensor, log_q: torch.Tensor, sel: Selection) -> list[Tensors]:
    """The two halves of a Jensen-Shannon divergence against the mixture m = (p + q) / 2."""
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - math.log(2)
    return [(log_m, sel.target(log_p)), (log_m, sel.target(log_q))]


def assume_several_distributions(*log_probs: torch.Tensor) -> None:
    """No side sums to 1: one that does is read as one distribution (a 1-D
    vocabulary vector), as a flattened selection whose slices happen to add
    up to 1 is too (two top-1 slices of near-uniform tokens: 0.5 + 0.5)."""
    for x in log_probs:
        assume(abs(float(x.double().exp().sum()) - 1) > NOT_ONE)


def assume_not_one_distribution(inp: torch.Tensor, tgt: torch.Tensor, log_target: bool) -> None:
    """Not both sides sum to 1: a 1-D call that does is one distribution (a
    vocabulary vector). One side of a selection may, by chance (see
    test_a_selection_that_sums_to_one_on_one_side_by_chance_is_silent)."""
    target = tgt if log_target else tgt.clamp_min(1e-30).log()
    assume(any(abs(float(x.double().exp().sum()) - 1) > NOT_ONE for x in (inp, target)))


def partial(sel: Selection) -> bool:
    """Whether the selection holds parts of distributions, never renormalized."""
    return sel.drop_entries or sel.layout == "[B, T, K] top-k"


def assume_correct_loss(inp: torch.Tensor, tgt: torch.Tensor, sel: Selection) -> None:
    loss = F.kl_div(inp, tgt, reduction=sel.reduction, log_target=sel.log_target)
    assume(bool(loss.isfinite().all()))  # a float16 sum past 65504 is inf: KLG004, rightly
    if partial(sel):
        # The KL of parts can be negative, where the student holds more of a
        # part's mass than the teacher: KLG004, as for 2-D top-k slices.
        exact = F.kl_div(inp.double(), tgt.double(), reduction="sum", log_target=sel.log_target)
        assume(float(exact) >= 0)


@given(sel=selections(), jsd=st.booleans())
def test_a_flattened_selection_of_log_probabilities_is_silent(sel: Selection, jsd: bool) -> None:
    log_p, log_q = sel.log_probs()
    calls = jsd_calls(log_p, log_q, sel) if jsd else [(log_p, sel.target(log_q))]
    for inp, tgt in calls:
        assume_not_one_distribution(inp, tgt, sel.log_target)
        assume_correct_loss(inp, tgt, sel)
    with kl_guard.guard(mode="raise", check_every=1) as block:
        for inp, tgt in calls:
            F.kl_div(inp, tgt, reduction=sel.reduction, log_target=sel.log_target)
    assert block.findings == []
    for inp, tgt in calls:
        found = kl_guard.check(inp, tgt, reduction=sel.reduction, log_target=sel.log_target)
        assert found == [], [f.message for f in found]


def test_the_top_k_jsd_of_a_distillation_kernel_is_silent() -> None:
    """The case that got KLG003 and KLG007: valid entries of [B, T, K] top-k
    log-probabilities, selected by a mask, summed against their mixture."""
    student, teacher = logits(2, 8, 512, seed=4), logits(2, 8, 512, seed=5, scale=3)
    k = 16
    ids = teacher.topk(k, -1).indices
    log_p = F.log_softmax(student.gather(-1, ids), -1)
    log_q = F.log_softmax(teacher.gather(-1, ids), -1)
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[0, 6:] = valid[1, 3:] = False  # padding
    mask = valid.unsqueeze(-1).expand_as(log_p)
    lp, lq = log_p[mask], log_q[mask]
    log_m = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2)
    with kl_guard.guard(mode="raise", check_every=1) as block:
        jsd = 0.5 * (
            F.kl_div(log_m, lp, reduction="sum", log_target=True)
            + F.kl_div(log_m, lq, reduction="sum", log_target=True)
        )
    assert block.findings == []
    assert float(jsd) > 0


# -- still found -------------------------------------------------------------------


def _probabilities_as_input(sel: Selection) -> tuple[Tensors, bool]:
    log_p, log_q = sel.log_probs()
    return (log_p.exp(), sel.target(log_q)), sel.log_target


def _logits_as_input(sel: Selection) -> tuple[Tensors, bool]:
    _, log_q = sel.log_probs()
    return (sel.select(sel.raw(0)), sel.target(log_q)), sel.log_target


def _exp_of_logits_as_target(sel: Selection) -> tuple[Tensors, bool]:
    log_p, _ = sel.log_probs()
    return (log_p, sel.select(sel.raw(1)).exp()), False


def _logits_as_target(sel: Selection) -> tuple[Tensors, bool]:
    log_p, _ = sel.log_probs()
    return (log_p, sel.select(sel.raw(1))), False


def _log_probabilities_without_log_target(sel: Selection) -> tuple[Tensors, bool]:
    return sel.log_probs(), False


def _probabilities_with_log_target(sel: Selection) -> tuple[Tensors, bool]:
    log_p, log_q = sel.log_probs()
    return (log_p, log_q.exp()), True


Misuse = Callable[[Selection], tuple[Tensors, bool]]
#: name -> (code, how to build the tensors and log_target)
MISUSES: dict[str, tuple[str, Misuse]] = {
    "probabilities as input": ("KLG003", _probabilities_as_input),
    "logits as input": ("KLG003", _logits_as_input),
    "exp of logits as target": ("KLG007", _exp_of_logits_as_target),
    "logits as target": ("KLG007", _logits_as_target),
    "log-probabilities without log_target": ("KLG002", _log_probabilities_without_log_target),
    "probabilities with log_target=True": ("KLG002", _probabilities_with_log_target),
}


def _visibly_wrong(name: str, inp: torch.Tensor, tgt: torch.Tensor) -> bool:
    """Whether the misuse shows element by element, well past any dtype's
    tolerance: a flattened softmax over a big vocabulary may hold no value
    above 0.02, logits of a small scale none above 1."""
    x, y = inp.double(), tgt.double()
    if name.endswith("as input"):
        return float(x.max()) > 0.1
    if name == "exp of logits as target":
        return float(y.max()) > 1.1
    if name == "logits as target":
        return float(y.min()) < -0.1 and float(y.max()) > 0.1
    if name == "log-probabilities without log_target":
        return float(y.min()) < -0.1
    return float(y.max()) > 0.1


@given(sel=selections(), name=st.sampled_from(list(MISUSES)))
def test_a_misuse_in_a_flattened_selection_is_still_found(sel: Selection, name: str) -> None:
    code, build = MISUSES[name]
    assume_several_distributions(*sel.log_probs())
    (inp, tgt), log_target = build(sel)
    assume(bool(tgt.isfinite().all()))  # exp(16) is inf in float16: nothing left to read
    assume(_visibly_wrong(name, inp, tgt))
    found = kl_guard.check(inp, tgt, reduction=sel.reduction, log_target=log_target)
    codes = [f.code for f in found]
    assert code in codes, [f.message for f in found]
    assert set(codes) <= {code, "KLG004"}, codes  # a wrong space often makes the loss wrong
    guard = kl_guard.guard(mode="raise", check_every=1)
    with pytest.raises(kl_guard.KLGuardError) as raised, guard:
        F.kl_div(inp, tgt, reduction=sel.reduction, log_target=log_target)
    assert code in [f.code for f in raised.value.findings]


# -- the messages --------------------------------------------------------------------

B, T, V = 3, 7, 40
VALID = torch.tensor(
    [[1, 1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
)


def flattened(x: torch.Tensor) -> torch.Tensor:
    """The valid tokens' entries of a [B, T, V] tensor, in one vector."""
    return x[VALID.unsqueeze(-1).expand_as(x)]


STUDENT = logits(B, T, V, seed=1)
LOG_P = flattened(F.log_softmax(STUDENT, -1))
LOG_Q = flattened(F.log_softmax(logits(B, T, V, seed=2), -1))
WHERE = "before the tensor is flattened or masked"


def message(
    inp: torch.Tensor, tgt: torch.Tensor, code: str, *, log_target: bool = False
) -> list[str]:
    """The lines of the one ``code`` finding of this call with 'sum', 'at:' left out."""
    found = kl_guard.check(inp, tgt, reduction="sum", log_target=log_target)
    [finding] = [f for f in found if f.code == code]
    lines = finding.message.splitlines()
    assert lines[-1].startswith("  at: ")
    return lines[:-1]


@pytest.mark.parametrize(
    ("inp", "headline"),
    [
        (flattened(F.softmax(STUDENT, -1)), "non-negative scores that are not normalized"),
        (flattened(STUDENT.abs() + 0.5), "non-negative scores that are not normalized"),
        (flattened(STUDENT * 3), "raw logits"),
    ],
    ids=["probabilities", "positive logits", "logits"],
)
def test_the_element_wise_klg003_names_no_dim(inp: torch.Tensor, headline: str) -> None:
    lines = message(inp, LOG_Q.exp(), "KLG003")
    assert lines[0] == f"KLG003: input to kl_div looks like {headline}, not log-probabilities"
    assert lines[1].startswith(f"  input:  f32[{inp.numel()}], dim 0 (1 rows): values ")
    largest = fmt(float(inp.max()))
    assert (
        lines[2] == f"  a log-probability is never above 0; the input's largest value is {largest}"
    )
    assert lines[3] == f"  fix: F.log_softmax(logits, dim=<class dim>) {WHERE}"
    assert len(lines) == 4
    assert "dim=0" not in "\n".join(lines)


def test_a_vocabulary_vector_of_probabilities_is_one_distribution() -> None:
    """1-D, 'sum', probabilities as input: the one-distribution KLG003, over dim 0."""
    p, q = F.softmax(logits(1000, seed=3), 0), F.softmax(logits(1000, seed=4), 0)
    lines = message(p, q, "KLG003")
    assert lines[0] == (
        "KLG003: input to kl_div looks like probabilities (softmax output?), not log-probabilities"
    )
    assert lines[1].startswith("  input:  f32[1000], dim 0 (1 rows): ")
    assert ", row sums 1, " in lines[1]
    assert lines[2:] == [
        "  kl_div wants input = log-probabilities over dim 0 "
        "(probs.clamp_min(1e-12).log() if only probabilities exist)",
        '  fix: F.kl_div(F.log_softmax(logits, dim=0), target, reduction="sum")',
    ]
    with pytest.raises(kl_guard.KLGuardError) as raised, kl_guard.guard(mode="raise"):
        F.kl_div(p, q, reduction="sum")  # a vocabulary vector
    assert {f.code for f in raised.value.findings} == {"KLG003", "KLG004"}
    line = marked_line(__file__, "a vocabulary vector")
    assert {f.location for f in raised.value.findings} == {f"tests/test_one_dim.py:{line}"}


@pytest.mark.parametrize(
    ("tgt", "headline", "why", "fix"),
    [
        (
            LOG_Q.exp() * 10,
            "target of kl_div has values above 1: it is not probabilities",
            "a probability is never above 1",
            "F.softmax(target_logits, dim=<class dim>)",
        ),
        (
            flattened(logits(B, T, V, seed=2)),
            "target of kl_div has negative values: it is not probabilities",
            "a probability is never below 0",
            "F.softmax(target_logits, dim=<class dim>)",
        ),
    ],
    ids=["above 1", "negative"],
)
def test_the_element_wise_klg007(tgt: torch.Tensor, headline: str, why: str, fix: str) -> None:
    lines = message(LOG_P, tgt, "KLG007")
    assert lines[0] == f"KLG007: {headline}"
    assert lines[1].startswith(f"  target: f32[{tgt.numel()}], dim 0 (1 rows): values ")
    assert lines[2:] == [f"  {why}", f"  fix: {fix} {WHERE}"]


def test_the_element_wise_klg007_of_a_log_target() -> None:
    lines = message(LOG_P, flattened(logits(B, T, V, seed=2)) * 3, "KLG007", log_target=True)
    assert lines[0] == "KLG007: target of kl_div (log_target=True) is not log-probabilities"
    assert lines[2:] == [
        "  a log-probability is never above 0",
        f"  fix: F.log_softmax(target_logits, dim=<class dim>) {WHERE}",
    ]


@pytest.mark.parametrize(
    ("tgt", "log_target", "looks_like", "fix"),
    [
        (
            LOG_Q,
            False,
            "non-positive log-scores that are not normalized",
            'reduction="sum", log_target=True',
        ),
        (LOG_Q.exp(), True, "non-negative scores that are not normalized", 'reduction="sum"'),
    ],
    ids=["log-probabilities, log_target=False", "probabilities, log_target=True"],
)
def test_the_element_wise_klg002_flips_log_target(
    tgt: torch.Tensor, log_target: bool, looks_like: str, fix: str
) -> None:
    lines = message(LOG_P, tgt, "KLG002", log_target=log_target)
    assert lines[0] == (
        f"KLG002: kl_div was called with log_target={log_target} but the target looks like "
        f"{looks_like}"
    )
    assert lines[2:] == [
        "  log_target=True means the target holds log-probabilities; "
        "log_target=False (the default) means probabilities",
        f"  fix: F.kl_div(input, target, {fix})",
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_flattened_selection_of_the_messages_is_silent(
    reduction: str, dtype: torch.dtype
) -> None:
    """The tensors the messages are built from, correct: the misuses above are
    the only thing wrong in them."""
    inp, tgt = LOG_P.to(dtype), LOG_Q.to(dtype)
    assert kl_guard.check(inp, tgt, reduction=reduction, log_target=True) == []
    assert kl_guard.check(inp, tgt.exp(), reduction=reduction) == []


def _slices(mass: float, seed: int) -> torch.Tensor:
    """Two tokens' top-8 slices, never renormalized, each holding ``mass``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(2, 8, generator=g)
    return (w / w.sum(-1, keepdim=True) * mass).flatten()


@pytest.mark.parametrize("log_target", [False, True])
def test_a_selection_that_sums_to_one_on_one_side_by_chance_is_silent(log_target: bool) -> None:
    teacher, student = _slices(0.5, 0), _slices(0.3, 1).log()  # 0.5 + 0.5 adds up to 1
    tgt = teacher.log() if log_target else teacher
    assert F.kl_div(student, tgt, reduction="sum", log_target=log_target) > 0
    assert kl_guard.check(student, tgt, reduction="sum", log_target=log_target) == []
    # and the other way round: the input's slices add up to 1
    assert kl_guard.check(_slices(0.5, 2).log(), _slices(0.8, 3), reduction="sum") == []


def test_parts_with_a_negative_kl_read_as_parts_in_one_dimension() -> None:
    teacher = logits(2, 6, 100, seed=3)
    lp, lq = F.log_softmax(teacher, -1), F.log_softmax(3 * teacher, -1)  # the student sharper
    top = lp.topk(8, -1).indices
    p, q = lp.gather(-1, top).flatten(), lq.gather(-1, top).flatten()
    assert F.kl_div(q, p, reduction="sum", log_target=True) < 0
    # 'none': the 1-D vector's one row is no distribution, as [N, K] rows of parts are not
    assert kl_guard.check(q, p, reduction="none", log_target=True) == []
    [finding] = kl_guard.check(q, p, reduction="sum", log_target=True)
    assert finding.code == "KLG004"
    assert finding.message.splitlines()[2] == (
        "  cause: the 1-D input and target hold several distributions, or parts of them "
        "(a top-k selection never renormalized): the KL of a part can be negative"
    )

"""LLM distillation idioms: silent when correct, their code with one planted pitfall.

Each idiom is a small builder, as current distillation and RLHF code writes
it: student and teacher logits in, the ``F.kl_div`` calls it makes out (a
vocabulary-parallel step makes one per shard). Hypothesis draws the dtype
(float32, bfloat16, float16), the layout (``[N, C]``, ``[B, T, V]``, or
``[B, T, V]`` masked to ``[N, V]`` by boolean indexing) and the sizes.
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

LAYOUTS = ("[N, C]", "[B, T, V]", "masked [N, V]")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_ELEMENTS = 100_000
VOCABULARIES = st.sampled_from([2, 10, 256, 4096, 32_000]) | st.integers(2, 4096)


@dataclasses.dataclass(frozen=True)
class KL:
    """One ``F.kl_div`` call of an idiom."""

    input: torch.Tensor
    target: torch.Tensor
    reduction: str = "batchmean"
    log_target: bool = False


@dataclasses.dataclass(frozen=True)
class Batch:
    """Student and teacher logits of one draw, the vocabulary on the last dim."""

    student: torch.Tensor  # requires grad, as a model's output does
    teacher: torch.Tensor
    seed: int

    @property
    def vocab(self) -> int:
        return self.student.shape[-1]

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + 1)


def forward_kl(b: Batch) -> list[KL]:
    temperature = 2.0
    s, t = b.student / temperature, b.teacher / temperature
    return [
        KL(F.log_softmax(s, -1), F.softmax(t, -1)),
        KL(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True),
    ]


def reverse_kl(b: Batch) -> list[KL]:
    # KL(student || teacher), mode-seeking (MiniLLM, GKD's beta=0): the
    # student's distribution is the target, and its gradient flows there.
    t_logp, s_logp = F.log_softmax(b.teacher, -1), F.log_softmax(b.student, -1)
    return [
        KL(t_logp, s_logp, "none", log_target=True),
        KL(t_logp, F.softmax(b.student, -1)),
    ]


def generalized_jsd(b: Batch) -> list[KL]:
    # GKD's loss: both distributions against their beta-mixture.
    beta = 0.5
    s_logp, t_logp = F.log_softmax(b.student, -1), F.log_softmax(b.teacher, -1)
    mixture = torch.logsumexp(
        torch.stack((s_logp + math.log(1 - beta), t_logp + math.log(beta))), 0
    )
    return [KL(mixture, t_logp, "none", True), KL(mixture, s_logp, "none", True)]


def rlhf_kl_penalty(b: Batch) -> list[KL]:
    # KL(policy || reference) over the vocabulary, per token, then summed.
    with torch.no_grad():
        ref_logp = F.log_softmax(b.teacher, -1)
    return [KL(ref_logp, F.log_softmax(b.student, -1), "none", log_target=True)]


def vocab_parallel(b: Batch) -> list[KL]:
    # Each tensor-parallel rank holds a slice of log-probabilities normalized
    # over the whole vocabulary; the per-rank sums add up across ranks.
    # With as many rows as the vocabulary has ids, a near-uniform slice's columns
    # sum to about 1: normalized over the rows, as a fact (no margin: README, Limits).
    assume(b.student.shape[0] != b.vocab)
    ranks = min(4, b.vocab // 2)  # at least two ids per rank

    def shards(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.tensor_split(x, ranks, -1)

    s_logp, t_logp, t_p = (
        F.log_softmax(b.student, -1),
        F.log_softmax(b.teacher, -1),
        F.softmax(b.teacher, -1),
    )
    calls: list[KL] = []
    for s, t, p in zip(shards(s_logp), shards(t_logp), shards(t_p), strict=True):
        calls += [KL(s, t, "none", log_target=True), KL(s, p, "none")]
    return calls


def top_k(b: Batch) -> list[KL]:
    # Teacher and student log-probabilities at the teacher's top-k ids, never
    # renormalized (the captured mass is logged: a deliberate approximation).
    k = max(2, min(64, b.vocab // 2))
    s_logp, t_logp = F.log_softmax(b.student, -1), F.log_softmax(b.teacher, -1)
    ids = t_logp.topk(k, -1).indices
    s_k, t_k = s_logp.gather(-1, ids), t_logp.gather(-1, ids)
    return [KL(s_k, t_k, "none", log_target=True), KL(s_k, t_k.exp(), "none")]


def top_k_with_tail(b: Batch) -> list[KL]:
    # Top-k plus one bucket for the rest, log(1 - sum): normalized again.
    k = max(1, min(64, b.vocab - 1))
    s_logp, t_logp = F.log_softmax(b.student.float(), -1), F.log_softmax(b.teacher.float(), -1)
    ids = t_logp.topk(k, -1).indices

    def with_tail(logp: torch.Tensor) -> torch.Tensor:
        head = logp.gather(-1, ids)
        mass = head.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6)
        return torch.cat((head, torch.log1p(-mass)), -1).to(b.student.dtype)

    return [KL(with_tail(s_logp), with_tail(t_logp), log_target=True)]


def half_precision_cast_up(b: Batch) -> list[KL]:
    # A half-precision model without autocast, the loss in float32.
    s_logp = F.log_softmax(b.student, -1).float()
    return [
        KL(s_logp, F.softmax(b.teacher, -1).float()),
        KL(s_logp, F.log_softmax(b.teacher, -1).float(), log_target=True),
    ]


def float32_teacher(b: Batch) -> list[KL]:
    return [KL(F.log_softmax(b.student, -1), F.softmax(b.teacher.float(), -1))]


def one_vocabulary_vector(b: Batch) -> list[KL]:
    row = (0,) * (b.student.dim() - 1)
    return [KL(F.log_softmax(b.student[row], -1), F.softmax(b.teacher[row], -1), "sum")]


def masked_mean_of_unreduced(b: Batch) -> list[KL]:
    # reduction='none', then loss.sum(-1) * mask / mask.sum(); the padding's
    # teacher rows are zero (the first token is always real).
    mask = torch.rand(b.teacher.shape[:-1], generator=b.generator()) < 0.7
    mask.view(-1)[0] = True
    target = F.softmax(b.teacher, -1) * mask.unsqueeze(-1)
    return [KL(F.log_softmax(b.student, -1), target, "none")]


def teacher_under_no_grad(b: Batch) -> list[KL]:
    with torch.no_grad():
        target = F.softmax(b.teacher, -1)
    return [KL(F.log_softmax(b.student, -1), target)]


def label_smoothing(b: Batch) -> list[KL]:
    eps = 0.1
    labels = torch.randint(b.vocab, b.student.shape[:-1], generator=b.generator())
    smoothed = F.one_hot(labels, b.vocab).double() * (1 - eps) + eps / b.vocab
    return [KL(F.log_softmax(b.student, -1), smoothed.to(b.student.dtype))]


IDIOMS: dict[str, Callable[[Batch], list[KL]]] = {
    f.__name__: f
    for f in (
        forward_kl,
        reverse_kl,
        generalized_jsd,
        rlhf_kl_penalty,
        vocab_parallel,
        top_k,
        top_k_with_tail,
        half_precision_cast_up,
        float32_teacher,
        one_vocabulary_vector,
        masked_mean_of_unreduced,
        teacher_under_no_grad,
        label_smoothing,
    )
}


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    vocab = draw(VOCABULARIES)
    layout = draw(st.sampled_from(LAYOUTS))
    budget = max(1, MAX_ELEMENTS // vocab)
    if layout == "[N, C]":
        lead: tuple[int, ...] = (draw(st.integers(1, min(budget, 64))),)
    else:
        b = draw(st.integers(1, min(budget, 4)))
        lead = (b, draw(st.integers(1, max(1, min(budget // b, 32)))))
    seed = draw(st.integers(0, 2**30))
    g = torch.Generator().manual_seed(seed)
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0, 10.0]))

    def logits() -> torch.Tensor:
        return torch.randn((*lead, vocab), generator=g) * scale

    student, teacher = logits(), logits() * 2
    if layout == "masked [N, V]":
        mask = torch.rand(lead, generator=g) < 0.7
        mask.view(-1)[0] = True
        student, teacher = student[mask], teacher[mask]
    return Batch(student.to(dtype).requires_grad_(), teacher.to(dtype), seed)


def codes_of(call: KL) -> list[str]:
    found = kl_guard.check(
        call.input, call.target, reduction=call.reduction, log_target=call.log_target
    )
    return [f.code for f in found]


def assume_finite(call: KL) -> None:
    """A float16 sum past 65504 is inf: KLG004 rightly says so (test_check covers it)."""
    with torch.no_grad():
        loss = F.kl_div(
            call.input, call.target, reduction=call.reduction, log_target=call.log_target
        )
    assume(bool(loss.isfinite().all()))


@given(batch=batches(), idiom=st.sampled_from(list(IDIOMS)))
@example(  # a bfloat16 model's log-probabilities over 32k tokens, cast to float32
    batch=Batch(
        torch.randn(4, 32_000, generator=torch.Generator().manual_seed(0))
        .bfloat16()
        .requires_grad_(),
        torch.randn(4, 32_000, generator=torch.Generator().manual_seed(1)).bfloat16() * 4,
        0,
    ),
    idiom="half_precision_cast_up",
)
def test_each_idiom_is_silent(batch: Batch, idiom: str) -> None:
    calls = IDIOMS[idiom](batch)
    for call in calls:
        assume_finite(call)
    for call in calls:
        assert codes_of(call) == [], idiom
    # The default codes, patched; every call checked, whatever earlier examples did.
    with kl_guard.guard(check_every=1) as guard:
        for call in calls:
            F.kl_div(call.input, call.target, reduction=call.reduction, log_target=call.log_target)
    assert guard.findings == []


def probabilities_as_input(call: KL) -> KL:
    return dataclasses.replace(call, input=call.input.exp())


def logits_as_input(call: KL) -> KL:
    # log-probabilities less their mean: logits, up to a constant
    return dataclasses.replace(call, input=call.input - call.input.mean(-1, keepdim=True))


def log_target_without_the_flag(call: KL) -> KL:
    target = call.target if call.log_target else call.target.log()
    return dataclasses.replace(call, target=target, log_target=False)


def probabilities_with_log_target(call: KL) -> KL:
    target = call.target.exp() if call.log_target else call.target
    return dataclasses.replace(call, target=target, log_target=True)


def reduction_mean(call: KL) -> KL:
    return dataclasses.replace(call, reduction="mean")


PITFALLS: dict[str, tuple[str, Callable[[KL], KL]]] = {
    "probabilities as input": ("KLG003", probabilities_as_input),
    "logits as input": ("KLG003", logits_as_input),
    "log target with log_target=False": ("KLG002", log_target_without_the_flag),
    "probabilities with log_target=True": ("KLG002", probabilities_with_log_target),
    "reduction mean": ("KLG001", reduction_mean),
}


@given(
    batch=batches(),
    idiom=st.sampled_from(list(IDIOMS)),
    pitfall=st.sampled_from(list(PITFALLS)),
)
def test_one_planted_pitfall_gets_its_code(batch: Batch, idiom: str, pitfall: str) -> None:
    code, plant = PITFALLS[pitfall]
    for call in IDIOMS[idiom](batch):
        planted = plant(call)
        assume_finite(call)
        codes = codes_of(planted)
        # A wrong space often makes the loss negative or NaN: KLG004 comes with it.
        assert code in codes, (idiom, codes)
        assert set(codes) <= {code, "KLG004"}, (idiom, codes)


def test_reverse_kl_is_silent_by_default_and_reported_when_selected() -> None:
    batch = Batch(torch.randn(8, 100).requires_grad_(), torch.randn(8, 100), 0)
    [call, _] = reverse_kl(batch)
    args = (call.input, call.target)
    assert kl_guard.check(*args, reduction="none", log_target=True) == []
    selected = kl_guard.check(*args, reduction="none", log_target=True, select="KLG008")
    assert [f.code for f in selected] == ["KLG008"]

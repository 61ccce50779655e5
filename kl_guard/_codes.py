"""The finding codes, each explained once: the README's table, ``codes`` and ``explain`` read it.

KL's codes are here, the loss family's in ``_codes_family``. Every example
runs as it is shown (tests/test_codes.py runs each) with ``torch``,
``torch.nn.functional as F`` and ``torch.nn as nn`` imported: the wrong one
gets its code, the right one gets none.
"""

from __future__ import annotations

import textwrap

from kl_guard._codes_family import FAMILY
from kl_guard._rule import Code

WIDTH = 79


ALL = (
    Code(
        code="KLG001",
        title="reduction resolves to 'mean', which also divides by the number of classes",
        meaning=(
            "With reduction='mean', F.kl_div and nn.KLDivLoss divide the summed loss by every "
            "element of the input, batch times classes: the value and its gradient are the KL "
            "divergence per sample divided by the number of classes. 'batchmean' divides by "
            "the batch size only and gives the KL divergence per sample; for one distribution "
            "alone, 'sum' gives it.\n\n"
            "'mean' is the default of both, and what the deprecated size_average and reduce "
            "arguments resolve to: reduce='batchmean', a typo, silently means 'mean'.\n\n"
            "For token distributions [B, T, V], 'batchmean' divides by B only: the KL summed "
            "over each sequence's T tokens, padding included. Token-level distillation "
            "usually wants the KL per token over the real tokens: "
            '(F.kl_div(input, target, reduction="none").sum(-1) * mask).sum() / mask.sum() '
            "with a [B, T] padding mask."
        ),
        cause="`nn.KLDivLoss()` with no arguments, or `reduce='batchmean'`",
        fix='`reduction="batchmean"`',
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)  # student and teacher logits\n"
            "kl = nn.KLDivLoss()\n"
            "loss = kl(F.log_softmax(s, 1), F.softmax(t, 1))\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)  # student and teacher logits\n"
            'kl = nn.KLDivLoss(reduction="batchmean")\n'
            "loss = kl(F.log_softmax(s, 1), F.softmax(t, 1))\n"
        ),
        linted=True,
    ),
    Code(
        code="KLG002",
        title="log_target does not match the space the target is in",
        meaning=(
            "log_target says what the target holds: False (the default) means probabilities, "
            "True means log-probabilities. With the wrong flag kl_div computes the loss from "
            "the wrong numbers, without an error. The advice 'set log_target=True when you "
            "pass probabilities' has it backwards."
        ),
        cause="log-probabilities with `log_target=False`, or probabilities with `log_target=True`",
        fix="flip `log_target`",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            "loss = F.kl_div(\n"
            '    F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True\n'
            ")\n"
        ),
        linted=True,
    ),
    Code(
        code="KLG003",
        title="input is not log-probabilities",
        meaning=(
            "F.kl_div(input, target) computes target * (log(target) - input): the input must "
            "be log-probabilities, the output of log_softmax. Probabilities (a softmax "
            "output), raw logits or unnormalized scores give a loss that is not a KL "
            "divergence, often a negative one. So does swapping input and target: kl_div is "
            "not symmetric, the input is the model's distribution, the target the reference."
        ),
        cause="softmax output, raw logits, unnormalized scores, or input and target swapped",
        fix="`F.log_softmax(logits, dim=...)` as input",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
        ),
        linted=True,
    ),
    Code(
        code="KLG004",
        title="the loss is negative beyond rounding, NaN or infinite",
        meaning=(
            "A KL divergence is never negative, and it is finite wherever the model gives "
            "some probability to what the target holds. A negative loss is the symptom of "
            "another finding (KLG002, KLG003, KLG007), reported with it. An infinite or NaN "
            "loss comes from -inf in the input, the log of a probability of 0 (probs.log()), "
            "or in a log target. The message names the cause it found."
        ),
        cause="one of the above; `-inf` in the input (`probs.log()`), `-inf` in a log target",
        fix="the cause is named in the message",
        wrong=(
            "torch.manual_seed(0)\n"
            "probs = F.one_hot(torch.arange(8) % 5, 5).float()  # a model sure of itself\n"
            "target = F.softmax(torch.randn(8, 5), dim=1)\n"
            'loss = F.kl_div(probs.log(), target, reduction="batchmean")  # log(0) is -inf\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "probs = F.one_hot(torch.arange(8) % 5, 5).float()  # a model sure of itself\n"
            "target = F.softmax(torch.randn(8, 5), dim=1)\n"
            'loss = F.kl_div(probs.clamp_min(1e-12).log(), target, reduction="batchmean")\n'
        ),
    ),
    Code(
        code="KLG005",
        title="input and target shapes differ and broadcast silently",
        meaning=(
            "kl_div broadcasts input and target to one shape without a warning: a target of "
            "one distribution, [C], against an input of [N, C] compares every sample with "
            "that one target, and with 'batchmean' a batch made by broadcasting is divided by "
            "the wrong size. Give both the same shape, with target.expand_as(input) where the "
            "broadcast is meant."
        ),
        cause="a `[C]` target against `[N, C]` input",
        fix="give both the same shape",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t[0], 0), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
        ),
    ),
    Code(
        code="KLG006",
        title="a distribution is normalized over the wrong dimension",
        meaning=(
            "kl_div compares distributions along one dimension, the classes. A softmax or "
            "log_softmax over another one (dim=0, the batch, is the usual slip) gives rows "
            "that are not distributions, and a loss that mixes the samples. kl_guard infers "
            "the class dimension from the tensors: dim 1 of [N, C], [N, C, T] and "
            "[N, C, H, W], the last of [B, T, V] tokens and [B, H, T, T] attention."
        ),
        cause="`F.softmax(t, dim=0)` over the batch",
        fix="normalize over the class dim",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 0), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
        ),
        linted=True,
    ),
    Code(
        code="KLG007",
        title="target is not a probability distribution",
        meaning=(
            "With log_target=False the target must hold probabilities: non-negative, each "
            "row summing to 1 over the class dimension (with log_target=True, their logs). "
            "exp() of logits, sigmoid outputs and raw logits are not, and the loss is not a "
            "KL divergence. All-zero rows of probabilities, such as masked padding tokens, "
            "are fine; with log_target=True an all-zero row is log(1), probability 1 on "
            "every class, and torch adds -input over it: leave such rows out of the loss."
        ),
        cause=(
            "`t.exp()`, sigmoid outputs, raw logits as target, a log target zeroed as padding "
            "(all-zero rows of probabilities are fine)"
        ),
        fix="`F.softmax(t, dim=...)`",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), t.exp(), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n'
        ),
    ),
    Code(
        code="KLG008",
        title="the target requires grad while the input does not",
        meaning=(
            "kl_div(input, target) is meant with the input the model's log-probabilities and "
            "the target the reference distribution. When the target requires grad and the "
            "input does not, the gradient flows into the target: the model's output was "
            "most likely passed as the target. But reverse KL on purpose, KL(student || "
            "teacher) as MiniLLM- and GKD-style trainers compute it, is the same call with "
            "the gradient through the target by design: no check of the tensors can tell "
            "the two apart, which is why this code is opt-in (off unless selected)."
        ),
        cause=(
            "the model's output passed as the target; also reverse KL on purpose "
            "(KL(student ‖ teacher), MiniLLM/GKD), which looks the same"
        ),
        fix=(
            "swap the roles, `.detach()` the reference; for reverse KL, "
            "`# kl_guard: ignore[KLG008]` on the line"
        ),
        wrong=(
            "torch.manual_seed(0)\n"
            "out = torch.randn(8, 5, requires_grad=True)  # the model's logits\n"
            "ref = torch.randn(8, 5)  # the reference's logits\n"
            'loss = F.kl_div(F.log_softmax(ref, 1), F.softmax(out, 1), reduction="batchmean")\n'
        ),
        right=(
            "torch.manual_seed(0)\n"
            "out = torch.randn(8, 5, requires_grad=True)  # the model's logits\n"
            "ref = torch.randn(8, 5)  # the reference's logits\n"
            'loss = F.kl_div(F.log_softmax(out, 1), F.softmax(ref, 1), reduction="batchmean")\n'
        ),
        opt_in=True,
    ),
    Code(
        code="KLG009",
        title="a deprecated size_average or reduce argument overrides reduction",
        meaning=(
            "Whenever size_average or reduce is given, torch computes the reduction from "
            "them and ignores reduction: nn.KLDivLoss(size_average=False, reduction='mean') "
            "sums, and the loss grows with the batch while the code reads 'mean'. torch "
            "only says that the arguments are deprecated. A deprecated argument alone "
            "decides the reduction as written (KLG001 reports it where it means 'mean'); "
            "next to reduction it overrides what reduction says.\n\n"
            "kl_guard reports an nn.KLDivLoss where it is built, and an F.kl_div call where "
            "it is made. F.kl_div divides by the batch size after them where "
            "reduction='batchmean' is written: size_average=False with 'batchmean' is "
            "'batchmean' as written there, reduce=True with it 'mean' divided once more."
        ),
        cause="`nn.KLDivLoss(size_average=False, reduction='mean')`, which sums",
        fix="drop `size_average` and `reduce`",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            "kl = nn.KLDivLoss(size_average=False, reduction=\"batchmean\")  # computes 'sum'\n"
            "loss = kl(F.log_softmax(s, 1), F.softmax(t, 1))\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)\n"
            'kl = nn.KLDivLoss(reduction="batchmean")\n'
            "loss = kl(F.log_softmax(s, 1), F.softmax(t, 1))\n"
        ),
        linted=True,
    ),
    *FAMILY,
)

BY_CODE = {entry.code: entry for entry in ALL}


def _paragraphs(text: str) -> list[str]:
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if out:
            out.append("")
        out.extend(textwrap.wrap(paragraph, WIDTH))
    return out


def explain(code: str) -> str:
    """``python -m kl_guard explain CODE``: meaning, a wrong and a right call, how to silence."""
    entry = BY_CODE[code]
    lines = [f"{entry.heading}: {entry.title}", "", *_paragraphs(entry.meaning), ""]
    for label, example in (("Wrong", entry.wrong), ("Right", entry.right)):
        lines += [f"{label}:", textwrap.indent(example, "    ").rstrip("\n"), ""]
    lines += ["Silence:", *(f"    {line}" for line in entry.silence)]
    return "\n".join(lines) + "\n"


def listing() -> str:
    """``python -m kl_guard codes``: one line per code, its title, opt-in ones marked."""
    return "".join(f"{entry.code}  {entry.title}{_mark(entry)}\n" for entry in ALL)


def _mark(entry: Code) -> str:
    if entry.opt_in:
        return f" (opt-in: off unless selected, --select {entry.code})"
    return "" if entry.runtime else " (lint only: python -m kl_guard lint)"

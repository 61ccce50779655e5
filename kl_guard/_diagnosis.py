"""What to tell the user: the findings of a call, from its arguments and its classified numbers.

Pure functions over small Python values: no tensors are touched here, no
patching, no I/O. Everything a message says comes from a :class:`Call` and
the :class:`~kl_guard._rows.DimStats` of the dimensions examined;
how a message reads is ``_messages``, the loss's own finding ``_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from kl_guard import _words
from kl_guard._classify import (
    Reading,
    expected_target,
    normalized_elsewhere,
    one_distribution,
    read,
)
from kl_guard._contract import LOG_PROBS, PROBS, Space
from kl_guard._elementwise import elementwise_findings
from kl_guard._loss import loss_finding
from kl_guard._messages import (
    Diagnosis,
    dim_name,
    evidence_line,
    log_target_mismatch,
    render_call,
)
from kl_guard._reduction import kl_div_reduction, resolve_reduction
from kl_guard._rows import DimStats
from kl_guard._signature import Call, other_dims


def argument_findings(call: Call) -> list[Diagnosis]:
    """Findings that need no statistics: KLG009 or KLG001, KLG005 and KLG008.

    They depend on the call's signature only (``_check`` keeps them with the
    Call it describes once).
    """
    out: list[Diagnosis] = []
    shape = call.shape
    override = legacy_override(
        call.size_average,
        call.reduce,
        call.reduction_arg,
        functional=call.api == "function",
        fix=render_call(
            call, "input", "target", log_target=call.log_target, reduction=_written(call)
        ),
    )
    if override is not None:
        out.append(override)  # what it says of 'mean' is KLG001's too
    elif call.reduction == "mean" and len(shape) >= 1:
        out.append(_reduction_mean(call, shape))
    if call.input.shape != call.target.shape:
        out.append(_shapes_differ(call, shape))
    if call.grad_enabled and call.target.requires_grad and not call.input.requires_grad:
        out.append(_target_requires_grad(call))
    return out


def _written(call: Call) -> str:
    return str(call.reduction_arg) if call.reduction_arg is not None else "mean"


def legacy_override(
    size_average: object, reduce: object, reduction: object, *, fix: str, functional: bool
) -> Diagnosis | None:
    """KLG009: ``size_average``/``reduce`` next to a written ``reduction`` that
    they contradict (torch lets them win); None where they agree or either
    side is not written. ``reduction`` is None when it was not written;
    ``functional``: F.kl_div's call, which divides by the batch size after
    them where 'batchmean' is written, where nn.KLDivLoss's constructor does not."""
    if reduction is None or (size_average is None and reduce is None):
        return None
    if functional:
        resolved, divided = kl_div_reduction(size_average, reduce, reduction)
    else:
        resolved, divided = resolve_reduction(size_average, reduce, reduction), False
    if resolved == reduction and not divided:
        return None
    return Diagnosis(
        "KLG009",
        _words.override_headline(reduction, resolved, divided),
        _words.override_evidence(size_average, reduce, reduction, resolved, divided),
        f"{fix} ({_words.OVERRIDE_FIX})",
    )


def construction_findings(written: Mapping[str, object]) -> list[Diagnosis]:
    """KLG009 for an ``nn.KLDivLoss`` built with ``written`` arguments (by name)."""
    reduction = written.get("reduction")
    args = f'reduction="{reduction}"' + (", log_target=True" if written.get("log_target") else "")
    override = legacy_override(
        written.get("size_average"),
        written.get("reduce"),
        reduction,
        fix=f"nn.KLDivLoss({args})",
        functional=False,
    )
    return [] if override is None else [override]


def _target_requires_grad(call: Call) -> Diagnosis:
    # Opt-in (see _findings.OPT_IN): the tensors of a swapped call and of
    # reverse KL on purpose are the same, so the message names both readings.
    return Diagnosis(
        "KLG008",
        "the target of kl_div requires grad but the input does not",
        (
            f"input:  {call.input.summary}, requires_grad=False",
            f"target: {call.target.summary}, requires_grad=True",
            "the gradient flows into the target: either the roles are swapped "
            "(kl_div wants input = log q_model, target = p_reference),",
            "or this is reverse KL on purpose: KL(student || teacher), mode-seeking "
            "(MiniLLM, GKD), whose gradient goes through the target by design",
        ),
        render_call(
            call,
            "F.log_softmax(model_logits, dim=1)",
            "F.softmax(reference_logits, dim=1).detach()",
            log_target=False,
        )
        + " if the roles are swapped; for reverse KL on purpose, silence this line with "
        "the comment '# kl_guard: ignore[KLG008]' on the kl_div call",
    )


def _reduction_mean(call: Call, shape: tuple[int, ...]) -> Diagnosis:
    numel = math.prod(shape)
    per_sample = numel // shape[0] if shape[0] else 0
    if call.legacy:
        source = _words.legacy_source(call.size_average, call.reduce, "mean")
    elif call.api == "module":
        source = _words.MEAN_MODULE
    elif call.api == "op":
        source = "the op torch.kl_div is called with reduction 1, 'mean' (its default)"
    else:
        source = _words.MEAN_DEFAULT if call.reduction_arg is None else _words.MEAN_WRITTEN
    if len(shape) == 1:
        why = (
            f"'mean' divides the KL of this single distribution by its {numel} classes; "
            "'sum' gives the true KL"
        )
    else:
        why = (
            f"'mean' divides by all {numel} elements, so the value is {per_sample}x smaller "
            f"than the KL per sample ({per_sample} elements per sample); "
            "'batchmean' divides by the batch size only"
        )
    evidence: tuple[str, ...] = (source, why)
    fix = render_call(call, "input", "target", log_target=call.log_target)
    if len(shape) == 3:
        # Token-level distillation wants the KL per token, which no reduction gives.
        batch, tokens, _ = shape
        evidence += (
            f"if this is [B, T, V] = [{', '.join(map(str, shape))}] tokens, 'batchmean' "
            f"divides by B = {batch} only: the KL summed over each sequence's {tokens} tokens, "
            "padding included",
        )
        per_token = render_call(
            call, "input", "target", log_target=call.log_target, reduction="none"
        )
        fix += (
            f" for the KL per sequence; per token, with a [B, T] padding mask: "
            f"({per_token}.sum(-1) * mask).sum() / mask.sum()"
        )
    return Diagnosis("KLG001", _words.MEAN_HEADLINE, evidence, f"{fix}; {_words.MEAN_COMPENSATED}")


def _shapes_differ(call: Call, shape: tuple[int, ...]) -> Diagnosis:
    evidence = [
        f"input:  {call.input.summary}",
        f"target: {call.target.summary}",
        f"kl_div broadcasts both to [{', '.join(map(str, shape))}] without a warning",
    ]
    if call.reduction == "batchmean" and call.input.shape[:1] != shape[:1]:
        evidence.append(
            f"'batchmean' divides by input.size(0) = "
            f"{call.input.shape[0] if call.input.shape else 1}, not by the batch of {shape[0]}"
        )
    return Diagnosis(
        "KLG005",
        "input and target of kl_div have different shapes",
        tuple(evidence),
        "give both the same shape, e.g. target.expand_as(input) if the broadcast is "
        "intended, or index the matching rows",
    )


def wants_more_dims(call: Call, stats: Mapping[int, DimStats]) -> tuple[int, ...]:
    """Other dimensions worth examining: only when a tensor is off on the chosen
    one, or only part of a distribution there (a distribution normalized over
    the wrong dim has rows of any sum along the right one)."""
    reading = read(call, stats)
    if reading is None:
        return ()
    settled = reading.input in (Space.LOGPROB, Space.UNKNOWN) and reading.target in (
        expected_target(call),
        Space.UNKNOWN,
    )
    if settled:
        return ()
    return tuple(d for d in other_dims(call.shape) if d not in stats)


def tensor_findings(
    call: Call, stats: Mapping[int, DimStats], loss: float | None = None
) -> list[Diagnosis]:
    """Findings from the statistics: KLG002, KLG003, KLG006, KLG007 and KLG004."""
    reading = read(call, stats)
    out: list[Diagnosis] = []
    if reading is not None:
        out += _space_findings(call, stats, reading)
        # zero rows of probabilities passed with log_target=True are padding: KLG002 says it
        flag = any(d.code == "KLG002" for d in out)
        # under 'none' the rows may be masked afterwards, which is correct code
        reduced = call.reduction != "none"
        if call.log_target and reading.stats.zero_target_rows and reduced and not flag:
            out.append(_zero_log_rows(call, reading))
    finding = loss_finding(call, loss, reading, out)
    if finding is not None:
        out.append(finding)
    return out


def _space_findings(call: Call, stats: Mapping[int, DimStats], r: Reading) -> list[Diagnosis]:
    ndim = len(call.shape)
    if not one_distribution(call, r):
        return elementwise_findings(call, r)
    d = dim_name(r.dim, ndim)

    # Evidence is formatted only for a finding: the correct call pays nothing.
    def ev_input() -> str:
        return evidence_line("input", call.input, r.stats, r.stats.input)

    def ev_target() -> str:
        return evidence_line("target", call.target, r.stats, r.stats.target)

    out: list[Diagnosis] = []
    misplaced: list[tuple[str, DimStats]] = []
    swapped = r.input in PROBS and r.target in LOG_PROBS and not call.log_target

    if swapped:
        out.append(
            Diagnosis(
                "KLG003",
                _words.SWAPPED_HEADLINE,
                (ev_input(), ev_target(), _words.SWAPPED_MEANS),
                render_call(
                    call,
                    f"F.log_softmax(model_logits, dim={d})",
                    f"F.softmax(reference_logits, dim={d})",
                    log_target=False,
                ),
            )
        )
    elif r.input not in (Space.LOGPROB, Space.UNKNOWN):
        # Probabilities are a finding wherever they sum to 1; anything else
        # may be a distribution over the wrong dim, and a part of one is
        # fine unless so.
        elsewhere = (
            normalized_elsewhere(call, stats, r.dim, "input", tight=r.input.partial)
            if r.input is not Space.PROB
            else None
        )
        if elsewhere is not None:
            misplaced.append(("input", elsewhere))
        elif r.input is not Space.SUBLOGPROB:
            out.append(_input_not_log_probabilities(call, r.input, d, ev_input()))

    if not swapped and r.target not in (expected_target(call), Space.UNKNOWN):
        elsewhere = normalized_elsewhere(call, stats, r.dim, "target", tight=r.target.partial)
        other_space = r.target in (PROBS if call.log_target else LOG_PROBS)
        if other_space or (r.target is Space.NONNEG and call.log_target):
            out.append(log_target_mismatch(call, r.target, ev_target()))
        elif elsewhere is not None:
            misplaced.append(("target", elsewhere))
        elif not r.target.partial:
            if call.log_target:
                headline = "target of kl_div (log_target=True) is not log-probabilities"
                fix_target = f"F.log_softmax(target_logits, dim={d})"
            elif r.target is Space.NONNEG:
                headline = "target of kl_div is non-negative but its rows do not sum to 1"
                fix_target = f"target / target.sum(dim={d}, keepdim=True)"
            else:
                headline = "target of kl_div has negative values: it is not probabilities"
                fix_target = f"F.softmax(target_logits, dim={d})"
            out.append(
                Diagnosis(
                    "KLG007",
                    headline,
                    (ev_target(), "all-zero rows (masked padding) are ignored"),
                    render_call(call, "input", fix_target, log_target=call.log_target),
                )
            )

    if misplaced:
        evidence: list[str] = []
        for name, s in misplaced:
            info = call.input if name == "input" else call.target
            side = s.input if name == "input" else s.target
            evidence.append(
                f"{name} is normalized over dim {s.dim} (size {s.size}), "
                f"not over dim {d} (size {r.stats.size})"
            )
            evidence.append(evidence_line(name, info, s, side))
        wrong = misplaced[0][1].dim
        fn = "softmax" if misplaced[-1][0] == "target" and not call.log_target else "log_softmax"
        out.append(
            Diagnosis(
                "KLG006",
                _words.misplaced_headline(wrong, d),
                tuple(evidence),
                _words.misplaced_fix(fn, wrong, d),
            )
        )
    return out


def _zero_log_rows(call: Call, r: Reading) -> Diagnosis:
    """KLG007: rows of a log target zeroed as if masked: log(1) on every class."""
    d = dim_name(r.dim, len(call.shape))
    per_row = render_call(call, "input", "target", log_target=True, reduction="none")
    return Diagnosis(
        "KLG007",
        "target of kl_div (log_target=True) has rows of zeros: log(1), probability 1 "
        "on every class, not masked padding",
        (
            f"{r.stats.zero_target_rows} of the {r.stats.rows} target rows read along dim {d} "
            "are all 0 where the input's are not",
            "torch adds exp(0) * (0 - input) = -input for each of their elements; "
            "in log space nothing masks a row (-inf gives NaN)",
        ),
        f"leave the rows out of the loss, with a mask of the real rows: "
        f"({per_row}.sum({d}) * mask).sum() / mask.sum()",
    )


def _input_not_log_probabilities(call: Call, space: Space, d: str, evidence: str) -> Diagnosis:
    wants = f"kl_div wants input = log-probabilities over dim {d}"
    if space in PROBS:
        wants += " (probs.clamp_min(1e-12).log() if only probabilities exist)"
    return Diagnosis(
        "KLG003",
        _words.input_headline(space),
        (evidence, wants),
        render_call(call, _words.log_softmax_input(d), "target", log_target=call.log_target),
    )

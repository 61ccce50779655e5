"""A 1-D call that is not one distribution: what its values say, one by one.

kl_div is element-wise, so a 1-D vector may hold several distributions (the
valid entries of [B, T, V] log-probabilities selected by a boolean mask),
whose sum and logsumexp say nothing. Still, a log-probability is never above
0, and a probability never outside [0, 1]. Pure functions, no torch.
"""

from __future__ import annotations

from kl_guard import _words
from kl_guard._classify import Reading, carried_dtype, norm_tolerance
from kl_guard._contract import Space
from kl_guard._messages import Diagnosis, evidence_line, fmt, log_target_mismatch
from kl_guard._rows import Range
from kl_guard._signature import Call

_WHERE = "before the tensor is flattened or masked"


def elementwise_findings(call: Call, r: Reading) -> list[Diagnosis]:
    """The findings of a 1-D call that neither side says is one distribution."""
    out: list[Diagnosis] = []
    stats = r.stats
    input_tol = norm_tolerance(carried_dtype(call.input.dtype, stats.input))
    if r.input is not Space.UNKNOWN and stats.input.value.hi > input_tol:
        out.append(
            Diagnosis(
                "KLG003",
                _words.input_headline(r.input),
                (
                    evidence_line("input", call.input, stats, stats.input),
                    f"a log-probability is never above 0; the input's largest value is "
                    f"{fmt(stats.input.value.hi)}",
                ),
                f"{_words.log_softmax_input('<class dim>')} {_WHERE}",
            )
        )
    target, tol = stats.target, norm_tolerance(carried_dtype(call.target.dtype, stats.target))
    if r.target is Space.UNKNOWN:
        return out
    wrong = _elementwise_target(call.log_target, target.value, tol)
    if wrong is None:
        return out
    evidence = evidence_line("target", call.target, stats, target)
    if not wrong:  # in the other space: the flag is wrong
        out.append(log_target_mismatch(call, r.target, evidence))
    else:
        headline, rule = wrong
        function = "log_softmax" if call.log_target else "softmax"
        out.append(
            Diagnosis(
                "KLG007",
                headline,
                (evidence, rule),
                f"F.{function}(target_logits, dim=<class dim>) {_WHERE}",
            )
        )
    return out


def _elementwise_target(
    log_target: bool, values: Range, tol: float
) -> tuple[str, str] | tuple[()] | None:
    """What is wrong with a target's values, one by one: None for nothing, an
    empty tuple for values of the other space (the flag), else a headline and
    the rule they break."""
    if log_target and values.hi > tol:
        if values.lo >= -tol:
            return ()
        return "target of kl_div (log_target=True) is not log-probabilities", (
            "a log-probability is never above 0"
        )
    if not log_target and values.lo < -tol:
        if values.hi <= tol:
            return ()
        return "target of kl_div has negative values: it is not probabilities", (
            "a probability is never below 0"
        )
    if not log_target and values.hi > 1 + tol:
        return "target of kl_div has values above 1: it is not probabilities", (
            "a probability is never above 1"
        )
    return None

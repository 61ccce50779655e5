"""KLG004: whether a loss is negative beyond rounding, NaN or infinite, and what caused it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from kl_guard._classify import (
    EPS,
    MAX,
    Reading,
    carried_dtype,
    loss_tolerance,
    one_distribution,
)
from kl_guard._contract import LOG_PROBS, PROBS
from kl_guard._findings import CODES
from kl_guard._messages import Diagnosis, fmt, render_call
from kl_guard._rows import DimStats
from kl_guard._signature import Call

_PARTS_FIX = (
    "renormalize each part (F.log_softmax over its classes) if a distribution over "
    "them was meant; for a deliberate approximation (top-k without renormalizing), "
    "the comment '# kl_guard: ignore[KLG004]' on the kl_div line silences this"
)


def _normalization_slack(call: Call, r: Reading) -> float:
    """How negative a row's sum of the unreduced loss may be, its rows being
    (parts of) distributions normalized within tolerance only.

    The log-sum inequality bounds a row's sum of t * (log t - x) below by
    s * (log s - l), for a target row summing to s and an input row of
    logsumexp l. It matters where the rows are read along a dim that only
    looks normalized (a near-uniform [1, 3, 3] is, along both dims), and for
    parts of distributions: a rank's shard of the vocabulary goes below 0
    wherever the student holds more of its mass than the teacher, and only
    the sum over every shard is a KL. With l at most l_hi, the bound is
    lowest at s = exp(l_hi - 1), or at the end of the targets' range nearest it.
    """
    targets = LOG_PROBS if call.log_target else PROBS
    if r.input not in LOG_PROBS or r.target not in targets:
        return 0.0
    target, lse = r.stats.target, r.stats.input.logsumexp.hi
    if call.log_target:
        lo, hi = math.exp(target.logsumexp.lo), math.exp(target.logsumexp.hi)
    else:
        lo, hi = target.row_sum.lo, target.row_sum.hi
    s = min(max(math.exp(lse - 1), lo), hi)
    return max(0.0, s * (lse - math.log(s))) if s > 0 else 0.0


def _loss_dtype(call: Call, reading: Reading | None) -> str:
    """The coarsest precision the input's and the target's values carry."""
    if reading is None:
        return call.input.dtype
    carried = (
        carried_dtype(call.input.dtype, reading.stats.input),
        carried_dtype(call.target.dtype, reading.stats.target),
    )
    return max(carried, key=lambda dtype: EPS.get(dtype, 0.0))


def _finite(stats: DimStats) -> bool:
    sides = (stats.input, stats.target)
    return all(math.isfinite(x) for side in sides for x in (side.value.lo, side.value.hi))


def loss_finding(
    call: Call,
    loss: float | None,
    reading: Reading | None,
    found: Sequence[Diagnosis],
) -> Diagnosis | None:
    classes = reading.stats.size if reading else (call.shape[-1] if call.shape else 1)
    tol = loss_tolerance(call, classes, _loss_dtype(call, reading))
    # a 1-D vector of several distributions, perhaps parts of them (_elementwise)
    several = reading is not None and not one_distribution(call, reading)
    if call.reduction == "none":
        value = reading.stats.loss_row_min if reading else None
        label = "the lowest per-row sum of the unreduced loss"
        if reading is not None:
            tol += _normalization_slack(call, reading)
        if several:  # its one "row" is no distribution: as a row of parts, only NaN and inf
            tol = math.inf
    else:
        value = loss
        label = f"the loss ({call.reduction})"
    if value is None or (math.isfinite(value) and value >= -tol):
        return None
    if math.isnan(value):
        headline = "kl_div returned NaN"
    elif math.isinf(value):
        headline = f"kl_div returned {value}"
    else:
        headline = "kl_div returned a negative loss: a KL divergence is never negative"
    causes = [f.code for f in found if f.code in ("KLG002", "KLG003", "KLG006", "KLG007")]
    if causes:
        cause = f"cause: {', '.join(causes)} above ({CODES[causes[0]]})"
        fix = "fix the findings above; this one goes with them"
    elif call.log_target and reading is not None and reading.stats.target.value.lo == -math.inf:
        cause = (
            "cause: the target holds -inf (log of a zero probability) and log_target=True; "
            "torch computes exp(target) * (target - input) = 0 * -inf = NaN there"
        )
        fix = render_call(call, "input", "target.exp()", log_target=False)
    elif reading is not None and reading.stats.input.value.lo == -math.inf:
        cause = (
            "cause: the input holds -inf (the log of a zero probability); where the "
            "target is 0 too, 0 * -inf is NaN"
        )
        fix = "compute the input with F.log_softmax(logits, dim=...) rather than probs.log()"
    elif reading is not None and (reading.stats.input.has_nan or reading.stats.target.has_nan):
        cause = "cause: the input or the target already holds NaN"
        fix = "find where the NaN comes from (torch.autograd.detect_anomaly helps)"
    elif value == math.inf and reading is not None and _finite(reading.stats):
        dtype = call.input.dtype
        cause = (
            "cause: input and target are finite in the rows sampled; the loss overflowed "
            f"{dtype}" + (f", whose largest value is {MAX[dtype]:g}" if dtype in MAX else "")
        )
        fix = render_call(call, "input.float()", "target.float()", log_target=call.log_target)
    elif reading is not None and value < 0 and (reading.input.partial or reading.target.partial):
        cause = (
            "cause: input and target are parts of distributions (rows that sum to less than 1, "
            "never renormalized): the KL of a part can be negative"
        )
        fix = _PARTS_FIX
    elif several and value < 0:
        cause = (
            "cause: the 1-D input and target hold several distributions, or parts of them "
            "(a top-k selection never renormalized): the KL of a part can be negative"
        )
        fix = _PARTS_FIX
    elif reading is not None and reading.stats.rows < reading.stats.total_rows:
        cause = (
            f"cause: not found in the {reading.stats.rows} of {reading.stats.total_rows} rows "
            "sampled; the misuse is in rows that were not examined"
        )
        fix = "kl_guard.check(input, target, ...) in a debugger with sample_rows raised"
    else:
        cause = "cause: not found in the statistics kl_guard keeps"
        fix = "check that input and target come from log_softmax / softmax over the class dim"
    return Diagnosis(
        "KLG004",
        headline,
        (f"{label} is {fmt(value)} (rounding allows down to {fmt(-tol)})", cause),
        fix,
    )

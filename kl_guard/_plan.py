"""What the screen of a call measures, and when its numbers confirm a correct call.

The screen is the cheap first look of every checked call: a few sums along
the class dim. A call it confirms needs nothing more; any other is measured
in full. Its plan depends on the call's signature only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from kl_guard._classify import HALF, loss_tolerance, lse_tolerance, norm_tolerance
from kl_guard._signature import Call, candidate_dims


class ScreenPlan(NamedTuple):
    """What the screen of a call reads, and the bounds it holds the sums to."""

    dim: int  # the class dim it reads: the first candidate
    log_target: bool
    input_lse: tuple[float, float]  # of log(sum(exp(input))) over a row
    input_max: float | None  # the bound of the input's values, when the screen reads them
    target_lse: tuple[float, float]  # the same for a target of log-probabilities
    target_max: float | None  # the same for the target's values
    target_sum_tol: float  # how far a target row of probabilities may sum from 1
    loss_floor: float  # the lowest reduced loss rounding explains


def screen_plan(call: Call) -> ScreenPlan | None:
    """The plan of the screen for ``call``, or None when it cannot judge the call
    (no dimension to read, or tensors that broadcast). It depends on the call's
    signature only (``_check`` keeps it with the Call it describes once)."""
    dims = candidate_dims(call.shape)
    if not dims or call.input.shape != call.target.shape:
        return None
    classes = call.shape[dims[0]]
    dtype = call.input.dtype
    # In half precision the rounding of each log-probability moves a row's
    # logsumexp past the bound that would also bound its values (0.02 over
    # 50k classes in bfloat16): the screen reads their maximum instead.
    reads_max = dtype in HALF
    reads_target_max = call.log_target and call.target.dtype in HALF
    return ScreenPlan(
        dim=dims[0],
        log_target=call.log_target,
        input_lse=_lse_bounds(dtype, classes, reads_max),
        input_max=norm_tolerance(dtype) if reads_max else None,
        target_lse=_lse_bounds(call.target.dtype, classes, reads_target_max),
        target_max=norm_tolerance(call.target.dtype) if reads_target_max else None,
        target_sum_tol=norm_tolerance(call.target.dtype),
        loss_floor=-loss_tolerance(call, classes),
    )


def _lse_bounds(dtype: str, classes: int, reads_max: bool) -> tuple[float, float]:
    """A row's logsumexp, log(exp_sum), says log-probabilities as :func:`classify`
    would when it is within the logsumexp tolerance of 0 and its values are
    at most the norm tolerance. Without the maximum read, a logsumexp at most
    the norm tolerance above 0 bounds every value of the row just as well."""
    tol = lse_tolerance(dtype, classes)
    return -tol, tol if reads_max else min(tol, norm_tolerance(dtype))


def screen_passes(
    plan: ScreenPlan,
    sums: Sequence[Sequence[float]],
    target_min: float | None,
    loss: float | None,
    input_max: float | None = None,
    target_max: float | None = None,
) -> bool:
    """Whether the screen of ``_statistics.screen`` confirms a correct call.

    True only when every kept row is what the contract asks for (input
    log-probabilities, target in the space ``log_target`` says) and the loss
    is a plausible KL: then there is nothing to report. False sends the call
    to the full measurement; it never produces a finding by itself.

    A target of probabilities needs ``target_min`` or torch's reduced
    ``loss``: that is NaN when any target value is negative (``xlogy(t, t)``),
    over every row, not only the sampled ones. No negative value passes, not
    even within the tolerance: torch's loss is NaN there too.

    Every bound is at least as strict as :func:`classify`'s, so a call the
    screen passes is one the full measurement would find correct.
    """
    input_expsum, target_total = sums
    if not (_at_most(input_max, plan.input_max) and _at_most(target_max, plan.target_max)):
        return False
    if target_min is None:
        if not plan.log_target and loss is None:
            return False  # nothing says the target has no negative values
    elif not target_min >= 0:  # (NaN fails too)
        return False
    if 0.0 in target_total:
        # Masked padding: an all-zero target row (all -inf in log space); a
        # row of probabilities sums to zero only so, none being negative.
        keep = [j for j, total in enumerate(target_total) if total != 0]
        input_expsum = [input_expsum[j] for j in keep]
        target_total = [target_total[j] for j in keep]
    if not target_total:
        return False
    # Whole-list builtins, not a loop per row; a NaN anywhere makes the sum
    # NaN, where min() and max() could step over it.
    if math.isnan(sum(input_expsum) + sum(target_total)):
        return False
    if not _logs_within(input_expsum, plan.input_lse):
        return False
    if plan.log_target:
        if not _logs_within(target_total, plan.target_lse):
            return False
    else:
        tol = plan.target_sum_tol
        if not (abs(min(target_total) - 1.0) <= tol and abs(max(target_total) - 1.0) <= tol):
            return False
    return loss is None or (math.isfinite(loss) and loss >= plan.loss_floor)


def _at_most(value: float | None, bound: float | None) -> bool:
    """Whether a maximum the plan reads is within its bound (True where it reads none)."""
    return bound is None or (value is not None and value <= bound)


def _logs_within(exp_sums: Sequence[float], bounds: tuple[float, float]) -> bool:
    low, high = min(exp_sums), max(exp_sums)
    return low > 0 and bounds[0] <= math.log(low) and math.log(high) <= bounds[1]

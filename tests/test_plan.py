"""The screen's plan: when its few sums confirm a correct call."""

from __future__ import annotations

import math

import pytest

from kl_guard._plan import screen_passes, screen_plan
from kl_guard._signature import Call, TensorInfo


@pytest.mark.parametrize(
    ("target_min", "loss", "passes"),
    [
        (0.0, None, True),  # reduction='none': the sampled minimum shows no negative value
        (None, 0.1, True),  # a reduced loss that is not NaN shows none anywhere
        (None, None, False),  # nothing shows it: the full measurement decides
        (-0.05, None, False),
        (float("nan"), None, False),
        (None, float("nan"), False),
    ],
)
def test_the_screen_passes_probabilities_only_when_none_can_be_negative(
    target_min: float | None, loss: float | None, passes: bool
) -> None:
    call = Call(TensorInfo((2, 4), "float32"), TensorInfo((2, 4), "float32"), "sum", False)
    sums = [[1.0, 1.0], [1.0, 1.0]]  # exp(input) and target, per row
    plan = screen_plan(call)
    assert plan is not None
    assert screen_passes(plan, sums, target_min, loss) is passes


@pytest.mark.parametrize(
    ("dtype", "lse", "input_max", "passes"),
    [
        ("float32", 0.004, None, True),
        ("float32", 0.006, None, False),  # past the norm tolerance: a value may be too
        ("bfloat16", 0.03, -9.7, True),  # rounding over 50k classes; the values are fine
        ("bfloat16", 0.03, 0.03, False),  # a value past the norm tolerance
        ("bfloat16", 0.03, None, False),  # half precision needs the maximum
        ("bfloat16", 0.07, -9.7, False),  # past what rounding explains
        ("bfloat16", 0.03, float("nan"), False),
    ],
)
def test_the_screen_reads_the_maximum_where_rounding_widens_the_logsumexp(
    dtype: str, lse: float, input_max: float | None, passes: bool
) -> None:
    info = TensorInfo((4, 50_000), dtype)
    plan = screen_plan(Call(info, info, "batchmean", False))
    assert plan is not None
    assert (plan.input_max is not None) is (dtype == "bfloat16")
    sums = [[math.exp(lse)] * 4, [1.0] * 4]
    assert screen_passes(plan, sums, None, 0.1, input_max) is passes

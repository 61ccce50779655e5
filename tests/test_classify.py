"""Reading the numbers: the space each side is in, and the precision values carry."""

from __future__ import annotations

import pytest

from kl_guard._classify import classify
from kl_guard._contract import Space
from kl_guard._rows import Range, SideStats


def side(
    values: tuple[float, float], sums: tuple[float, float], lse: tuple[float, float]
) -> SideStats:
    return SideStats(Range(*sums), Range(*lse), Range(*values))


@pytest.mark.parametrize(
    ("stats", "space"),
    [
        (side((0.0, 0.9), (0.999, 1.001), (1.1, 2.0)), Space.PROB),
        (side((-9.0, -0.1), (-40.0, -20.0), (-1e-6, 1e-6)), Space.LOGPROB),
        (side((0.0, 9.0), (3.0, 20.0), (2.0, 9.0)), Space.NONNEG),
        (side((-9.0, -0.1), (-40.0, -20.0), (0.2, 0.5)), Space.NONPOS),
        (side((0.0, 0.9), (0.2, 1.001), (1.1, 2.0)), Space.SUBPROB),  # a top-k slice
        (side((-9.0, -0.1), (-40.0, -20.0), (-0.5, -0.2)), Space.SUBLOGPROB),  # a shard
        (side((-9.0, -0.1), (-40.0, -20.0), (-0.5, 0.2)), Space.NONPOS),
        (side((0.0, 0.9), (0.2, 1.2), (1.1, 2.0)), Space.NONNEG),
        (side((-3.0, 3.0), (-1.0, 2.0), (1.0, 3.0)), Space.SIGNED),
        (side((float("nan"), 1.0), (1.0, 1.0), (1.0, 1.0)), Space.UNKNOWN),
    ],
)
def test_classify(stats: SideStats, space: Space) -> None:
    assert classify(stats, kept=4, dtype="float32", classes=10) is space


def test_half_precision_is_given_more_room() -> None:
    stats = side((0.0, 0.9), (0.988, 1.012), (1.1, 2.0))
    assert classify(stats, kept=4, dtype="bfloat16", classes=10) is Space.PROB
    assert classify(stats, kept=4, dtype="float32", classes=10) is Space.NONNEG


def test_float32_values_on_the_bfloat16_grid_are_judged_as_bfloat16() -> None:
    # F.log_softmax(bf16_logits, -1).float(): a logsumexp off by 0.01 is rounding.
    stats = side((-9.0, -0.1), (-40.0, -20.0), (-0.01, 0.012))
    assert classify(stats, kept=4, dtype="float32", classes=1000) is Space.NONPOS
    cast = stats._replace(on_bfloat16=True, on_float16=True)
    assert classify(cast, kept=4, dtype="float32", classes=1000) is Space.LOGPROB

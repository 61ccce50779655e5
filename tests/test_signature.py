"""The call as plain values: broadcast shapes and where a distribution may lie."""

from __future__ import annotations

import pytest

from kl_guard._signature import broadcast_shape, candidate_dims


def test_broadcast_shape() -> None:
    assert broadcast_shape((8, 5), (5,)) == (8, 5)
    assert broadcast_shape((8, 1), (1, 5)) == (8, 5)
    assert broadcast_shape((8, 5), (4,)) is None


@pytest.mark.parametrize(
    ("shape", "dims"),
    [
        ((10,), (0,)),
        ((64, 1000), (1,)),
        ((64, 1), ()),
        ((4, 128, 50_000), (2, 1)),
        ((4, 21, 64, 48), (1, 3)),
        ((4, 8, 128, 128), (3, 1)),
    ],
)
def test_candidate_dims(shape: tuple[int, ...], dims: tuple[int, ...]) -> None:
    assert candidate_dims(shape) == dims

"""Torch's legacy reduction rules."""

from __future__ import annotations

import pytest

from kl_guard._reduction import resolve_reduction


@pytest.mark.parametrize(
    ("size_average", "reduce", "reduction", "expected"),
    [
        (None, None, "batchmean", "batchmean"),
        (None, None, "mean", "mean"),
        (None, "batchmean", "batchmean", "mean"),
        (False, None, "mean", "sum"),
        (None, False, "mean", "none"),
        (True, True, "sum", "mean"),
    ],
)
def test_resolve_reduction_follows_torch(
    size_average: object, reduce: object, reduction: str, expected: str
) -> None:
    assert resolve_reduction(size_average, reduce, reduction) == expected

"""A call's per-row numbers as plain values: what ``_statistics`` measures, ``_classify`` reads.

Imports no torch: the diagnosis, its words and their tests read these
without a tensor in sight.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple


class Range(NamedTuple):
    # NamedTuples, not dataclasses: a check builds a dozen of these, and a
    # frozen dataclass costs several times more to create.
    lo: float
    hi: float

    def within(self, centre: float, tol: float) -> bool:
        return abs(self.lo - centre) <= tol and abs(self.hi - centre) <= tol


class SideStats(NamedTuple):
    """What one tensor looks like along one dimension, over the rows kept.

    ``on_bfloat16`` (``on_float16``): every value kept is exactly
    representable in that dtype, as values computed in it and cast up are
    (``F.log_softmax(bf16_logits, -1).float()``).
    """

    row_sum: Range
    logsumexp: Range
    value: Range
    on_bfloat16: bool = False
    on_float16: bool = False

    @property
    def has_nan(self) -> bool:
        isnan = math.isnan
        return (
            isnan(self.row_sum.lo)
            or isnan(self.logsumexp.lo)
            or isnan(self.value.lo)
            or isnan(self.value.hi)
        )


@dataclasses.dataclass(frozen=True)
class DimStats:
    """Statistics of input and target along ``dim``.

    ``rows`` is how many fibers were looked at out of ``total_rows``;
    ``kept`` excludes those whose target is all zeros (or all ``-inf``) or
    whose input is all zeros, the usual marks of masked padding, which carry
    no distribution. ``zero_target_rows`` counts the rows left out for a
    target of zeros under an input that is not: padding for probabilities,
    but log(1) everywhere for log-probabilities.
    """

    dim: int
    size: int
    rows: int
    total_rows: int
    kept: int
    input: SideStats
    target: SideStats
    loss_row_min: float | None
    zero_target_rows: int = 0

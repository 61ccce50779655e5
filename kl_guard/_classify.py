"""How to read the numbers: per-dtype tolerances, and the space each side of a call is in.

Pure functions of the per-row numbers of ``_statistics`` and a :class:`Call`'s
plain values: probabilities, log-probabilities, parts of a distribution
(vocabulary shards, top-k slices), or something else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

from kl_guard._contract import KL_DIV, Space
from kl_guard._rows import DimStats, SideStats
from kl_guard._signature import Call, candidate_dims

# Machine epsilon of each dtype, for the rounding allowed in a loss.
EPS = {"float64": 2.2e-16, "float32": 1.2e-7, "float16": 9.8e-4, "bfloat16": 7.8e-3}
# Largest finite value of each dtype: a float16 sum overflows at 65504.
MAX = {"float64": 1.8e308, "float32": 3.4e38, "float16": 65504.0, "bfloat16": 3.39e38}
# Allowed error of a row sum (probabilities) or a logsumexp (log-probabilities).
# Generous on purpose: a float32 tensor may hold values rounded in half
# precision upstream (a teacher run in bf16), and a real misuse is off by far
# more (logits, unnormalized scores, a wrong dimension).
_NORM_TOL = {"float64": 5e-3, "float32": 5e-3, "float16": 2e-2, "bfloat16": 2e-2}
HALF = frozenset({"float16", "bfloat16"})
_TARGET = KL_DIV.argument("target")


def expected_target(call: Call) -> Space:
    """The target's space the contract asks for: ``log_target`` says which."""
    return _TARGET.expected({"log_target": call.log_target})


def norm_tolerance(dtype: str) -> float:
    """Allowed error of a row sum of probabilities (see ``_NORM_TOL``)."""
    return _NORM_TOL.get(dtype, 5e-3)


def carried_dtype(dtype: str, side: SideStats) -> str:
    """The dtype whose rounding ``side``'s values carry: the coarsest whose grid
    holds them all. Values computed in half precision and cast up
    (``F.log_softmax(bf16_logits, -1).float()``) keep its error, a logsumexp
    off by 0.01 and more; values computed in float32 are almost never all on
    a half-precision grid (one-hot rows are, and are exact anyway)."""
    if side.on_bfloat16:
        return "bfloat16"
    if side.on_float16:
        return "float16"
    return dtype


def classify(side: SideStats, kept: int, dtype: str, classes: int, tight: bool = False) -> Space:
    """The space of ``side``'s rows; ``tight``: with half the tolerances, as a claim
    against another reading needs (see :func:`normalized_elsewhere`)."""
    if kept == 0 or side.has_nan or side.value.hi == math.inf:
        return Space.UNKNOWN
    dtype = carried_dtype(dtype, side)
    scale = 0.5 if tight else 1.0
    tol = scale * norm_tolerance(dtype)
    lse_tol = scale * lse_tolerance(dtype, classes)
    if side.value.lo >= -tol:
        if side.row_sum.within(1.0, tol):
            return Space.PROB
        if side.row_sum.hi <= 1.0 + tol:
            return Space.SUBPROB
    if side.value.hi <= tol:
        if side.logsumexp.within(0.0, lse_tol):
            return Space.LOGPROB
        if side.logsumexp.hi <= lse_tol:
            return Space.SUBLOGPROB
    if side.value.lo >= 0:
        return Space.NONNEG
    if side.value.hi <= 0:
        return Space.NONPOS
    return Space.SIGNED


def lse_tolerance(dtype: str, classes: int) -> float:
    """Allowed error of a logsumexp: the norm tolerance, plus the rounding of
    each log-probability to the dtype (up to u*|v|, u half of eps), which moves
    a near-uniform row's logsumexp by up to u*log(classes): 0.04 in bfloat16
    over a 50k vocabulary."""
    return norm_tolerance(dtype) + EPS.get(dtype, 1.2e-7) / 2 * math.log(max(classes, 2))


def loss_tolerance(call: Call, classes: int, dtype: str | None = None) -> float:
    """How negative a loss may be from rounding alone, for this call (its
    values rounded to ``dtype``, the input's dtype by default)."""
    eps = EPS.get(dtype or call.input.dtype, 1.2e-7)
    per_row = 8 * eps * max(1.0, math.log(max(classes, 2)))
    shape = call.shape
    rows = math.prod(shape) // max(classes, 1)
    if call.reduction == "sum":
        return per_row * rows
    if call.reduction == "batchmean":
        return per_row * rows / max(shape[0] if shape else 1, 1)
    if call.reduction == "mean":
        return per_row / max(classes, 1)
    return per_row


@dataclasses.dataclass(frozen=True)
class Reading:
    """The chosen distribution dimension and what each tensor looks like there."""

    dim: int
    stats: DimStats
    input: Space
    target: Space


def read(call: Call, stats: Mapping[int, DimStats]) -> Reading | None:
    candidates = [d for d in candidate_dims(call.shape) if d in stats]
    if not candidates:
        return None

    spaces = {
        d: (
            classify(stats[d].input, stats[d].kept, call.input.dtype, stats[d].size),
            classify(stats[d].target, stats[d].kept, call.target.dtype, stats[d].size),
        )
        for d in candidates
    }

    def score(d: int) -> int:
        i, t = spaces[d]
        return int(i.normalized) + int(t.normalized)

    dim = max(candidates, key=score)  # max keeps the first of equal scores
    return Reading(dim, stats[dim], *spaces[dim])


def one_distribution(call: Call, r: Reading) -> bool:
    """Whether each row along the reading's dim is one distribution: always past
    1-D. A 1-D vector may hold several (a mask's selection of [B, T, K]
    log-probabilities), and a selection of parts of distributions may sum to 1
    by chance on one side: it is read as one only where both sides are
    normalized, or where the input is probabilities, which is a misuse either way."""
    if len(call.shape) != 1:
        return True
    return (r.input.normalized and r.target.normalized) or r.input is Space.PROB


def normalized_elsewhere(
    call: Call,
    stats: Mapping[int, DimStats],
    dim: int,
    which: Literal["input", "target"],
    tight: bool = False,
) -> DimStats | None:
    """Another dim along which ``which`` is normalized; ``tight``: within half the
    tolerances. Where the class dim reads as part of a distribution (a shard, a
    top-k slice), that is a correct reading, and another dim's rows can sum to 1
    by chance: the columns of a near-uniform [N, V / k] shard sum to about N / V.
    Values normalized over that dim do so within rounding (0.4% in bfloat16, 0.7%
    for a logsumexp), where chance leaves a few percent."""
    info = call.input if which == "input" else call.target
    for d, s in stats.items():
        if d == dim:
            continue
        if classify(getattr(s, which), s.kept, info.dtype, s.size, tight).normalized:
            return s
    return None

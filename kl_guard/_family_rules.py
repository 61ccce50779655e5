"""The loss family's diagnosis: a call's plain values and numbers in, findings out.

Pure and torch-free, as ``_diagnosis`` is for kl_div. Each rule reports only
where docs/evidence.md measured a margin between misuse and correct code:

- cross_entropy (KLG010): every row read lies in [0, 1] and sums to 1, over
  the class dim or another one, with enough distinct rows for the class
  count; KLG013: one class; KLG015: a soft target with negative values or a
  row summing above 1.1.
- nll_loss (KLG011): a value above 0, or none below 0 (probabilities, scores,
  raw logits; beyond rounding either way), or log-probabilities over another dim.
- binary_cross_entropy_with_logits (KLG012): every value in [0, 1], not all
  equal, at least 4 within 1e-3 of each wall and 5% of all within 1e-3 of
  either; KLG014: a target below -0.5 or above 1.5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

from kl_guard import _words
from kl_guard._classify import carried_dtype, classify, norm_tolerance
from kl_guard._contract import CROSS_ENTROPY, NLL_LOSS, LossContract, Space
from kl_guard._messages import Diagnosis, dim_name, span
from kl_guard._rows import SideStats
from kl_guard._signature import Api, TensorInfo

#: Sigmoid outputs (KLG012): how close to a wall, how many at each, what share of all.
WALL = 1e-3
AT_EACH_WALL = 4
WALL_SHARE = 0.05
#: A binary target further than this outside [0, 1] is no resized mask (KLG014).
TARGET_MARGIN = 0.5
#: A soft target row summing above this holds several labels (KLG015).
MULTI_HOT = 1.1


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyCall:
    """One call of a loss of the family, as plain values."""

    loss: LossContract
    api: Api
    input: TensorInfo
    target: TensorInfo
    reduction: str
    #: the class dim of the input (1, or 0 for an unbatched [C] input); None: elementwise
    class_dim: int | None
    #: the target has the input's shape and a float dtype: probabilities per class
    soft_target: bool = False
    #: a weight tensor is given (some elements may count for nothing)
    weighted: bool = False

    @property
    def classes(self) -> int:
        return 0 if self.class_dim is None else self.input.shape[self.class_dim]


class Rows(NamedTuple):
    """A tensor along one dim, over the rows read: ``kept`` of ``rows`` (all-zero rows
    left out), ``distinct`` of them told apart by their (min, max, sum)."""

    dim: int
    size: int
    rows: int
    kept: int
    distinct: int
    side: SideStats


class Elements(NamedTuple):
    """The values read of an elementwise loss's input, and of its target."""

    read: int
    lo: float
    hi: float
    low_wall: int  # in (0, WALL]
    high_wall: int  # in [1 - WALL, 1]
    target_lo: float
    target_hi: float


@dataclasses.dataclass(frozen=True)
class Numbers:
    """What a check read: the input (and a soft target) along dims, or the elements."""

    input: Mapping[int, Rows] = dataclasses.field(default_factory=dict)
    target: Rows | None = None
    elements: Elements | None = None


def shape_findings(call: FamilyCall) -> list[Diagnosis]:
    """What the call's shape alone says: KLG013, cross_entropy over one class."""
    if call.loss is CROSS_ENTROPY and call.classes == 1:
        return [
            Diagnosis(
                "KLG013",
                _words.ONE_CLASS_HEADLINE,
                (
                    f"input: {call.input.summary}, dim {call.class_dim} holds 1 class: "
                    "log_softmax over one class is 0, so every loss is 0",
                ),
                _words.ONE_CLASS_FIX,
            )
        ]
    return []


def _rows_needed(classes: int) -> int:
    """Distinct rows that must all look like probabilities before KLG010 is said:
    small class counts let correct logits fall in [0, 1] and sum to 1 by chance."""
    if classes <= 3:
        return 8
    if classes <= 5:
        return 4
    return 2 if classes < 1000 else 1


def _softmax_output(rows: Rows, dtype: str, tight: bool = False) -> bool:
    """Every row read lies in [0, 1] and sums to 1 (a lower bound of 0, not -tol);
    ``tight``: within half the tolerance (``_classify.normalized_elsewhere``)."""
    side = rows.side
    if rows.kept == 0 or side.has_nan or rows.distinct < _rows_needed(rows.size):
        return False
    tol = norm_tolerance(carried_dtype(dtype, side)) * (0.5 if tight else 1.0)
    return side.value.lo >= 0 and side.value.hi <= 1 + tol and side.row_sum.within(1.0, tol)


def _evidence(name: str, info: TensorInfo, rows: Rows, ndim: int) -> str:
    read = f"{rows.kept} of {rows.rows} rows" if rows.kept < rows.rows else f"{rows.rows} rows"
    side = rows.side
    return (
        f"{name + ':':8}{info.summary}, dim {dim_name(rows.dim, ndim)} ({read}): "
        f"values {span(side.value.lo, side.value.hi)}, "
        f"row sums {span(side.row_sum.lo, side.row_sum.hi)}, "
        f"logsumexp {span(side.logsumexp.lo, side.logsumexp.hi)}"
    )


def wants_other_dims(call: FamilyCall, numbers: Numbers) -> bool:
    """Whether the input's other dims are worth reading: its class dim looks like a
    distribution normalized elsewhere (values in [0, 1], or log-values, that do not sum)."""
    rows = numbers.input.get(call.class_dim) if call.class_dim is not None else None
    if rows is None or rows.kept == 0 or rows.side.has_nan:
        return False
    space = classify(rows.side, rows.kept, call.input.dtype, rows.size)
    if call.loss is CROSS_ENTROPY:
        return space is Space.SUBPROB or (space is Space.NONNEG and rows.side.value.hi <= 1)
    return call.loss is NLL_LOSS and space in (Space.SUBLOGPROB, Space.NONPOS)


def value_findings(call: FamilyCall, numbers: Numbers) -> list[Diagnosis]:
    """Findings from what a check read."""
    if call.loss is CROSS_ENTROPY:
        return _cross_entropy(call, numbers)
    if call.loss is NLL_LOSS:
        return _nll_loss(call, numbers)
    if numbers.elements is None:
        return []
    return _sigmoid_into_logits(call, numbers.elements) + _binary_target(call, numbers.elements)


def _normalized_elsewhere(call: FamilyCall, numbers: Numbers, space: Space) -> Rows | None:
    """Another dim of the input normalized as ``space``, within half the tolerances:
    rows that do not sum to 1 over the class dim can sum to 1 over another by chance
    (see ``_classify.normalized_elsewhere``)."""
    for dim, rows in numbers.input.items():
        if dim == call.class_dim:
            continue
        if space is Space.PROB and _softmax_output(rows, call.input.dtype, tight=True):
            return rows
        if (
            space is Space.LOGPROB
            and rows.distinct >= 2
            and classify(rows.side, rows.kept, call.input.dtype, rows.size, tight=True)
            is Space.LOGPROB
        ):
            return rows
    return None


def _cross_entropy(call: FamilyCall, numbers: Numbers) -> list[Diagnosis]:
    out = []
    ndim = len(call.input.shape)
    rows = numbers.input.get(call.class_dim) if call.class_dim is not None else None
    if rows is not None and _softmax_output(rows, call.input.dtype):
        out.append(
            Diagnosis(
                "KLG010",
                _words.family_input_headline(CROSS_ENTROPY, Space.PROB),
                (_evidence("input", call.input, rows, ndim), _words.CROSS_ENTROPY_APPLIES),
                _words.family_input_fix(CROSS_ENTROPY),
            )
        )
    elif rows is not None:
        elsewhere = _normalized_elsewhere(call, numbers, Space.PROB)
        if elsewhere is not None:
            wrong, right = dim_name(elsewhere.dim, ndim), call.class_dim
            out.append(
                Diagnosis(
                    "KLG010",
                    _words.family_misplaced_headline(CROSS_ENTROPY, "probabilities", wrong, right),
                    (
                        _evidence("input", call.input, elsewhere, ndim),
                        _evidence("input", call.input, rows, ndim),
                        _words.CROSS_ENTROPY_APPLIES,
                    ),
                    _words.family_input_fix(CROSS_ENTROPY),
                )
            )
    if numbers.target is not None:
        out += _soft_target(call, numbers.target)
    return out


def _soft_target(call: FamilyCall, rows: Rows) -> list[Diagnosis]:
    side = rows.side
    if rows.kept == 0 or side.has_nan:
        return []
    tol = norm_tolerance(carried_dtype(call.target.dtype, side))
    evidence = _evidence("target", call.target, rows, len(call.target.shape))
    if side.value.lo < -tol:
        logs = side.value.hi <= tol and side.logsumexp.within(0.0, 2 * tol)
        return [
            Diagnosis(
                "KLG015",
                _words.soft_target_headline(logs),
                (evidence, _words.SOFT_TARGET_MEANS),
                _words.soft_target_fix(logs),
            )
        ]
    if side.row_sum.hi > MULTI_HOT:
        return [
            Diagnosis(
                "KLG015",
                _words.MULTI_HOT_HEADLINE,
                (evidence, _words.SOFT_TARGET_MEANS),
                _words.MULTI_HOT_FIX,
            )
        ]
    return []


#: What an nll_loss input with a value above 0 is taken for: else raw logits.
_NLL_LOOKS = {Space.PROB: Space.PROB, Space.SUBPROB: Space.PROB, Space.NONNEG: Space.NONNEG}


def _nll_loss(call: FamilyCall, numbers: Numbers) -> list[Diagnosis]:
    rows = numbers.input.get(call.class_dim) if call.class_dim is not None else None
    if rows is None or rows.kept == 0 or rows.side.has_nan:
        return []
    ndim = len(call.input.shape)
    side = rows.side
    tol = norm_tolerance(carried_dtype(call.input.dtype, side))
    # Every row of (part of) log-probabilities over 2 classes or more holds a value of
    # -log 2 or less: rows read with none below -tol are probabilities or scores, however
    # small their values (a softmax over a large vocabulary stays below any tolerance).
    if side.value.hi > tol or side.value.lo >= -tol:
        space = classify(side, rows.kept, call.input.dtype, rows.size)
        looks = _NLL_LOOKS.get(space, Space.SIGNED)
        return [
            Diagnosis(
                "KLG011",
                _words.family_input_headline(NLL_LOSS, looks),
                (_evidence("input", call.input, rows, ndim), _words.NLL_LOSS_TAKES),
                _words.family_input_fix(NLL_LOSS),
            )
        ]
    elsewhere = _normalized_elsewhere(call, numbers, Space.LOGPROB)
    if elsewhere is None:
        return []
    wrong = dim_name(elsewhere.dim, ndim)
    return [
        Diagnosis(
            "KLG011",
            _words.family_misplaced_headline(NLL_LOSS, "log-probabilities", wrong, call.class_dim),
            (
                _evidence("input", call.input, elsewhere, ndim),
                _evidence("input", call.input, rows, ndim),
                _words.NLL_LOSS_TAKES,
            ),
            _words.misplaced_fix("log_softmax", wrong, call.class_dim),
        )
    ]


def sigmoid_outputs(e: Elements) -> bool:
    """The saturation rule of KLG012 (docs/evidence.md, question 3)."""
    return (
        0 <= e.lo < e.hi <= 1
        and e.low_wall >= AT_EACH_WALL
        and e.high_wall >= AT_EACH_WALL
        and e.low_wall + e.high_wall >= WALL_SHARE * e.read
    )


def _sigmoid_into_logits(call: FamilyCall, e: Elements) -> list[Diagnosis]:
    if not sigmoid_outputs(e):
        return []
    near = e.low_wall + e.high_wall
    return [
        Diagnosis(
            "KLG012",
            _words.family_input_headline(call.loss, Space.NONNEG),
            (
                f"input:  {call.input.summary} ({e.read} values read): all in "
                f"{span(e.lo, e.hi)}, {near} ({near / e.read:.0%}) within {WALL:g} of 0 or 1, "
                f"as a saturated sigmoid's outputs are and a model's logits are not",
                _words.BCE_WITH_LOGITS_APPLIES,
            ),
            _words.family_input_fix(call.loss),
        )
    ]


def _binary_target(call: FamilyCall, e: Elements) -> list[Diagnosis]:
    # Under 'none' the loss may be masked afterwards, as padding is.
    if call.reduction == "none" or e.target_lo > e.target_hi:  # nothing read (all weight 0)
        return []
    if e.target_lo >= -TARGET_MARGIN and e.target_hi <= 1 + TARGET_MARGIN:
        return []
    return [
        Diagnosis(
            "KLG014",
            _words.binary_target_headline(call.loss.name),
            (
                f"target: {call.target.summary}: values {span(e.target_lo, e.target_hi)}"
                + (" where the weight is not 0" if call.weighted else ""),
                _words.BINARY_TARGET_MEANS,
            ),
            _words.binary_target_fix(e.target_lo, e.target_hi),
        )
    ]

"""The loss family's rules on hand-built numbers: each threshold at its edge.

No tensor in sight: a :class:`FamilyCall` and the :class:`Rows` or
:class:`Elements` a check would have read, and the findings they give.
"""

from __future__ import annotations

import math

import pytest

from kl_guard import _family_rules, _words
from kl_guard._contract import BCE_WITH_LOGITS, CROSS_ENTROPY, NLL_LOSS, LossContract, Space
from kl_guard._family_rules import (
    AT_EACH_WALL,
    MULTI_HOT,
    TARGET_MARGIN,
    WALL_SHARE,
    Elements,
    FamilyCall,
    Numbers,
    Rows,
    shape_findings,
    sigmoid_outputs,
    value_findings,
    wants_other_dims,
)
from kl_guard._rows import Range, SideStats
from kl_guard._signature import TensorInfo

#: The allowed error of a row sum, by the dtype whose rounding the values carry.
F32_TOL, HALF_TOL = 5e-3, 2e-2


def family_call(
    loss: LossContract,
    shape: tuple[int, ...] = (32, 10),
    dtype: str = "float32",
    *,
    target: tuple[int, ...] | None = None,
    target_dtype: str | None = None,
    reduction: str = "mean",
    soft_target: bool = False,
    weighted: bool = False,
) -> FamilyCall:
    classes = loss is not BCE_WITH_LOGITS
    return FamilyCall(
        loss=loss,
        api="function",
        input=TensorInfo(shape, dtype),
        target=TensorInfo(
            target if target is not None else (shape if soft_target or not classes else shape[:1]),
            target_dtype or (dtype if soft_target or not classes else "int64"),
        ),
        reduction=reduction,
        class_dim=(1 if len(shape) >= 2 else 0) if classes else None,
        soft_target=soft_target,
        weighted=weighted,
    )


def side(
    lo: float,
    hi: float,
    sums: tuple[float, float] = (1.0, 1.0),
    lse: tuple[float, float] = (2.3, 2.4),
    *,
    on_bfloat16: bool = False,
    on_float16: bool = False,
) -> SideStats:
    return SideStats(Range(*sums), Range(*lse), Range(lo, hi), on_bfloat16, on_float16)


def rows(
    s: SideStats, size: int = 10, *, dim: int = 1, read: int = 32, kept: int | None = None
) -> Rows:
    """``read`` rows along ``dim`` (of ``size`` values each), all kept and told apart."""
    kept = read if kept is None else kept
    return Rows(dim, size, read, kept, kept, s)


def distinct(r: Rows, n: int) -> Rows:
    return r._replace(distinct=n)


#: Probabilities as a softmax gives them: in [0, 1], rows summing to 1.
SOFTMAX = side(0.01, 0.6)
#: A model's logits: both signs, rows summing anywhere.
LOGITS = side(-3.0, 3.5, sums=(-5.0, 6.0), lse=(2.2, 3.8))
#: log_softmax's output: at most 0, logsumexp 0.
LOG_SOFTMAX = side(-5.5, -0.9, sums=(-37.0, -26.0), lse=(-1e-7, 1e-7))


def codes(call: FamilyCall, numbers: Numbers) -> list[str]:
    return [d.code for d in shape_findings(call) + value_findings(call, numbers)]


def ce(input: Rows, *, classes: int = 10, dtype: str = "float32") -> list[str]:
    call = family_call(CROSS_ENTROPY, (32, classes), dtype)
    return codes(call, Numbers({1: input._replace(size=classes)}))


# --- KLG010: softmax outputs into cross_entropy ---------------------------------------


@pytest.mark.parametrize(
    ("classes", "needed"),
    [(2, 8), (3, 8), (4, 4), (5, 4), (6, 2), (999, 2), (1000, 1), (152_064, 1)],
)
def test_distinct_rows_needed_grow_as_classes_shrink(classes: int, needed: int) -> None:
    softmax = rows(SOFTMAX, classes)
    assert ce(distinct(softmax, needed), classes=classes) == ["KLG010"]
    assert ce(distinct(softmax, needed - 1), classes=classes) == []


def test_rows_needed_are_distinct_rows_not_rows_read() -> None:
    # zero weights and a bias: 32 rows read, one row's evidence
    assert ce(distinct(rows(SOFTMAX, 3), 1), classes=3) == []


def test_lower_bound_is_zero_not_minus_the_tolerance() -> None:
    assert ce(rows(side(0.0, 0.6))) == ["KLG010"]
    # logits / 100 over many classes can sum to 1 within tol with tiny negatives
    assert ce(rows(side(-1e-9, 0.6))) == []


@pytest.mark.parametrize(
    ("dtype", "grid", "tol"),
    [
        ("float32", None, F32_TOL),
        ("float64", None, F32_TOL),
        ("bfloat16", None, HALF_TOL),
        ("float16", None, HALF_TOL),
        # a float32 tensor computed in half precision keeps its error
        ("float32", "bfloat16", HALF_TOL),
        ("float32", "float16", HALF_TOL),
    ],
)
def test_row_sums_within_the_dtypes_tolerance(dtype: str, grid: str | None, tol: float) -> None:
    def softmax(lo: float = 0.01, hi: float = 0.6, sums: tuple[float, float] = (1.0, 1.0)) -> Rows:
        s = side(lo, hi, sums, on_bfloat16=grid == "bfloat16", on_float16=grid == "float16")
        return rows(s)

    assert ce(softmax(sums=(1.0, 1 + 0.9 * tol)), dtype=dtype) == ["KLG010"]
    assert ce(softmax(sums=(1.0, 1 + 1.1 * tol)), dtype=dtype) == []
    assert ce(softmax(sums=(1 - 1.1 * tol, 1.0)), dtype=dtype) == []
    # a value above 1 + tol is no probability, whatever the sums
    assert ce(softmax(hi=1 + 1.1 * tol), dtype=dtype) == []
    assert ce(softmax(lo=0.0, hi=1 + 0.9 * tol), dtype=dtype) == ["KLG010"]


@pytest.mark.parametrize(
    "numbers",
    [
        rows(SOFTMAX, kept=0),  # every row masked
        rows(side(math.nan, 0.6)),
        rows(side(0.01, 0.6, sums=(math.nan, math.nan))),
    ],
    ids=["nothing-kept", "nan-value", "nan-sum"],
)
def test_nothing_to_judge_is_silent(numbers: Rows) -> None:
    assert ce(numbers) == []


def test_logits_and_log_probabilities_are_correct_input() -> None:
    assert ce(rows(LOGITS)) == []
    assert ce(rows(LOG_SOFTMAX)) == []


def test_probabilities_over_another_dim() -> None:
    call = family_call(CROSS_ENTROPY, (16, 10))
    over_batch = rows(SOFTMAX, 16, dim=0, read=10)
    not_here = rows(side(0.004, 0.41, sums=(0.36, 1.12)))
    [diagnosis] = value_findings(call, Numbers({1: not_here, 0: over_batch}))
    assert diagnosis.code == "KLG010"
    assert diagnosis.headline == _words.family_misplaced_headline(
        CROSS_ENTROPY, "probabilities", "0", 1
    )
    assert diagnosis.evidence[0].startswith("input:  f32[16, 10], dim 0 (10 rows): values ")
    assert diagnosis.evidence[1].startswith("input:  f32[16, 10], dim 1 (32 rows): values ")
    # the other dim needs its own distinct rows, by its own size
    few = distinct(rows(SOFTMAX, 3, dim=0, read=10), 7)
    call3 = family_call(CROSS_ENTROPY, (3, 10))
    assert value_findings(call3, Numbers({1: not_here, 0: few})) == []
    assert codes(call3, Numbers({1: not_here, 0: distinct(few, 8)})) == ["KLG010"]


def test_the_last_dim_of_three_is_named_minus_one() -> None:
    call = family_call(CROSS_ENTROPY, (4, 10, 7))
    [diagnosis] = value_findings(
        call,
        Numbers({1: rows(side(0.003, 0.86, sums=(0.6, 2.5))), 2: rows(SOFTMAX, 7, dim=2)}),
    )
    assert "over dim -1, not the class dim 1" in diagnosis.headline


def test_the_finding_reads_as_documented() -> None:
    call = family_call(CROSS_ENTROPY, (16, 10))
    softmax = rows(side(0.007148, 0.665, lse=(2.404, 2.424)), read=16)
    [diagnosis] = value_findings(call, Numbers({1: softmax}))
    assert diagnosis.headline == _words.family_input_headline(CROSS_ENTROPY, Space.PROB)
    assert diagnosis.evidence == (
        "input:  f32[16, 10], dim 1 (16 rows): values 0.007148..0.665, row sums 1, "
        "logsumexp 2.404..2.424",
        _words.CROSS_ENTROPY_APPLIES,
    )
    assert diagnosis.fix == _words.family_input_fix(CROSS_ENTROPY)
    masked = softmax._replace(kept=10, distinct=10)
    assert "(10 of 16 rows)" in value_findings(call, Numbers({1: masked}))[0].evidence[0]


@pytest.mark.parametrize(
    ("s", "wanted"),
    [
        (side(0.0, 0.3, sums=(0.2, 0.9)), True),  # part of a distribution
        (side(0.0, 1.0, sums=(1.5, 4.0)), True),  # in [0, 1], not summing to 1
        (side(0.0, 3.0, sums=(1.5, 4.0)), False),  # scores above 1
        (SOFTMAX, False),  # said over the class dim already
        (LOGITS, False),
    ],
)
def test_cross_entropy_reads_other_dims_only_for_values_in_0_1(s: SideStats, wanted: bool) -> None:
    call = family_call(CROSS_ENTROPY)
    assert wants_other_dims(call, Numbers({1: rows(s)})) is wanted


# --- KLG013: one class ----------------------------------------------------------------


def test_one_class_is_said_from_the_shape() -> None:
    [diagnosis] = shape_findings(family_call(CROSS_ENTROPY, (8, 1)))
    assert diagnosis.code == "KLG013"
    assert diagnosis.headline == _words.ONE_CLASS_HEADLINE
    assert diagnosis.evidence[0].startswith("input: f32[8, 1], dim 1 holds 1 class")
    assert [d.code for d in shape_findings(family_call(CROSS_ENTROPY, (1,)))] == ["KLG013"]


@pytest.mark.parametrize(
    "call",
    [
        family_call(CROSS_ENTROPY, (8, 2)),
        family_call(CROSS_ENTROPY, (1, 5)),  # one row, five classes
        family_call(NLL_LOSS, (8, 1)),  # nll_loss over one class picks the value itself
        family_call(BCE_WITH_LOGITS, (8, 1)),
    ],
)
def test_more_classes_or_another_loss_is_not_one_class(call: FamilyCall) -> None:
    assert shape_findings(call) == []


# --- KLG015: soft targets -------------------------------------------------------------


def soft(target: Rows | None, dtype: str = "float32") -> list[str]:
    call = family_call(CROSS_ENTROPY, soft_target=True, dtype=dtype)
    return codes(call, Numbers({1: rows(LOGITS)}, target))


def test_a_negative_value_beyond_the_tolerance() -> None:
    assert soft(rows(side(-1.1 * F32_TOL, 0.9))) == ["KLG015"]
    assert soft(rows(side(-0.9 * F32_TOL, 0.9))) == []
    assert soft(rows(side(-1.1 * F32_TOL, 0.9)), "bfloat16") == []
    assert soft(rows(side(-1.1 * HALF_TOL, 0.9)), "bfloat16") == ["KLG015"]


@pytest.mark.parametrize(
    ("target", "logs"),
    [
        (LOG_SOFTMAX, True),
        # a temperature's log_softmax: logsumexp within 2 tol of 0
        (side(-9.0, -0.01, sums=(-80.0, -60.0), lse=(-1.9 * F32_TOL, 1.9 * F32_TOL)), True),
        (side(-9.0, -0.01, sums=(-80.0, -60.0), lse=(-2.1 * F32_TOL, 0.0)), False),
        (LOGITS, False),
        (side(-3.0, 1.1 * F32_TOL, lse=(0.0, 0.0)), False),  # a value above 0
    ],
)
def test_log_probabilities_are_told_from_logits(target: SideStats, logs: bool) -> None:
    call = family_call(CROSS_ENTROPY, soft_target=True)
    [diagnosis] = value_findings(call, Numbers({1: rows(LOGITS)}, rows(target)))
    assert diagnosis.code == "KLG015"
    assert diagnosis.headline == _words.soft_target_headline(logs)
    assert diagnosis.fix == _words.soft_target_fix(logs)
    assert diagnosis.evidence[0].startswith("target: f32[32, 10], dim 1 (32 rows): values ")


def test_multi_hot_rows_sum_above_1_1() -> None:
    def summing(hi: float) -> list[str]:
        return soft(rows(side(0.0, 1.0, sums=(1.0, hi))))

    assert summing(MULTI_HOT) == []
    assert summing(MULTI_HOT + 1e-6) == ["KLG015"]
    assert summing(2.0) == ["KLG015"]
    [diagnosis] = value_findings(
        family_call(CROSS_ENTROPY, soft_target=True),
        Numbers({1: rows(LOGITS)}, rows(side(0.0, 1.0, sums=(1.0, 3.0)))),
    )
    assert (diagnosis.headline, diagnosis.fix) == (_words.MULTI_HOT_HEADLINE, _words.MULTI_HOT_FIX)


@pytest.mark.parametrize(
    "target",
    [
        side(0.0, 0.9),  # mixup, label smoothing, a teacher's softmax
        side(0.0, 0.3, sums=(0.2, 0.8)),  # part of a distribution (top-k, a shard)
        side(0.0, 1.0, sums=(0.0, 1.0)),  # one-hot rows, some all zero
        side(0.0, 0.9, sums=(0.99, 1.009), on_bfloat16=True),  # a bf16 teacher, mixed
    ],
)
def test_probabilities_as_soft_target_are_silent(target: SideStats) -> None:
    assert soft(rows(target)) == []


@pytest.mark.parametrize(
    "target",
    [rows(LOG_SOFTMAX, kept=0), rows(side(math.nan, 0.9)), None],
    ids=["all-masked", "nan", "not-read"],
)
def test_soft_target_with_nothing_to_judge_is_silent(target: Rows | None) -> None:
    assert soft(target) == []


def test_misuse_of_input_and_target_both_said() -> None:
    call = family_call(CROSS_ENTROPY, soft_target=True)
    found = codes(call, Numbers({1: rows(SOFTMAX)}, rows(LOG_SOFTMAX)))
    assert found == ["KLG010", "KLG015"]


# --- KLG011: nll_loss -----------------------------------------------------------------


def nll(input: SideStats, *, dtype: str = "float32", **more: Rows) -> list[str]:
    call = family_call(NLL_LOSS, dtype=dtype)
    return codes(call, Numbers({1: rows(input), **{int(k[1:]): r for k, r in more.items()}}))


@pytest.mark.parametrize(
    ("dtype", "tol"), [("float32", F32_TOL), ("bfloat16", HALF_TOL), ("float16", HALF_TOL)]
)
def test_a_value_above_0_beyond_the_tolerance(dtype: str, tol: float) -> None:
    def up_to(hi: float) -> list[str]:
        return nll(side(-4.0, hi, sums=(-30.0, -20.0), lse=(-1e-3, 1e-3)), dtype=dtype)

    assert up_to(tol) == []
    assert up_to(1.1 * tol) == ["KLG011"]


@pytest.mark.parametrize(
    ("dtype", "tol"), [("float32", F32_TOL), ("bfloat16", HALF_TOL), ("float16", HALF_TOL)]
)
def test_no_value_below_0_beyond_the_tolerance(dtype: str, tol: float) -> None:
    """A row of (part of) log-probabilities over 2 classes or more holds a value of -log 2
    or less; probabilities over a large vocabulary stay below any tolerance."""

    def from_(lo: float) -> list[str]:
        return nll(side(lo, 0.5 * tol, lse=(10.0, 10.4)), dtype=dtype)

    assert from_(0.0) == ["KLG011"]
    assert from_(-tol) == ["KLG011"]
    assert from_(-1.1 * tol) == []
    assert from_(-math.log(2)) == []
    call = family_call(NLL_LOSS, (4, 32_000), dtype)
    softmax = rows(side(1e-6, 1e-3, lse=(10.37, 10.37)), 32_000, read=2)
    [diagnosis] = value_findings(call, Numbers({1: softmax}))
    assert diagnosis.headline == _words.family_input_headline(NLL_LOSS, Space.PROB)


@pytest.mark.parametrize(
    ("input", "looks"),
    [
        (SOFTMAX, Space.PROB),
        (side(0.0, 0.3, sums=(0.2, 0.9)), Space.PROB),  # part of a distribution: a softmax slice
        (side(0.07, 0.97, sums=(4.0, 6.0), lse=(2.7, 2.9)), Space.NONNEG),  # sigmoid outputs
        (LOGITS, Space.SIGNED),
        (side(0.5, 7.0, sums=(10.0, 30.0), lse=(7.0, 8.0)), Space.NONNEG),  # scores
    ],
)
def test_what_nll_loss_input_is_taken_for(input: SideStats, looks: Space) -> None:
    call = family_call(NLL_LOSS)
    [diagnosis] = value_findings(call, Numbers({1: rows(input)}))
    assert diagnosis.code == "KLG011"
    assert diagnosis.headline == _words.family_input_headline(NLL_LOSS, looks)
    assert diagnosis.evidence[1] == _words.NLL_LOSS_TAKES


@pytest.mark.parametrize(
    "input",
    [
        LOG_SOFTMAX,
        side(-math.inf, 0.0, sums=(-math.inf, -math.inf), lse=(0.0, 0.0)),  # log of top-k
        side(-9.0, -0.5, sums=(-80.0, -60.0), lse=(-0.4, -0.1)),  # a class subset
        side(-4.0, -0.1, sums=(-30.0, -20.0), lse=(0.5, 1.0)),  # all-negative logits: no margin
    ],
)
def test_log_probabilities_and_parts_of_them_are_silent(input: SideStats) -> None:
    assert nll(input) == []


def test_log_probabilities_over_another_dim() -> None:
    here = side(-5.5, -0.9, sums=(-37.0, -26.0), lse=(-1.0, 0.11))
    over_batch = rows(LOG_SOFTMAX, 16, dim=0, read=10)
    call = family_call(NLL_LOSS, (16, 10))
    assert wants_other_dims(call, Numbers({1: rows(here)}))
    [diagnosis] = value_findings(call, Numbers({1: rows(here), 0: over_batch}))
    assert diagnosis.code == "KLG011"
    assert diagnosis.headline == _words.family_misplaced_headline(
        NLL_LOSS, "log-probabilities", "0", 1
    )
    assert diagnosis.fix == _words.misplaced_fix("log_softmax", "0", 1)
    # one distinct row over the other dim is no evidence
    assert value_findings(call, Numbers({1: rows(here), 0: distinct(over_batch, 1)})) == []


@pytest.mark.parametrize(
    ("s", "wanted"),
    [
        (side(-5.5, -0.9, sums=(-37.0, -26.0), lse=(-1.0, -0.2)), True),  # part of log-probs
        (side(-5.5, -0.9, sums=(-37.0, -26.0), lse=(-1.0, 0.4)), True),  # non-positive
        (LOG_SOFTMAX, False),
        (SOFTMAX, False),
        (LOGITS, False),
    ],
)
def test_nll_loss_reads_other_dims_only_for_non_positive_values(s: SideStats, wanted: bool) -> None:
    assert wants_other_dims(family_call(NLL_LOSS), Numbers({1: rows(s)})) is wanted


# --- KLG012 and KLG014: binary_cross_entropy_with_logits ------------------------------


def elements(
    read: int = 1000,
    lo: float = 1e-6,
    hi: float = 1 - 1e-6,
    low: int = 100,
    high: int = 100,
    target: tuple[float, float] = (0.0, 1.0),
) -> Elements:
    return Elements(read, lo, hi, low, high, *target)


def bce(e: Elements, reduction: str = "mean", weighted: bool = False) -> list[str]:
    call = family_call(BCE_WITH_LOGITS, (8, 125), reduction=reduction, weighted=weighted)
    return codes(call, Numbers(elements=e))


def test_saturated_sigmoid_outputs() -> None:
    assert bce(elements()) == ["KLG012"]
    assert sigmoid_outputs(elements())


@pytest.mark.parametrize(("low", "high"), [(3, 100), (100, 3), (3, 3)])
def test_at_least_4_at_each_wall(low: int, high: int) -> None:
    assert AT_EACH_WALL == 4
    assert bce(elements(read=100, low=low, high=high)) == []
    assert bce(elements(read=100, low=max(low, 4), high=max(high, 4))) == ["KLG012"]


def test_five_percent_of_all_at_a_wall() -> None:
    assert WALL_SHARE == 0.05
    assert bce(elements(read=160, low=4, high=4)) == ["KLG012"]  # 8 = 5% of 160
    assert bce(elements(read=161, low=4, high=4)) == []
    assert bce(elements(read=7, low=4, high=4)) == ["KLG012"]


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (-1e-6, 1 - 1e-6),  # a logit below 0
        (1e-6, 1 + 1e-6),  # a logit above 1
        (0.5, 0.5),  # all equal: a zero head with a bias
    ],
)
def test_every_value_in_0_1_and_not_all_equal(lo: float, hi: float) -> None:
    assert bce(elements(lo=lo, hi=hi)) == []


def test_walls_are_inclusive() -> None:
    assert bce(elements(lo=0.0, hi=1.0)) == ["KLG012"]


def test_the_saturation_finding_reads_as_documented() -> None:
    call = family_call(BCE_WITH_LOGITS, (64, 8))
    e = elements(read=512, lo=3.03e-16, hi=1.0, low=150, high=138)
    [diagnosis] = value_findings(call, Numbers(elements=e))
    assert diagnosis.headline == _words.family_input_headline(BCE_WITH_LOGITS, Space.NONNEG)
    assert diagnosis.evidence[0] == (
        "input:  f32[64, 8] (512 values read): all in 3.03e-16..1, 288 (56%) within 0.001 "
        "of 0 or 1, as a saturated sigmoid's outputs are and a model's logits are not"
    )
    assert diagnosis.evidence[1] == _words.BCE_WITH_LOGITS_APPLIES


def logits_with_target(lo: float, hi: float) -> Elements:
    return elements(lo=-8.0, hi=9.0, low=0, high=0, target=(lo, hi))


@pytest.mark.parametrize(
    ("lo", "hi", "found"),
    [
        (0.0, 1.0, False),
        (-0.27, 1.27, False),  # bicubic-resized masks
        (-TARGET_MARGIN, 1 + TARGET_MARGIN, False),
        (-TARGET_MARGIN - 1e-6, 1.0, True),
        (0.0, 1 + TARGET_MARGIN + 1e-6, True),
        (-1.0, 1.0, True),
        (0.0, 255.0, True),
    ],
)
def test_target_margin(lo: float, hi: float, found: bool) -> None:
    assert bce(logits_with_target(lo, hi)) == (["KLG014"] if found else [])
    assert bce(logits_with_target(lo, hi), reduction="sum") == (["KLG014"] if found else [])


def test_reduction_none_is_silent_on_targets() -> None:
    assert bce(logits_with_target(0.0, 255.0), reduction="none") == []
    # the input is still read
    assert bce(elements(target=(0.0, 255.0)), reduction="none") == ["KLG012"]


def test_nothing_counted_is_silent() -> None:
    # every weight 0: the target's min over no element is inf, its max -inf
    assert bce(logits_with_target(math.inf, -math.inf), weighted=True) == []


def test_the_target_finding_reads_as_documented() -> None:
    call = family_call(BCE_WITH_LOGITS, (8, 3), weighted=True)
    [diagnosis] = value_findings(call, Numbers(elements=logits_with_target(-1.0, 1.0)))
    assert diagnosis.headline == _words.binary_target_headline(BCE_WITH_LOGITS.name)
    assert diagnosis.evidence == (
        "target: f32[8, 3]: values -1..1 where the weight is not 0",
        _words.BINARY_TARGET_MEANS,
    )
    assert diagnosis.fix == _words.binary_target_fix(-1.0, 1.0)
    unweighted = family_call(BCE_WITH_LOGITS, (8, 3))
    [plain] = value_findings(unweighted, Numbers(elements=logits_with_target(0.0, 255.0)))
    assert plain.evidence[0] == "target: f32[8, 3]: values 0..255"
    assert plain.fix == _words.binary_target_fix(0.0, 255.0)


def test_both_bce_codes_together() -> None:
    assert bce(elements(target=(-1.0, 1.0))) == ["KLG012", "KLG014"]


def test_nothing_read_is_silent() -> None:
    for loss in (CROSS_ENTROPY, NLL_LOSS, BCE_WITH_LOGITS):
        assert value_findings(family_call(loss), Numbers()) == []


def test_the_thresholds_are_those_docs_evidence_gives() -> None:
    assert (_family_rules.WALL, AT_EACH_WALL, WALL_SHARE) == (1e-3, 4, 0.05)
    assert (TARGET_MARGIN, MULTI_HOT) == (0.5, 1.1)

"""Diagnosis: the numbers from ``_statistics`` and the call's arguments in, findings out.

Pure functions over small Python values: no tensors are touched here, no
patching, no I/O. Everything a message says comes from a :class:`Call` and
the :class:`~kl_guard._statistics.DimStats` of the dimensions examined.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from kl_guard._findings import CODES
from kl_guard._statistics import DimStats, SideStats

Api = Literal["function", "module"]

_DTYPE_ABBREVIATIONS = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
}
# Machine epsilon of each dtype, for the rounding allowed in a loss.
_EPS = {"float64": 2.2e-16, "float32": 1.2e-7, "float16": 9.8e-4, "bfloat16": 7.8e-3}
# Largest finite value of each dtype: a float16 sum overflows at 65504.
_MAX = {"float64": 1.8e308, "float32": 3.4e38, "float16": 65504.0, "bfloat16": 3.39e38}
# Allowed error of a row sum (probabilities) or a logsumexp (log-probabilities).
# Generous on purpose: a float32 tensor may hold values rounded in half
# precision upstream (a teacher run in bf16), and a real misuse is off by far
# more (logits, unnormalized scores, a wrong dimension).
_NORM_TOL = {"float64": 5e-3, "float32": 5e-3, "float16": 2e-2, "bfloat16": 2e-2}
_HALF = frozenset({"float16", "bfloat16"})


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What the diagnosis needs of a tensor without holding it."""

    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool = False

    @property
    def summary(self) -> str:
        short = _DTYPE_ABBREVIATIONS.get(self.dtype, self.dtype)
        return f"{short}[{', '.join(str(s) for s in self.shape)}]"


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """The arguments of one kl_div call, as plain values.

    Compared and hashed by identity: ``_check.describe`` makes one Call per
    call signature, and what a signature decides (the argument findings, the
    screen's plan) is kept by the Call, looked up at the cost of an ``id()``,
    where a dataclass's hash would rebuild the tuple of every field.
    """

    input: TensorInfo
    target: TensorInfo
    reduction: str
    log_target: bool
    api: Api = "function"
    reduction_arg: object = "mean"
    size_average: object = None
    reduce: object = None
    grad_enabled: bool = True

    @property
    def legacy(self) -> bool:
        return self.size_average is not None or self.reduce is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape both tensors broadcast to (the input's when they do not)."""
        shape = self.input.shape
        if shape == self.target.shape:  # nearly always: no broadcast to work out
            return shape
        return broadcast_shape(shape, self.target.shape) or shape


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """One finding before it is attributed to a call site."""

    code: str
    headline: str
    evidence: tuple[str, ...]
    fix: str

    def render(self, location: str) -> str:
        lines = [f"{self.code}: {self.headline}"]
        lines += [f"  {line}" for line in self.evidence]
        lines.append(f"  fix: {self.fix}")
        lines.append(f"  at: {location}")
        return "\n".join(lines)


class Space(enum.Enum):
    """What the values along one dimension look like.

    The two "part of a distribution" spaces are slices of a distribution
    normalized over more classes than the tensor holds: a rank's shard of a
    vocabulary-parallel softmax, the teacher's top-k gathered without
    renormalizing. Their rows sum to less than 1 (logsumexp below 0), which
    the misuses kl_guard looks for do not: probabilities passed as
    log-probabilities have a logsumexp of at least log(C) + 1/C over C >= 2
    classes, raw logits have positive values. A target scaled below 1 by
    mistake looks like a slice, and is let through.
    """

    PROB = "probabilities"
    SUBPROB = "part of a distribution: probabilities whose rows sum to less than 1"
    LOGPROB = "log-probabilities"
    SUBLOGPROB = "part of a distribution: log-probabilities whose logsumexp is below 0"
    NONNEG = "non-negative scores that are not normalized"
    NONPOS = "non-positive log-scores that are not normalized"
    SIGNED = "raw logits (values of both signs, not normalized)"
    UNKNOWN = "unknown"

    @property
    def normalized(self) -> bool:
        return self in (Space.PROB, Space.LOGPROB)

    @property
    def partial(self) -> bool:
        return self in (Space.SUBPROB, Space.SUBLOGPROB)


_PROBS = frozenset({Space.PROB, Space.SUBPROB})
_LOG_PROBS = frozenset({Space.LOGPROB, Space.SUBLOGPROB})


def _expected(call: Call) -> Space:
    """The target's space the contract asks for: ``log_target`` says which."""
    return Space.LOGPROB if call.log_target else Space.PROB


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast of two shapes, or None when they do not broadcast."""
    out: list[int] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 not in (x, y) else x * y)
    return tuple(reversed(out))


def candidate_dims(shape: Sequence[int]) -> tuple[int, ...]:
    """Dimensions that may hold the distribution, most likely first.

    ``[N, C]`` holds it on dim 1; ``[B, T, V]`` token distributions and
    ``[B, H, T, T]`` attention rows on the last dim; ``[N, C, T]`` and
    ``[N, C, H, W]`` dense predictions on dim 1. The statistics decide
    between the two; the order only breaks ties when nothing is normalized.
    """
    n = len(shape)
    if n == 0:
        return ()
    if n == 1:
        dims: tuple[int, ...] = (0,)
    elif n == 2:
        dims = (1,)
    elif n == 3:
        dims = (2, 1)
    elif shape[-1] == shape[-2]:
        dims = (n - 1, 1)
    else:
        dims = (1, n - 1)
    return tuple(d for d in dims if shape[d] > 1)


def other_dims(shape: Sequence[int]) -> tuple[int, ...]:
    """The remaining dimensions, where a distribution would be misplaced (KLG006)."""
    candidates = candidate_dims(shape)
    return tuple(d for d in range(len(shape)) if shape[d] > 1 and d not in candidates)


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


def classify(side: SideStats, kept: int, dtype: str, classes: int) -> Space:
    if kept == 0 or side.has_nan or side.value.hi == math.inf:
        return Space.UNKNOWN
    dtype = carried_dtype(dtype, side)
    tol = norm_tolerance(dtype)
    lse_tol = lse_tolerance(dtype, classes)
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


class ScreenPlan(NamedTuple):
    """What the screen of a call reads, and the bounds it holds the sums to."""

    dim: int  # the class dim it reads: the first candidate
    log_target: bool
    input_lse: tuple[float, float]  # of log(sum(exp(input))) over a row
    input_max: float | None  # the bound of the input's values, when the screen reads them
    target_lse: tuple[float, float]  # the same for a target of log-probabilities
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
    reads_max = dtype in _HALF
    return ScreenPlan(
        dim=dims[0],
        log_target=call.log_target,
        input_lse=_lse_bounds(dtype, classes, reads_max),
        input_max=norm_tolerance(dtype) if reads_max else None,
        target_lse=_lse_bounds(call.target.dtype, classes, False),
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
    if plan.input_max is not None and not (input_max is not None and input_max <= plan.input_max):
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


def _logs_within(exp_sums: Sequence[float], bounds: tuple[float, float]) -> bool:
    low, high = min(exp_sums), max(exp_sums)
    return low > 0 and bounds[0] <= math.log(low) and math.log(high) <= bounds[1]


def lse_tolerance(dtype: str, classes: int) -> float:
    """Allowed error of a logsumexp: the norm tolerance, plus the rounding of
    each log-probability to the dtype (up to u*|v|, u half of eps), which moves
    a near-uniform row's logsumexp by up to u*log(classes): 0.04 in bfloat16
    over a 50k vocabulary."""
    return norm_tolerance(dtype) + _EPS.get(dtype, 1.2e-7) / 2 * math.log(max(classes, 2))


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _range(lo: float, hi: float) -> str:
    return _fmt(lo) if _fmt(lo) == _fmt(hi) else f"{_fmt(lo)}..{_fmt(hi)}"


def _dim_name(dim: int, ndim: int) -> str:
    return "-1" if dim == ndim - 1 and ndim >= 3 else str(dim)


def _evidence(name: str, info: TensorInfo, stats: DimStats, side: SideStats) -> str:
    rows = (
        f"{stats.kept} of {stats.total_rows} rows"
        if stats.rows < stats.total_rows or (stats.kept < stats.rows)
        else f"{stats.kept} rows"
    )
    return (
        f"{name + ':':8}{info.summary}, dim {stats.dim} ({rows}): "
        f"values {_range(side.value.lo, side.value.hi)}, "
        f"row sums {_range(side.row_sum.lo, side.row_sum.hi)}, "
        f"logsumexp {_range(side.logsumexp.lo, side.logsumexp.hi)}"
    )


def _render_call(call: Call, input_expr: str, target_expr: str, *, log_target: bool) -> str:
    reduction = "batchmean" if call.reduction == "mean" else call.reduction
    if len(call.shape) == 1 and reduction == "batchmean":
        reduction = "sum"
    args = f'reduction="{reduction}"' + (", log_target=True" if log_target else "")
    if call.api == "module":
        return f"nn.KLDivLoss({args})({input_expr}, {target_expr})"
    return f"F.kl_div({input_expr}, {target_expr}, {args})"


def argument_findings(call: Call) -> list[Diagnosis]:
    """Findings that need no statistics: KLG001, KLG005 and KLG008.

    They depend on the call's signature only (``_check`` keeps them with the
    Call it describes once).
    """
    out: list[Diagnosis] = []
    shape = call.shape
    if call.reduction == "mean" and len(shape) >= 1:
        out.append(_reduction_mean(call, shape))
    if call.input.shape != call.target.shape:
        out.append(_shapes_differ(call, shape))
    if call.grad_enabled and call.target.requires_grad and not call.input.requires_grad:
        out.append(_target_requires_grad(call))
    return out


def _target_requires_grad(call: Call) -> Diagnosis:
    # Opt-in (see _findings.OPT_IN): the tensors of a swapped call and of
    # reverse KL on purpose are the same, so the message names both readings.
    return Diagnosis(
        "KLG008",
        "the target of kl_div requires grad but the input does not",
        (
            f"input:  {call.input.summary}, requires_grad=False",
            f"target: {call.target.summary}, requires_grad=True",
            "the gradient flows into the target: either the roles are swapped "
            "(kl_div wants input = log q_model, target = p_reference),",
            "or this is reverse KL on purpose: KL(student || teacher), mode-seeking "
            "(MiniLLM, GKD), whose gradient goes through the target by design",
        ),
        _render_call(
            call,
            "F.log_softmax(model_logits, dim=1)",
            "F.softmax(reference_logits, dim=1).detach()",
            log_target=False,
        )
        + " if the roles are swapped; for reverse KL on purpose, silence this line with "
        "the comment '# kl_guard: ignore[KLG008]' on the kl_div call",
    )


def _reduction_mean(call: Call, shape: tuple[int, ...]) -> Diagnosis:
    numel = math.prod(shape)
    per_sample = numel // shape[0] if shape[0] else 0
    if call.legacy:
        source = (
            f"the deprecated size_average={call.size_average!r}, reduce={call.reduce!r} "
            "resolve to reduction='mean'"
        )
        if isinstance(call.reduce, str) or isinstance(call.size_average, str):
            source += " (a string there is only truthy; it is not a reduction)"
    elif call.api == "module":
        source = "the module's reduction is 'mean' (nn.KLDivLoss's default)"
    else:
        source = (
            "reduction='mean' was passed"
            if call.reduction_arg == "mean" and call.reduction_arg is not None
            else "reduction defaults to 'mean'"
        )
    if len(shape) == 1:
        why = (
            f"'mean' divides the KL of this single distribution by its {numel} classes; "
            "'sum' gives the true KL"
        )
    else:
        why = (
            f"'mean' divides by all {numel} elements, so the value is {per_sample}x smaller "
            f"than the KL per sample ({per_sample} elements per sample); "
            "'batchmean' divides by the batch size only"
        )
    return Diagnosis(
        "KLG001",
        "kl_div reduction 'mean' is not the KL divergence per sample",
        (source, why),
        _render_call(call, "input", "target", log_target=call.log_target),
    )


def _shapes_differ(call: Call, shape: tuple[int, ...]) -> Diagnosis:
    evidence = [
        f"input:  {call.input.summary}",
        f"target: {call.target.summary}",
        f"kl_div broadcasts both to [{', '.join(map(str, shape))}] without a warning",
    ]
    if call.reduction == "batchmean" and call.input.shape[:1] != shape[:1]:
        evidence.append(
            f"'batchmean' divides by input.size(0) = "
            f"{call.input.shape[0] if call.input.shape else 1}, not by the batch of {shape[0]}"
        )
    return Diagnosis(
        "KLG005",
        "input and target of kl_div have different shapes",
        tuple(evidence),
        "give both the same shape, e.g. target.expand_as(input) if the broadcast is "
        "intended, or index the matching rows",
    )


@dataclasses.dataclass(frozen=True)
class _Reading:
    """The chosen distribution dimension and what each tensor looks like there."""

    dim: int
    stats: DimStats
    input: Space
    target: Space


def _read(call: Call, stats: Mapping[int, DimStats]) -> _Reading | None:
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
    return _Reading(dim, stats[dim], *spaces[dim])


def _normalized_elsewhere(
    call: Call, stats: Mapping[int, DimStats], dim: int, which: Literal["input", "target"]
) -> DimStats | None:
    info = call.input if which == "input" else call.target
    for d, s in stats.items():
        if d != dim and classify(getattr(s, which), s.kept, info.dtype, s.size).normalized:
            return s
    return None


def wants_more_dims(call: Call, stats: Mapping[int, DimStats]) -> tuple[int, ...]:
    """Other dimensions worth examining: only when a tensor is off on the chosen
    one, or only part of a distribution there (a distribution normalized over
    the wrong dim has rows of any sum along the right one)."""
    reading = _read(call, stats)
    if reading is None:
        return ()
    settled = reading.input in (Space.LOGPROB, Space.UNKNOWN) and reading.target in (
        _expected(call),
        Space.UNKNOWN,
    )
    if settled:
        return ()
    return tuple(d for d in other_dims(call.shape) if d not in stats)


def tensor_findings(
    call: Call, stats: Mapping[int, DimStats], loss: float | None = None
) -> list[Diagnosis]:
    """Findings from the statistics: KLG002, KLG003, KLG006, KLG007 and KLG004."""
    reading = _read(call, stats)
    out: list[Diagnosis] = []
    if reading is not None:
        out += _space_findings(call, stats, reading)
    finding = _loss_finding(call, loss, reading, out)
    if finding is not None:
        out.append(finding)
    return out


def _space_findings(call: Call, stats: Mapping[int, DimStats], r: _Reading) -> list[Diagnosis]:
    ndim = len(call.shape)
    d = _dim_name(r.dim, ndim)

    # Evidence is formatted only for a finding: the correct call pays nothing.
    def ev_input() -> str:
        return _evidence("input", call.input, r.stats, r.stats.input)

    def ev_target() -> str:
        return _evidence("target", call.target, r.stats, r.stats.target)

    out: list[Diagnosis] = []
    misplaced: list[tuple[str, DimStats]] = []
    swapped = r.input in _PROBS and r.target in _LOG_PROBS and not call.log_target

    if swapped:
        out.append(
            Diagnosis(
                "KLG003",
                "input and target of kl_div look swapped: input is probabilities, "
                "target is log-probabilities",
                (
                    ev_input(),
                    ev_target(),
                    "kl_div(input, target) wants input = log q (the model), "
                    "target = p (the reference)",
                ),
                _render_call(
                    call,
                    f"F.log_softmax(model_logits, dim={d})",
                    f"F.softmax(reference_logits, dim={d})",
                    log_target=False,
                ),
            )
        )
    elif r.input not in (Space.LOGPROB, Space.UNKNOWN):
        # Probabilities are a finding wherever they sum to 1; anything else
        # may be a distribution over the wrong dim, and a part of one is
        # fine unless so.
        elsewhere = (
            _normalized_elsewhere(call, stats, r.dim, "input")
            if r.input is not Space.PROB
            else None
        )
        if elsewhere is not None:
            misplaced.append(("input", elsewhere))
        elif r.input is not Space.SUBLOGPROB:
            out.append(_input_not_log_probabilities(call, r.input, d, ev_input()))

    if not swapped and r.target not in (_expected(call), Space.UNKNOWN):
        elsewhere = _normalized_elsewhere(call, stats, r.dim, "target")
        other_space = r.target in (_PROBS if call.log_target else _LOG_PROBS)
        if other_space or (r.target is Space.NONNEG and call.log_target):
            space = "log-probabilities" if r.target is Space.LOGPROB else r.target.value
            out.append(
                Diagnosis(
                    "KLG002",
                    f"kl_div was called with log_target={call.log_target} "
                    f"but the target looks like {space}",
                    (
                        ev_target(),
                        "log_target=True means the target holds log-probabilities; "
                        "log_target=False (the default) means probabilities",
                    ),
                    _render_call(call, "input", "target", log_target=not call.log_target),
                )
            )
        elif elsewhere is not None:
            misplaced.append(("target", elsewhere))
        elif not r.target.partial:
            if call.log_target:
                headline = "target of kl_div (log_target=True) is not log-probabilities"
                fix_target = f"F.log_softmax(target_logits, dim={d})"
            elif r.target is Space.NONNEG:
                headline = "target of kl_div is non-negative but its rows do not sum to 1"
                fix_target = f"target / target.sum(dim={d}, keepdim=True)"
            else:
                headline = "target of kl_div has negative values: it is not probabilities"
                fix_target = f"F.softmax(target_logits, dim={d})"
            out.append(
                Diagnosis(
                    "KLG007",
                    headline,
                    (ev_target(), "all-zero rows (masked padding) are ignored"),
                    _render_call(call, "input", fix_target, log_target=call.log_target),
                )
            )

    if misplaced:
        evidence: list[str] = []
        for name, s in misplaced:
            info = call.input if name == "input" else call.target
            side = s.input if name == "input" else s.target
            evidence.append(
                f"{name} is normalized over dim {s.dim} (size {s.size}), "
                f"not over dim {d} (size {r.stats.size})"
            )
            evidence.append(_evidence(name, info, s, side))
        wrong = misplaced[0][1].dim
        fn = "softmax" if misplaced[-1][0] == "target" and not call.log_target else "log_softmax"
        out.append(
            Diagnosis(
                "KLG006",
                f"a distribution passed to kl_div is normalized over dim {wrong}, "
                f"not over the class dim {d}",
                tuple(evidence),
                f"F.{fn}(x, dim={d}) instead of F.{fn}(x, dim={wrong})",
            )
        )
    return out


def _input_not_log_probabilities(call: Call, space: Space, d: str, evidence: str) -> Diagnosis:
    what = {
        Space.PROB: "probabilities (softmax output?), not log-probabilities",
        Space.SUBPROB: "probabilities (part of a softmax output?), not log-probabilities",
        Space.NONNEG: "non-negative scores that are not normalized, not log-probabilities",
        Space.NONPOS: "log-scores that do not normalize (logsumexp is above 0)",
        Space.SIGNED: "raw logits, not log-probabilities",
    }[space]
    wants = f"kl_div wants input = log-probabilities over dim {d}"
    if space in _PROBS:
        wants += " (probs.clamp_min(1e-12).log() if only probabilities exist)"
    return Diagnosis(
        "KLG003",
        f"input to kl_div looks like {what}",
        (evidence, wants),
        _render_call(call, f"F.log_softmax(logits, dim={d})", "target", log_target=call.log_target),
    )


def loss_tolerance(call: Call, classes: int, dtype: str | None = None) -> float:
    """How negative a loss may be from rounding alone, for this call (its
    values rounded to ``dtype``, the input's dtype by default)."""
    eps = _EPS.get(dtype or call.input.dtype, 1.2e-7)
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


def _normalization_slack(call: Call, r: _Reading) -> float:
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
    targets = _LOG_PROBS if call.log_target else _PROBS
    if r.input not in _LOG_PROBS or r.target not in targets:
        return 0.0
    target, lse = r.stats.target, r.stats.input.logsumexp.hi
    if call.log_target:
        lo, hi = math.exp(target.logsumexp.lo), math.exp(target.logsumexp.hi)
    else:
        lo, hi = target.row_sum.lo, target.row_sum.hi
    s = min(max(math.exp(lse - 1), lo), hi)
    return max(0.0, s * (lse - math.log(s))) if s > 0 else 0.0


def _loss_dtype(call: Call, reading: _Reading | None) -> str:
    """The coarsest precision the input's and the target's values carry."""
    if reading is None:
        return call.input.dtype
    carried = (
        carried_dtype(call.input.dtype, reading.stats.input),
        carried_dtype(call.target.dtype, reading.stats.target),
    )
    return max(carried, key=lambda dtype: _EPS.get(dtype, 0.0))


def _finite(stats: DimStats) -> bool:
    sides = (stats.input, stats.target)
    return all(math.isfinite(x) for side in sides for x in (side.value.lo, side.value.hi))


def _loss_finding(
    call: Call,
    loss: float | None,
    reading: _Reading | None,
    found: Sequence[Diagnosis],
) -> Diagnosis | None:
    classes = reading.stats.size if reading else (call.shape[-1] if call.shape else 1)
    tol = loss_tolerance(call, classes, _loss_dtype(call, reading))
    if call.reduction == "none":
        value = reading.stats.loss_row_min if reading else None
        label = "the lowest per-row sum of the unreduced loss"
        if reading is not None:
            tol += _normalization_slack(call, reading)
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
        fix = _render_call(call, "input", "target.exp()", log_target=False)
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
            f"{dtype}" + (f", whose largest value is {_MAX[dtype]:g}" if dtype in _MAX else "")
        )
        fix = _render_call(call, "input.float()", "target.float()", log_target=call.log_target)
    elif reading is not None and value < 0 and (reading.input.partial or reading.target.partial):
        cause = (
            "cause: input and target are parts of distributions (rows that sum to less than 1, "
            "never renormalized): the KL of a part can be negative"
        )
        fix = (
            "renormalize each part (F.log_softmax over its classes) if a distribution over "
            "them was meant; for a deliberate approximation (top-k without renormalizing), "
            "the comment '# kl_guard: ignore[KLG004]' on the kl_div line silences this"
        )
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
        (f"{label} is {_fmt(value)} (rounding allows down to {_fmt(-tol)})", cause),
        fix,
    )

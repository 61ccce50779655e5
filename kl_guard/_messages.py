"""How a finding reads: the Diagnosis record, and numbers, tensors and calls as text."""

from __future__ import annotations

import dataclasses
import math

from kl_guard import _words
from kl_guard._contract import Space
from kl_guard._rows import DimStats, SideStats
from kl_guard._signature import Call, TensorInfo


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


def fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def span(lo: float, hi: float) -> str:
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}..{fmt(hi)}"


def dim_name(dim: int, ndim: int) -> str:
    return "-1" if dim == ndim - 1 and ndim >= 3 else str(dim)


def evidence_line(name: str, info: TensorInfo, stats: DimStats, side: SideStats) -> str:
    rows = (
        f"{stats.kept} of {stats.total_rows} rows"
        if stats.rows < stats.total_rows or (stats.kept < stats.rows)
        else f"{stats.kept} rows"
    )
    return (
        f"{name + ':':8}{info.summary}, dim {stats.dim} ({rows}): "
        f"values {span(side.value.lo, side.value.hi)}, "
        f"row sums {span(side.row_sum.lo, side.row_sum.hi)}, "
        f"logsumexp {span(side.logsumexp.lo, side.logsumexp.hi)}"
    )


def render_call(
    call: Call,
    input_expr: str,
    target_expr: str,
    *,
    log_target: bool,
    reduction: str | None = None,
) -> str:
    """The call as the user wrote it (function or module), with the right ``reduction``."""
    if reduction is None:
        reduction = "batchmean" if call.reduction == "mean" else call.reduction
        if len(call.shape) == 1 and reduction == "batchmean":
            reduction = "sum"
    args = f'reduction="{reduction}"' + (", log_target=True" if log_target else "")
    if call.api == "module":
        return f"nn.KLDivLoss({args})({input_expr}, {target_expr})"
    return f"F.kl_div({input_expr}, {target_expr}, {args})"


def log_target_mismatch(call: Call, space: Space, evidence: str) -> Diagnosis:
    """KLG002: the target looks like ``space``, the other space than ``log_target`` says."""
    return Diagnosis(
        "KLG002",
        _words.log_target_headline(call.log_target, space),
        (evidence, _words.LOG_TARGET_MEANS),
        render_call(call, "input", "target", log_target=not call.log_target),
    )

"""One check of a family loss call: arguments bound by its contract, a few numbers read, findings.

The family's counterpart of ``_arguments`` and ``_check``: the contract says
where each argument is (``_contract``), this module reads the numbers its
rules need (``_family_rules``) on the tensors' device, packed in one small
tensor so a check reads the device back once (a second time only where the
class dim suggests a distribution over another dim), or never, until the
copy has landed, when deferred (``_deferred``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from kl_guard import _statistics
from kl_guard._check import judgeable, tensor_info
from kl_guard._contract import CROSS_ENTROPY, LossContract
from kl_guard._family_rules import (
    MULTI_HOT,
    WALL,
    Elements,
    FamilyCall,
    Numbers,
    Rows,
    shape_findings,
    value_findings,
    wants_other_dims,
)
from kl_guard._messages import Diagnosis
from kl_guard._reduction import resolve_reduction
from kl_guard._rows import Range, SideStats
from kl_guard._signature import Api

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

#: A module's settings, read from the module as its forward reads them.
_MODULE_ATTRIBUTES = ("reduction", "weight", "ignore_index", "label_smoothing", "pos_weight")
_PER_ROW = len(_statistics.ROW_STATS)
_HALF = (torch.bfloat16, torch.float16)
_PER_ELEMENTS = 6


def bind(contract: LossContract, args: Args, kwargs: Kwargs, instance: Any) -> dict[str, Any]:
    """The call's arguments by name, a module's settings included."""
    if instance is None:
        bound = dict(contract.defaults)
        bound.update({contract.parameters[i]: arg for i, arg in enumerate(args)})
    else:
        bound = {
            name: getattr(instance, name) for name in _MODULE_ATTRIBUTES if hasattr(instance, name)
        }
        bound.update({contract.tensors[i]: arg for i, arg in enumerate(args[:2])})
    bound.update(kwargs)
    return bound


def describe(
    contract: LossContract, bound: dict[str, Any], api: Api, *, shapes_only: bool = False
) -> FamilyCall | None:
    """The call as plain values, or None where its tensors are not plain float input
    and a tensor target (kl_guard reads nothing it cannot judge). ``shapes_only``:
    only the shapes will be judged (a tracing pass's fake tensors), any tensors do."""
    input, target = bound.get("input"), bound.get("target")
    input_info, target_info = tensor_info(input), tensor_info(target)
    if input_info is None or target_info is None or not (shapes_only or judgeable(input)):
        return None
    assert isinstance(target, torch.Tensor)
    return FamilyCall(
        loss=contract,
        api=api,
        input=input_info,
        target=target_info,
        reduction=resolve_reduction(
            bound.get("size_average"), bound.get("reduce"), bound.get("reduction", "mean")
        ),
        class_dim=(1 if len(input_info.shape) >= 2 else 0) if contract.classes else None,
        soft_target=target.is_floating_point() and target_info.shape == input_info.shape,
        weighted=bound.get("weight") is not None,
    )


@dataclasses.dataclass(frozen=True)
class _Part:
    """Where one tensor's numbers lie in the packed tensor."""

    which: str  # "input", "target" or "elements"
    dim: int
    size: int
    rows: int


@dataclasses.dataclass
class Measurement:
    """A family call's numbers, computed on its device, not yet read back (see
    ``_check.Measurement``, whose protocol ``_deferred`` reads)."""

    call: FamilyCall
    parts: tuple[_Part, ...] = ()
    packed: torch.Tensor | None = None
    count: int = 0  # elements read, for an elementwise loss

    @property
    def layout(self) -> tuple[_Part, ...] | None:
        return self.parts or None

    def pack_loss(self) -> None:
        """Nothing to add: no family rule reads the loss."""

    def read(self) -> list[float] | None:
        return None if self.packed is None else self.packed.tolist()

    def numbers(self, values: list[float] | None) -> Numbers:
        if values is None:
            return Numbers()
        inputs: dict[int, Rows] = {}
        target = elements = None
        offset = 0
        for part in self.parts:
            if part.which == "elements":
                elements = _elements(values[offset : offset + _PER_ELEMENTS], self.count)
                offset += _PER_ELEMENTS
                continue
            rows = _rows(values[offset : offset + _PER_ROW * part.rows], part)
            offset += _PER_ROW * part.rows
            if part.which == "input":
                inputs[part.dim] = rows
            else:
                target = rows
        return Numbers(inputs, target, elements)

    def diagnose(self, values: list[float] | None) -> list[Diagnosis]:
        """The findings, from the numbers read back; the other dims, measured with the
        class dim when deferred, are read only where :func:`examine` would read them."""
        numbers = self.numbers(values)
        if not wants_other_dims(self.call, numbers):
            numbers = dataclasses.replace(
                numbers, input={d: r for d, r in numbers.input.items() if d == self.call.class_dim}
            )
        return shape_findings(self.call) + value_findings(self.call, numbers)


def measure(
    call: FamilyCall,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: object,
    *,
    sample_rows: int,
    dims: tuple[int, ...] | None = None,
    with_target: bool = True,
) -> Measurement:
    """Launch the numbers of ``dims`` of the input (the class dim by default) and,
    ``with_target``, a soft target's along the class dim; or of the elements. No
    read-back."""
    if call.class_dim is None:
        return _measure_elements(call, input, target, weight)
    dims = (call.class_dim,) if dims is None else dims
    parts: list[_Part] = []
    packed: list[torch.Tensor] = []
    dtype = _statistics.work_dtype(input.dtype)
    with torch.no_grad():
        for which, x, dim in (
            *(("input", input, d) for d in dims),
            *(
                (("target", target, call.class_dim),)
                if with_target and _reads_target(call, target)
                else ()
            ),
        ):
            if x.shape[dim] < 2:
                continue
            k = _statistics.rows_for(x.shape[dim], sample_rows)
            rows = _statistics.sample_fibers(x.detach(), dim, k)
            half = x.dtype if x.dtype in _HALF else None
            stats = _statistics.row_stats(rows if rows.dtype == dtype else rows.to(dtype), half)
            parts.append(_Part(which, dim, x.shape[dim], rows.shape[0]))
            packed.append(stats.flatten().to(torch.float32))
    if not packed:
        return Measurement(call)
    return Measurement(call, tuple(parts), torch.cat(packed) if len(packed) > 1 else packed[0])


def _reads_target(call: FamilyCall, target: torch.Tensor) -> bool:
    return call.soft_target and judgeable(target) and call.target.shape == call.input.shape


def other_dims(call: FamilyCall) -> tuple[int, ...]:
    """The input's dims other than the class dim where a distribution could lie."""
    shape = call.input.shape
    return tuple(d for d in range(len(shape)) if d != call.class_dim and shape[d] > 1)


def _measure_elements(
    call: FamilyCall, input: torch.Tensor, target: torch.Tensor, weight: object
) -> Measurement:
    if not judgeable(target) or call.target.shape != call.input.shape:
        return Measurement(call)
    with torch.no_grad():
        x = _flat_sample(input.detach())
        t = _flat_sample(target.detach())
        x = x.to(torch.float32) if x.dtype != torch.float64 else x
        t = t.to(x.dtype)
        # A weight of 0 marks an element that counts for nothing: its target is not
        # read, nor any target where the weight is given but not at hand (a compiled graph)
        counted = (torch.zeros_like if call.weighted else torch.ones_like)(t, dtype=torch.bool)
        if isinstance(weight, torch.Tensor):
            try:
                counted = _flat_sample(weight.detach().expand_as(target)) != 0
            except RuntimeError:  # a weight torch would not broadcast: torch raised first
                return Measurement(call)
        packed = torch.stack(
            (
                x.amin(),
                x.amax(),
                ((x > 0) & (x <= WALL)).sum(),
                ((x >= 1 - WALL) & (x <= 1)).sum(),
                torch.where(counted, t, math.inf).amin(),
                torch.where(counted, t, -math.inf).amax(),
            )
        ).to(torch.float32)
    return Measurement(call, (_Part("elements", -1, 0, 0),), packed, x.numel())


def _flat_sample(x: torch.Tensor) -> torch.Tensor:
    """At most :data:`_statistics.ELEMENT_BUDGET` evenly spaced values of ``x``
    (a view where ``x`` is contiguous, else a copy of it first)."""
    flat, n = x.reshape(-1), x.numel()
    if n <= _statistics.ELEMENT_BUDGET:
        return flat
    return flat.index_select(0, _statistics.flat_index(n, _statistics.ELEMENT_BUDGET, x.device))


def _rows(values: list[float], part: _Part) -> Rows:
    r = part.rows
    stat = {name: values[i * r : (i + 1) * r] for i, name in enumerate(_statistics.ROW_STATS)}
    keep = [j for j in range(r) if not stat["min"][j] == stat["max"][j] == 0]  # masked rows
    kept = {name: [column[j] for j in keep] for name, column in stat.items()}
    rng = _statistics.range_of
    side = SideStats(
        row_sum=rng(kept["row_sum"]),
        logsumexp=rng(kept["logsumexp"]),
        value=Range(rng(kept["min"]).lo, rng(kept["max"]).hi),
        on_bfloat16=all(kept["on_bfloat16"]),
        on_float16=all(kept["on_float16"]),
    )
    distinct = len(set(zip(kept["min"], kept["max"], kept["row_sum"], strict=True)))
    return Rows(part.dim, part.size, r, len(keep), distinct, side)


def _elements(values: list[float], count: int) -> Elements:
    lo, hi, low, high, target_lo, target_hi = values
    return Elements(count, lo, hi, int(low), int(high), target_lo, target_hi)


def _screened(call: FamilyCall, input: torch.Tensor, target: torch.Tensor, rows: int) -> bool:
    """Whether a cross_entropy call is certainly correct from a glance at its rows: a
    negative input value rules out probabilities anywhere, and a soft target whose
    values are >= 0 and whose rows sum to at most 1.1 is probabilities (or part of
    them). Three kernels and one read, where the full numbers take a dozen."""
    if call.loss is not CROSS_ENTROPY or call.class_dim is None:
        return False
    dim = call.class_dim
    k = _statistics.rows_for(input.shape[dim], rows)
    least = _statistics.sample_fibers(input.detach(), dim, k).amin()
    if not _reads_target(call, target):
        return bool(least < 0)
    t = _statistics.sample_fibers(target.detach(), dim, k)
    t = t if t.dtype == torch.float64 else t.float()
    lo, least_target, most_sum = torch.stack(
        (least.to(t.dtype), t.amin(), t.sum(-1).amax())
    ).tolist()
    return bool(lo < 0 and least_target >= 0 and most_sum <= MULTI_HOT)


def examine(
    call: FamilyCall, input: torch.Tensor, target: torch.Tensor, weight: object, *, sample_rows: int
) -> list[Diagnosis]:
    """Every finding of one call, synchronously: one read-back, a second only where
    the class dim looks like a distribution normalized over another dim.

    A cross_entropy call is screened first (:func:`_screened`)."""
    if _screened(call, input, target, sample_rows):
        return shape_findings(call)
    m = measure(call, input, target, weight, sample_rows=sample_rows)
    numbers = m.numbers(m.read())
    if wants_other_dims(call, numbers):
        extra = measure(
            call,
            input,
            target,
            weight,
            sample_rows=sample_rows,
            dims=other_dims(call),
            with_target=False,
        )
        more = extra.numbers(extra.read())
        numbers = dataclasses.replace(numbers, input={**numbers.input, **more.input})
    return shape_findings(call) + value_findings(call, numbers)

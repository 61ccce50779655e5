"""One check of one call: tensors and arguments in, diagnoses out.

Glue between the stages: it describes the call, asks ``_statistics`` for the
numbers (one read-back, a second only when something is already off), and
hands them to ``_diagnosis``.
"""

from __future__ import annotations

import dataclasses

import torch

from kl_guard import _statistics
from kl_guard._diagnosis import (
    Api,
    Call,
    Diagnosis,
    TensorInfo,
    argument_findings,
    candidate_dims,
    resolve_reduction,
    tensor_findings,
    wants_more_dims,
)
from kl_guard._findings import Finding
from kl_guard._reporting import attribute, user_frame

_REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2, "batchmean": 2}
_is_functorch_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def judgeable(x: object) -> bool:
    """Whether kl_guard can read statistics from ``x`` (never raises).

    Tensor subclasses (fake, meta, DTensor, functorch's batched and grad
    wrappers) and non-float, empty or 0-d tensors are skipped, not guessed at.
    """
    if type(x) not in (torch.Tensor, torch.nn.Parameter):
        return False
    assert isinstance(x, torch.Tensor)
    if not x.is_floating_point() or x.dim() == 0 or x.numel() == 0 or x.is_meta:
        return False
    return not (_is_functorch_wrapped is not None and _is_functorch_wrapped(x))


def _info(x: object) -> TensorInfo | None:
    if not isinstance(x, torch.Tensor):
        return None
    return TensorInfo(
        shape=tuple(int(s) for s in x.shape),
        dtype=str(x.dtype).removeprefix("torch."),
        requires_grad=bool(x.requires_grad),
    )


def describe(
    input: object,
    target: object,
    *,
    api: Api,
    size_average: object = None,
    reduce: object = None,
    reduction: object = "mean",
    log_target: object = False,
) -> Call | None:
    """The :class:`Call` for these arguments, or None when they are not tensors."""
    input_info, target_info = _info(input), _info(target)
    if input_info is None or target_info is None:
        return None
    return Call(
        input=input_info,
        target=target_info,
        reduction=resolve_reduction(size_average, reduce, reduction),
        log_target=bool(log_target),
        api=api,
        reduction_arg=reduction,
        size_average=size_average,
        reduce=reduce,
        grad_enabled=torch.is_grad_enabled(),
    )


def examine(
    call: Call,
    input: torch.Tensor,
    target: torch.Tensor,
    loss: object,
    *,
    sample_rows: int,
) -> list[Diagnosis]:
    """Every diagnosis of one call, reading the device back once (twice if off)."""
    found = argument_findings(call)
    if not (judgeable(input) and judgeable(target)):
        return found
    shape = call.shape
    if shape != tuple(input.shape):
        input, target = torch.broadcast_tensors(input, target)  # type: ignore[no-untyped-call]
    elif shape != tuple(target.shape):
        target = target.expand_as(input)
    input, target = input.detach(), target.detach()

    elementwise = (
        loss.detach()
        if call.reduction == "none"
        and isinstance(loss, torch.Tensor)
        and judgeable(loss)
        and tuple(loss.shape) == shape
        else None
    )
    scalar = (
        loss.detach().reshape(1).to(torch.float32)
        if elementwise is None
        and isinstance(loss, torch.Tensor)
        and loss.numel() == 1
        and judgeable(loss.reshape(1))
        else None
    )

    def measure(dims: tuple[int, ...]) -> tuple[dict[int, _statistics.DimStats], float | None]:
        spec = _statistics.layout(shape, dims, sample_rows, elementwise is not None)
        packed = _statistics.compute(input, target, elementwise, dims, sample_rows)
        if scalar is not None:
            packed = torch.cat((packed, scalar))
        values = packed.tolist()
        loss_value = values.pop() if scalar is not None else None
        return _statistics.unpack(values, spec), loss_value

    stats, loss_value = measure(candidate_dims(shape))
    call = dataclasses.replace(call, loss=loss_value)
    more = wants_more_dims(call, stats)
    if more:
        stats.update(measure(more)[0])
    return found + tensor_findings(call, stats)


def kl_div_unchecked(
    input: torch.Tensor, target: torch.Tensor, reduction: str, log_target: bool
) -> torch.Tensor:
    """The loss torch computes, without the patched entry points or torch's warning."""
    enum = _REDUCTION_ENUM[reduction]
    with torch.no_grad():
        loss = torch.kl_div(input, target, enum, log_target=log_target)
        if reduction == "batchmean" and input.dim() != 0:
            loss = loss / input.size(0)
    return loss


def check(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    loss: torch.Tensor | None = None,
    sample_rows: int = 64,
) -> list[Finding]:
    """Diagnose one kl_div call without patching anything.

    ``kl_guard.check(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")``
    returns the findings kl_guard would report for that call (an empty list
    when it is correct). When ``loss`` is not given it is computed, so a
    negative or NaN loss (KLG004) is caught too.
    """
    if reduction not in _REDUCTION_ENUM:
        raise ValueError(
            f"kl_guard.check: reduction must be one of "
            f"{', '.join(repr(r) for r in _REDUCTION_ENUM)}, not {reduction!r}."
        )
    call = describe(input, target, api="function", reduction=reduction, log_target=log_target)
    if call is None:
        raise TypeError(
            "kl_guard.check: input and target must be tensors, not "
            f"{type(input).__name__} and {type(target).__name__}."
        )
    if loss is None and judgeable(input) and judgeable(target):
        loss = kl_div_unchecked(input, target, reduction, log_target)
    diagnoses = examine(call, input, target, loss, sample_rows=sample_rows)
    return attribute(diagnoses, user_frame(1))

"""One check of one call: tensors and arguments in, diagnoses out.

Glue between the stages: it describes the call, asks ``_statistics`` for the
numbers (one read-back, a second only when something is already off), and
hands them to ``_diagnosis``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from kl_guard import _compat, _locks, _statistics
from kl_guard._diagnosis import argument_findings, tensor_findings, wants_more_dims
from kl_guard._messages import Diagnosis
from kl_guard._plan import ScreenPlan, screen_passes, screen_plan
from kl_guard._reduction import kl_div_reduction
from kl_guard._rows import DimStats
from kl_guard._signature import Api, Call, TensorInfo, candidate_dims, other_dims

Stats = dict[int, DimStats]

_DTYPE_NAMES: dict[torch.dtype, str] = {}
# Plain tensors: no subclass (fake, meta, DTensor), so plain int shapes.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class _Known(NamedTuple):
    """What a call's signature alone decides, kept with the Call that describes it."""

    plan: ScreenPlan | None
    arguments: tuple[Diagnosis, ...]


# The calls described so far, by signature (see describe), and what each
# decides. Only these Calls recur: any other (a fake tensor's, a legacy
# argument's) is made afresh each time and would only crowd a cache.
_CALLS: dict[tuple[object, ...], Call] = {}
_KNOWN: dict[Call, _Known] = {}
_CALLS_LIMIT = 256
_CALLS_LOCK = _locks.Lock()


def _plan(call: Call) -> ScreenPlan | None:
    known = _KNOWN.get(call)
    return screen_plan(call) if known is None else known.plan


def _arguments(call: Call) -> list[Diagnosis]:
    known = _KNOWN.get(call)
    return argument_findings(call) if known is None else list(known.arguments)


REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2, "batchmean": 2}


def judgeable(x: object) -> bool:
    """Whether kl_guard can read statistics from ``x`` (never raises).

    Tensor subclasses (fake, meta, DTensor, functorch's batched and grad
    wrappers) and non-float, empty or 0-d tensors are skipped, not guessed at.
    """
    if type(x) not in _PLAIN:
        return False
    assert isinstance(x, torch.Tensor)
    if not x.is_floating_point() or x.dim() == 0 or x.numel() == 0 or x.is_meta:
        return False
    return not _compat.is_functorch_wrapped(x)


def tensor_info(x: object) -> TensorInfo | None:
    if not isinstance(x, torch.Tensor):
        return None
    dtype = _DTYPE_NAMES.get(x.dtype)
    if dtype is None:
        dtype = _DTYPE_NAMES[x.dtype] = str(x.dtype).removeprefix("torch.")
    return TensorInfo(shape=tuple(x.shape), dtype=dtype, requires_grad=x.requires_grad)


def describe(
    input: object,
    target: object,
    *,
    api: Api,
    size_average: object = None,
    reduce: object = None,
    reduction: object = None,
    log_target: object = False,
) -> Call | None:
    """The :class:`Call` for these arguments, or None when they are not tensors.

    ``reduction`` None: not written, torch's default ('mean').

    A loop makes the same call again and again: a call of plain tensors and
    plain arguments is described once per signature (shapes, dtypes, flags).
    """
    grad_enabled = torch.is_grad_enabled()
    if (
        type(input) in _PLAIN
        and type(target) in _PLAIN
        and size_average is None
        and reduce is None
        and (reduction is None or type(reduction) is str)
        and type(log_target) is bool
    ):
        assert isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)
        key = (
            api,
            input.shape,
            input.dtype,
            input.requires_grad,
            target.shape,
            target.dtype,
            target.requires_grad,
            reduction,
            log_target,
            grad_enabled,
        )
        call = _CALLS.get(key)
        if call is None:
            call = _new_call(input, target, api, None, None, reduction, log_target, grad_enabled)
            assert call is not None
            known = _Known(screen_plan(call), tuple(argument_findings(call)))
            with _CALLS_LOCK:
                if len(_CALLS) >= _CALLS_LIMIT:  # shapes that keep changing: the oldest goes
                    _KNOWN.pop(_CALLS.pop(next(iter(_CALLS))), None)
                _CALLS[key] = call
                _KNOWN[call] = known
        return call
    return _new_call(input, target, api, size_average, reduce, reduction, log_target, grad_enabled)


def _new_call(
    input: object,
    target: object,
    api: Api,
    size_average: object,
    reduce: object,
    reduction: object,
    log_target: object,
    grad_enabled: bool,
) -> Call | None:
    input_info, target_info = tensor_info(input), tensor_info(target)
    if input_info is None or target_info is None:
        return None
    return Call(
        input=input_info,
        target=target_info,
        reduction=kl_div_reduction(
            size_average, reduce, "mean" if reduction is None else reduction
        )[0],
        log_target=bool(log_target),
        api=api,
        reduction_arg=reduction,
        size_average=size_average,
        reduce=reduce,
        grad_enabled=grad_enabled,
    )


@dataclasses.dataclass
class Measurement:
    """Statistics of one call, computed on its device but not yet read back.

    Holds only small tensors of kl_guard's own (the packed numbers), never
    the user's input, target or loss.
    """

    call: Call
    layout: _statistics.Layout | None = None
    packed: torch.Tensor | None = None
    loss: torch.Tensor | None = None  # a reduced loss, detached, until it is read
    with_scalar_loss: bool = False  # its value was appended to ``packed``

    def read(self) -> list[float] | None:
        """The numbers, read back now (a synchronization on an accelerator)."""
        if self.packed is None:
            return None
        values: list[float] = self.packed.tolist()
        if self.loss is not None:
            values.append(self.loss.item())
        return values

    def diagnose(self, values: list[float] | None) -> list[Diagnosis]:
        """The diagnoses, from the numbers read back (None: none were measured)."""
        stats, loss = conclude(self, values)
        return diagnose(self.call, stats, loss)

    def pack_loss(self) -> None:
        """Append the loss to ``packed``, so one non-blocking copy brings both back."""
        if self.packed is not None and self.loss is not None:
            self.packed = torch.cat((self.packed, self.loss.reshape(1).to(self.packed.dtype)))
        self.loss = None
        self.with_scalar_loss = self.packed is not None and self.layout is not None


def measure(
    call: Call,
    input: torch.Tensor,
    target: torch.Tensor,
    loss: object,
    *,
    sample_rows: int,
    dims: tuple[int, ...] | None = None,
) -> Measurement:
    """Launch the statistics of ``dims`` (the candidate dims by default); no read-back."""
    if not (judgeable(input) and judgeable(target)):
        return Measurement(call)
    shape = call.shape
    if shape != tuple(input.shape):
        input, target = torch.broadcast_tensors(input, target)  # type: ignore[no-untyped-call]
    elif shape != tuple(target.shape):
        target = target.expand_as(input)
    elementwise = (
        loss.detach()
        if call.reduction == "none"
        and isinstance(loss, torch.Tensor)
        and judgeable(loss)
        and tuple(loss.shape) == shape
        else None
    )
    dims = candidate_dims(shape) if dims is None else dims
    if not dims:  # one class per row ([N, 1], a vocabulary shard of one id): no distribution
        return Measurement(call)
    layout = _statistics.make_layout(shape, dims, sample_rows, elementwise is not None)
    packed = _statistics.compute(input.detach(), target.detach(), elementwise, dims, sample_rows)
    reduced = _reduced_loss(call, loss)
    return Measurement(call, layout, packed, None if reduced is None else reduced.detach())


def _reduced_loss(call: Call, loss: object) -> torch.Tensor | None:
    """The loss of a reduced call as a one-element float tensor, when it can be
    read. Not detached: :class:`Measurement` detaches what it keeps; a value
    read at once needs no copy of the tensor."""
    if (
        call.reduction != "none"
        and type(loss) is torch.Tensor
        and loss.numel() == 1
        and loss.is_floating_point()
    ):
        return loss
    return None


def conclude(measurement: Measurement, values: list[float] | None) -> tuple[Stats, float | None]:
    """The statistics and the reduced loss's value, from the numbers read back."""
    layout = measurement.layout
    if layout is None or values is None:
        return {}, None
    if measurement.with_scalar_loss or measurement.loss is not None:
        return _statistics.unpack(values[:-1], layout), values[-1]
    return _statistics.unpack(values, layout), None


def all_dims(call: Call) -> tuple[int, ...]:
    """Every dimension worth measuring when there is no second read-back (CUDA)."""
    return candidate_dims(call.shape) + other_dims(call.shape)


def diagnose(call: Call, stats: Stats, loss: float | None) -> list[Diagnosis]:
    return _arguments(call) + (tensor_findings(call, stats, loss) if stats else [])


def examine(
    call: Call,
    input: torch.Tensor,
    target: torch.Tensor,
    loss: object,
    *,
    sample_rows: int,
    loss_from_torch: bool = True,
) -> list[Diagnosis]:
    """Every diagnosis of one call, synchronously.

    The device is read back once; a second time only when a tensor is
    already off on its class dimension, to tell a wrong dimension (KLG006)
    from the rest. ``loss_from_torch``: ``loss`` is what torch's kl_div
    returned for these tensors (not a value the caller passed on its own).
    """
    if _screened_correct(call, input, target, loss, sample_rows, loss_from_torch):
        return _arguments(call)
    m = measure(call, input, target, loss, sample_rows=sample_rows)
    stats, loss_value = conclude(m, m.read())
    more = wants_more_dims(call, stats) if stats else ()
    if more:
        extra = measure(call, input, target, None, sample_rows=sample_rows, dims=more)
        stats = {**stats, **conclude(extra, extra.read())[0]}
    return diagnose(call, stats, loss_value)


def _screened_correct(
    call: Call,
    input: torch.Tensor,
    target: torch.Tensor,
    loss: object,
    sample_rows: int,
    loss_from_torch: bool,
) -> bool:
    """The fast path of a correct call: three or four kernels, no full statistics."""
    plan = _plan(call)
    if plan is None or not (judgeable(input) and judgeable(target)):
        return False
    value = None
    if call.reduction != "none":
        reduced = _reduced_loss(call, loss)
        if reduced is None:
            return False
        value = reduced.item()
    # torch's reduced loss is NaN when a target value is negative: it stands
    # for the target's minimum; a loss from elsewhere does not.
    sums, least, most, target_most = _statistics.screen(
        input,
        target,
        plan.dim,
        sample_rows,
        call.log_target,
        target_min=value is None or not loss_from_torch,
        input_max=plan.input_max is not None,
        target_max=plan.target_max is not None,
    )
    return screen_passes(
        plan,
        sums.tolist(),
        None if least is None else least.item(),
        value,
        None if most is None else most.item(),
        None if target_most is None else target_most.item(),
    )


def kl_div_unchecked(
    input: torch.Tensor, target: torch.Tensor, reduction: str, log_target: bool
) -> torch.Tensor:
    """The loss torch computes, without the patched entry points or torch's warning."""
    enum = REDUCTION_ENUM[reduction]
    with torch.no_grad():
        loss: torch.Tensor = _compat.KL_DIV_OP(input, target, enum, log_target=log_target)
        if reduction == "batchmean" and input.dim() != 0:
            loss = loss / input.size(0)
    return loss

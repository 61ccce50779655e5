"""A call's arguments by name: ``F.kl_div``'s or the op's order, a module's reduction and flag."""

from __future__ import annotations

from typing import Any

from kl_guard import _check
from kl_guard._contract import KL_DIV
from kl_guard._reduction import op_reduction
from kl_guard._signature import Call

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

_FUNCTIONAL_PARAMS = KL_DIV.parameters
# reduction None: not written, so torch's default; KLG001 and KLG009 tell the two apart
_FUNCTIONAL_DEFAULTS: dict[str, Any] = {**KL_DIV.defaults, "reduction": None}
_OP_PARAMS = KL_DIV.op_parameters
_OP_DEFAULTS: dict[str, Any] = dict(KL_DIV.op_defaults)


def bind_arguments(args: Args, kwargs: Kwargs, instance: Any, op: bool = False) -> dict[str, Any]:
    """The call's arguments by name, a module's reduction and log_target included;
    for the op (``op``), its reduction as F.kl_div names it."""
    if op:
        bound = dict(_OP_DEFAULTS)
        bound.update({_OP_PARAMS[i]: arg for i, arg in enumerate(args)})
        bound.update(kwargs)
        bound["reduction"] = op_reduction(bound["reduction"])
        return bound
    if instance is None:
        bound = dict(_FUNCTIONAL_DEFAULTS)
        # by index, not zip(): dynamo traces this (``_recorder``); older ones fail on zip(strict=)
        bound.update({_FUNCTIONAL_PARAMS[i]: arg for i, arg in enumerate(args)})
    else:
        bound = {
            "reduction": getattr(instance, "reduction", "mean"),
            "log_target": getattr(instance, "log_target", False),
        }
        bound.update(zip(_FUNCTIONAL_PARAMS[:2], args, strict=False))
    bound.update(kwargs)
    return bound


def bind_constructor(args: Args, kwargs: Kwargs) -> dict[str, Any]:
    """The written arguments of an ``nn.KLDivLoss(...)`` by name (the defaults left out)."""
    bound = dict(zip(KL_DIV.module_parameters, args, strict=False))
    bound.update(kwargs)
    return bound


def call_of(
    args: Args, kwargs: Kwargs, instance: Any, op: bool = False
) -> tuple[Call | None, dict[str, Any]]:
    bound = bind_arguments(args, kwargs, instance, op)
    call = _check.describe(
        bound.get("input"),
        bound.get("target"),
        api="op" if op else "function" if instance is None else "module",
        size_average=bound.get("size_average"),
        reduce=bound.get("reduce"),
        reduction=bound.get("reduction"),
        log_target=bound.get("log_target", False),
    )
    return call, bound

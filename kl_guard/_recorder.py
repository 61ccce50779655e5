"""The recorder: a loss call in a compiled graph, checked after the graph computes its loss.

dynamo traces :func:`traced` in place of the patched ``F.kl_div``
(``_compat_compile.trace_instead``), and a loss of the family's traced
function (:func:`family_traced`) in place of its patched ``F.cross_entropy``...:
torch's loss (kl_div as one node, the others as dynamo traces them without
kl_guard), then the operator
``kl_guard::record``, which no pass removes, reorders before the loss or fuses.
It takes a constant token naming the kl_div line (``_compiled.site_token``,
while dynamo traces) and the call's tensors, which the graph has computed
anyway. At run time it is eager Python on the real tensors: the site's
schedule decides, and a due call is checked and reported as an eager one is
(``_percall.traced_call_ran``); raise mode's ``KLGuardError`` leaves the
compiled call itself. Nothing of dynamo's is imported until a program compiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from kl_guard import (
    _arguments,
    _compat_compile,
    _compiled,
    _family_check,
    _locks,
    _patch,
    _percall,
    _reporting,
)
from kl_guard._contract import KL_DIV, LossContract

_lock = _locks.Lock()
_defined: list[bool] = []
_prepared_for_dynamo: list[bool] = []
_libraries: list[torch.library.Library] = []


def register() -> None:
    """Have torch.compile trace :func:`traced` for ``F.kl_div``, once. Where the
    operator cannot be defined (an internal error, logged), the wrapper stays one
    opaque call in the graph, diagnosed from its arguments."""
    with _lock:
        if not _defined and _reporting.safely(_define):
            _defined.append(True)
            _compat_compile.trace_instead(_patch.FunctionalWrapper, _prepared)


def _define() -> bool:
    # torch.library.Library, not custom_op: custom_op's Python autograd layer
    # would cost each compiled call as much as the rest of the recorder.
    library = torch.library.Library("kl_guard", "FRAGMENT")  # type: ignore[no-untyped-call]
    library.define(  # type: ignore[no-untyped-call]
        "record(int token, Tensor input, Tensor target, Tensor loss) -> ()",
        tags=_compat_compile.record_tags(),
    )
    library.impl("record", _record, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    torch.library.register_fake("kl_guard::record", _no_record, lib=library)
    _compat_compile.mark_side_effect(torch.ops.kl_guard.record.default)
    _libraries.append(library)  # the operator lives as long as its library object
    return True


def _record(token: int, input: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
    view = _percall.ACTIVE.view
    if view is None:  # kl_guard is off, or was uninstalled since the compilation
        return
    if _compat_compile.capturing():  # no read of the device may happen in a capture
        _reporting.safely(_captured, token)
        return
    _percall.traced_call_ran(token, input, target, loss, view)


_CAPTURED: set[int] = set()


def _captured(token: int) -> None:
    """Say once per loss line that a CUDA graph captured it: its replays run no
    Python, and kl_guard checks none of them (where the operator cannot be kept
    out of CUDA graphs, torch 2.6)."""
    if token not in _CAPTURED:
        _CAPTURED.add(token)
        site = _compiled.TRACED.sites[token].site
        logging.getLogger("kl_guard").warning(
            "kl_guard: the loss at %s runs inside a CUDA graph (mode='reduce-overhead'): "
            "its replays are not checked.",
            site.location if site is not None else "a compiled graph",
        )


def _no_record(token: int, input: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
    return None


def _prepared(wrapper: Any) -> Callable[..., Any]:
    """What dynamo traces for ``wrapper``, once what it calls is registered with
    dynamo (which asks for it when it traces, and when it checks a compiled
    graph's guards)."""
    if not _prepared_for_dynamo:
        with _lock:
            if not _prepared_for_dynamo:
                torch.compiler.allow_in_graph(_percall.torch_kl_div)  # type: ignore[no-untyped-call]
                torch.compiler.assume_constant_result(_compiled.site_token)  # type: ignore[no-untyped-call]
                _prepared_for_dynamo.append(True)
    contract = getattr(wrapper, "_self_contract", KL_DIV)
    if contract is KL_DIV:
        return traced
    family = _FAMILY_TRACED.get(contract.name)
    if family is None:  # torch's function: nothing of kl_guard's is traced into
        family = _FAMILY_TRACED[contract.name] = family_traced(contract, wrapper.__wrapped__)
    return family


def traced(*args: Any, **kwargs: Any) -> Any:
    """What dynamo traces for a call of the patched ``F.kl_div``."""
    loss = _percall.torch_kl_div(*args, **kwargs)
    bound = _arguments.bind_arguments(args, kwargs, None)
    input, target = bound["input"], bound["target"]
    if not (
        isinstance(input, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and isinstance(loss, torch.Tensor)
    ):
        return loss
    arguments = (
        ("reduction", bound["reduction"]),
        ("log_target", bound["log_target"]),
        ("size_average", bound["size_average"]),
        ("reduce", bound["reduce"]),
    )
    _record_call(KL_DIV, arguments, input, target, loss)
    return loss


def _record_call(
    contract: LossContract,
    arguments: tuple[tuple[str, object], ...],
    input: torch.Tensor,
    target: torch.Tensor,
    loss: torch.Tensor,
) -> None:
    token = _compiled.site_token(
        contract.name,
        arguments,
        (input.requires_grad, target.requires_grad),
        torch.is_grad_enabled(),
    )
    if token >= 0:
        torch.ops.kl_guard.record(token, input.detach(), target.detach(), loss.detach())


def family_traced(contract: LossContract, function: Callable[..., Any]) -> Callable[..., Any]:
    """What dynamo traces for a call of the patched function of ``contract``:
    torch's own ``function``, then the record of its tensors and settings."""

    def traced_loss(*args: Any, **kwargs: Any) -> Any:
        loss = function(*args, **kwargs)
        bound = _family_check.bind(contract, args, kwargs, None)
        input, target = bound.get("input"), bound.get("target")
        if (
            isinstance(input, torch.Tensor)
            and isinstance(target, torch.Tensor)
            and isinstance(loss, torch.Tensor)
        ):
            arguments = (
                ("reduction", bound.get("reduction")),
                ("size_average", bound.get("size_average")),
                ("reduce", bound.get("reduce")),
                # a weight is no constant of the graph: whether one is given is
                ("weight", None if bound.get("weight") is None else "given"),
            )
            _record_call(contract, arguments, input, target, loss)
        return loss

    traced_loss.__qualname__ = f"traced_{contract.name}"
    return traced_loss


#: Each family loss's traced function, made when dynamo first meets its wrapper.
_FAMILY_TRACED: dict[str, Callable[..., Any]] = {}

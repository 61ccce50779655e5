"""The recorder: a kl_div call in a compiled graph, checked after the graph computes its loss.

dynamo traces :func:`traced` in place of the patched ``F.kl_div``
(``_compat_compile.trace_instead``): torch's kl_div as one node, then the operator
``kl_guard::record``, which no pass removes, reorders before the loss or fuses.
It takes a constant token naming the kl_div line (``_compiled.site_token``,
while dynamo traces) and the call's tensors, which the graph has computed
anyway. At run time it is eager Python on the real tensors: the site's
schedule decides, and a due call is checked and reported as an eager one is
(``_percall.traced_call_ran``); raise mode's ``KLGuardError`` leaves the
compiled call itself. Nothing of dynamo's is imported until a program compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kl_guard import _arguments, _compat_compile, _compiled, _locks, _patch, _percall, _reporting

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
    library.define("record(int token, Tensor input, Tensor target, Tensor loss) -> ()")  # type: ignore[no-untyped-call]
    library.impl("record", _record, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    torch.library.register_fake("kl_guard::record", _no_record, lib=library)
    _compat_compile.mark_side_effect(torch.ops.kl_guard.record.default)
    _libraries.append(library)  # the operator lives as long as its library object
    return True


def _record(token: int, input: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
    view = _percall.ACTIVE.view
    if view is not None:  # kl_guard is off, or was uninstalled since the compilation
        _percall.traced_call_ran(token, input, target, loss, view)


def _no_record(token: int, input: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
    return None


def _prepared() -> Callable[..., Any]:
    """:func:`traced`, once what it calls is registered with dynamo (which asks
    for it when it traces, and when it checks a compiled graph's guards)."""
    if _prepared_for_dynamo:
        return traced
    with _lock:
        if not _prepared_for_dynamo:
            torch.compiler.allow_in_graph(_percall.torch_kl_div)  # type: ignore[no-untyped-call]
            torch.compiler.assume_constant_result(_compiled.site_token)  # type: ignore[no-untyped-call]
            _prepared_for_dynamo.append(True)
    return traced


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
    token = _compiled.site_token(
        bound["reduction"],
        bound["log_target"],
        bound["size_average"],
        bound["reduce"],
        (input.requires_grad, target.requires_grad),
        torch.is_grad_enabled(),
    )
    if token >= 0:
        torch.ops.kl_guard.record(token, input.detach(), target.detach(), loss.detach())
    return loss

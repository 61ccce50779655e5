"""torch.compile and torch.export: what kl_guard knows of a call while it is traced.

Where dynamo traces the call, the graph checks it at run time (``_recorder``):
here is the site each such call gets while dynamo traces it, a constant token
naming its kl_div line and arguments. Where only a later pass (export,
AOTAutograd on its own) runs the call, as Python on fake tensors, it is
diagnosed from its arguments (a loss of the family from its shapes), once per
compilation however many passes run it.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Callable
from typing import Any

import torch

from kl_guard import _arguments, _check, _compat_compile, _family_check, _locks, _reporting, _sites
from kl_guard._config import Config, Mode
from kl_guard._contract import CONTRACTS, KL_DIV, LossContract
from kl_guard._diagnosis import argument_findings
from kl_guard._family_rules import FamilyCall, shape_findings
from kl_guard._findings import Finding
from kl_guard._messages import Diagnosis
from kl_guard._signature import Api, Call
from kl_guard._sites import CallSite

#: What can be known of a call while it is traced, from its arguments alone.
TRACE_TIME_CODES = frozenset({"KLG001", "KLG005"})


class _TraceReports:
    """What this compilation has already reported, so a finding counts once
    per compilation however many passes (AOTAutograd's metadata pass, its
    graph capture, a retrace) run the call.

    Compilations are told apart by their context object, not their id:
    ``torch._dynamo.reset()`` starts the ids again. Only the current
    compilation's keys are kept, and only a weak reference to it.
    """

    def __init__(self) -> None:
        self.lock = _locks.Lock()
        self.context: Callable[[], object] = lambda: None
        self.seen: set[tuple[str, str, int]] = set()

    def first(self, diagnoses: list[Diagnosis], site: CallSite | None) -> list[Diagnosis]:
        context = _compat_compile.compile_context()
        if context is None or site is None:
            return diagnoses
        with self.lock:
            if self.context() is not context:
                self.context, self.seen = weakref.ref(context), set()
            fresh = []
            for diagnosis in diagnoses:
                key = (diagnosis.code, site.filename, site.lineno)
                if key not in self.seen:
                    self.seen.add(key)
                    fresh.append(diagnosis)
            return fresh


_trace_reports = _TraceReports()


def trace_diagnoses(
    contract: LossContract, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any, op: bool
) -> list[Diagnosis]:
    """What a call run by a tracing pass says at trace time, from its arguments
    (kl_div) or its shapes (the family: KLG013); its tensors are fake, no value is read."""
    if contract is KL_DIV:
        call = _arguments.call_of(args, kwargs, instance, op)[0]
        return [d for d in (argument_findings(call) if call else []) if d.code in TRACE_TIME_CODES]
    bound = _family_check.bind(contract, args, kwargs, instance)
    api: Api = "function" if instance is None else "module"
    family_call = _family_check.describe(contract, bound, api, shapes_only=True)
    return shape_findings(family_call) if family_call else []


def trace_findings(diagnoses: list[Diagnosis], site: CallSite | None) -> list[Finding]:
    """The findings of a traced call not yet reported in this compilation."""
    return _reporting.attribute(_trace_reports.first(diagnoses, site), site)


def trace_config(config: Config) -> Config:
    """How a finding is reported while tracing: raising inside the compiler
    would surface as the compiler's error, not the user's, so raise mode warns."""
    if config.mode is Mode.RAISE:
        return dataclasses.replace(config, mode=Mode.WARN)
    return config


@dataclasses.dataclass(frozen=True)
class TracedCall:
    """A loss call in a compiled graph, as dynamo saw it: which loss, where, and
    its arguments other than the tensors (a weight as whether one is given). The
    tensors' ``requires_grad`` and the grad mode are the program's: the graph runs
    its forward without grad."""

    site: _sites.CallSite | None
    api: Api
    arguments: tuple[tuple[str, object], ...]
    requires_grad: tuple[bool, bool]  # input's, target's
    grad_enabled: bool
    loss: str = KL_DIV.name


class _TracedCalls:
    """Every call dynamo traced, by token: a recompiled graph gets the same tokens."""

    def __init__(self) -> None:
        self.lock = _locks.Lock()
        self.sites: list[TracedCall] = []
        self.tokens: dict[TracedCall, int] = {}

    def token(self, traced: TracedCall) -> int:
        with self.lock:
            token = self.tokens.get(traced)
            if token is None:
                token = self.tokens[traced] = len(self.sites)
                self.sites.append(traced)
            return token


TRACED = _TracedCalls()

# the losses' modules' forward, whose F.kl_div (F.cross_entropy...) call is the module's
_LOSS_MODULE_FILE = os.path.join("torch", "nn", "modules", "loss.py")


def site_token(
    loss: str,
    arguments: tuple[tuple[str, object], ...],
    requires_grad: tuple[bool, bool],
    grad_enabled: bool,
) -> int:
    """The token of the call dynamo traces now; -1: not checked in the graph.

    Real Python while dynamo traces (``torch.compiler.assume_constant_result``):
    the token is a constant of the graph. Not under torch.export, whose graph
    is a program of its own: there the call is diagnosed by its arguments.
    """
    if _compat_compile.is_exporting():
        return -1
    located = _reporting.safely(_located)
    if located is None:
        return -1
    return TRACED.token(TracedCall(*located, arguments, requires_grad, grad_enabled, loss))


def _located() -> tuple[_sites.CallSite | None, Api]:
    """The user's line that calls the loss where dynamo traces, and whether it
    calls it through its module (``nn.KLDivLoss``...); else the compiled function's caller."""
    stack = _compat_compile.traced_stack()
    for i in range(len(stack) - 1, -1, -1):
        filename, lineno, _ = stack[i]
        if _sites.file_kind(filename) in (_sites.USER, _sites.SYNTHETIC):
            inner = stack[i + 1] if i + 1 < len(stack) else ("", 0, "")
            module = inner[2] == "forward" and inner[0].endswith(_LOSS_MODULE_FILE)
            return _sites.site_at(filename, lineno), "module" if module else "function"
    return _sites.site_of(_sites.user_frame(1)), "function"


def traced_call(
    traced: TracedCall, input: torch.Tensor, target: torch.Tensor
) -> Call | FamilyCall | None:
    """The call of a traced call, from the tensors the graph computed."""
    if traced.loss != KL_DIV.name:
        contract = next(c for c in CONTRACTS if c.name == traced.loss)
        bound = {"input": input, "target": target, **dict(traced.arguments)}
        return _family_check.describe(contract, bound, traced.api)
    call = _check.describe(input, target, api=traced.api, **dict(traced.arguments))
    if call is None or (
        (call.input.requires_grad, call.target.requires_grad) == traced.requires_grad
        and call.grad_enabled == traced.grad_enabled
    ):
        return call
    return dataclasses.replace(
        call,
        input=dataclasses.replace(call.input, requires_grad=traced.requires_grad[0]),
        target=dataclasses.replace(call.target, requires_grad=traced.requires_grad[1]),
        grad_enabled=traced.grad_enabled,
    )

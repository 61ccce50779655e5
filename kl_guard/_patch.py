"""The patch itself: wrapper objects on the KL entry points, applied and removed.

Also torch's own warning for ``reduction='mean'``, which KLG001 replaces
while the patch is on. What a wrapper does per call is in ``_percall``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import logging
import operator
import re
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import wrapt

from kl_guard import _compat, _compat_compile, _locks
from kl_guard._contract import KL_DIV, LossContract

#: ``F.kl_div``, and the op it calls (``torch.kl_div``), by (module, attribute path).
FUNCTIONAL = ("torch.nn.functional", KL_DIV.name)
OP = ("torch", KL_DIV.name)


def targets(contract: LossContract) -> tuple[tuple[str, str, str], ...]:
    """The entry points of a loss: (module, attribute path, role). The "call"
    targets are checked; "built" sees each ``nn.KLDivLoss`` constructed.

    The family's modules are not patched: their ``forward`` calls the function
    with every setting as an argument, and the function's wrapper finds the
    user's line above torch's frames. A patched ``forward`` would cost a module
    call a bound wrapper per look-up and a second pass through a wrapper (about
    19,500 instructions, where the function's costs 5,000; docs/performance.md).
    kl_div's module is: its construction is judged (KLG001's site, KLG009).
    """
    out = [("torch.nn.functional", contract.name, "call")]
    if contract is KL_DIV:
        out += [
            ("torch", KL_DIV.name, "call"),
            ("torch.nn.modules.loss", f"{KL_DIV.module}.forward", "call"),
            ("torch.nn.modules.loss", f"{KL_DIV.module}.__init__", "built"),
        ]
    return tuple(out)


#: kl_div's entry points, patched whenever kl_guard is on.
TARGETS = targets(KL_DIV)

#: Packages whose module globals keep the original function: torch's own code
#: calls it through the module attribute (or must not be checked), kl_guard's
#: holds it on purpose.
UNREBOUND = frozenset({"torch", "kl_guard"})


_logger = logging.getLogger("kl_guard")
_UNCHECKED_SAID: set[str] = set()


def _unchecked_op(why: str) -> None:
    """Say once per process that direct ``torch.kl_div`` calls go unchecked, and why:
    kl_guard never leaves an entry point unwatched without a word."""
    if why not in _UNCHECKED_SAID:
        _UNCHECKED_SAID.add(why)
        _logger.warning(
            "kl_guard: direct torch.kl_div calls, and calls through an F.kl_div taken before "
            "install (a local, functools.partial), are not checked: %s.",
            why,
        )


class _BoundWrapper(wrapt.BoundFunctionWrapper[..., Any]):
    """``KLDivLoss.forward`` bound to its module: pickles and copies as a bound method."""

    def __reduce_ex__(self, protocol: object) -> tuple[Callable[..., Any], tuple[Any, str]]:
        return getattr, (_compat.bound_owner(self), self.__name__)

    def __copy__(self) -> Any:
        return getattr(_compat.bound_owner(self), self.__name__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return getattr(copy.deepcopy(_compat.bound_owner(self), memo), self.__name__)


class Wrapper(wrapt.FunctionWrapper[..., Any]):
    """kl_guard's patch: pickles and copies as the function it wraps.

    wrapt's proxies refuse both, which would break ``torch.save``,
    ``copy.deepcopy`` or a DataLoader worker of anything holding
    ``F.kl_div`` (``functools.partial(F.kl_div, reduction="batchmean")``).
    """

    __bound_function_wrapper__ = _BoundWrapper

    def __reduce_ex__(self, protocol: object) -> str:
        # By qualified name, as pickle saves a function: loading gives what
        # the name holds then, the original once kl_guard is uninstalled.
        return str(self.__qualname__)

    def __copy__(self) -> Wrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Wrapper:
        return self


class FunctionalWrapper(Wrapper):
    """The wrapper of a function of ``torch.nn.functional`` (``F.kl_div``): what
    torch.compile traces in its place is set by ``_recorder``.

    It calls a copy of torch's function (``_compat.calling_op``); its
    ``__wrapped__`` says torch's own, as for any other wrapper.
    """

    @property
    def __wrapped__(self) -> Any:  # type: ignore[override]
        return self._self_torch_function


class OpWrapper(Wrapper):
    """The wrapper of ``torch.kl_div``: pickles by the name the op has on ``torch``
    (its qualified name is that of a method of a private class)."""

    def __reduce_ex__(self, protocol: object) -> str:
        return str(self.__name__)


@dataclasses.dataclass
class _Applied:
    path: tuple[str, str]
    owner: Any
    attribute: str
    original: Any
    callee: Any  # what the wrapper calls: the original, or F.kl_div's copy
    wrapper: Any
    contract: LossContract
    # wrapt tests ``enabled`` on every call before calling the wrapper: a
    # list's truth is a C-level test, and ``switch.clear()`` turns ours off.
    switch: list[bool] = dataclasses.field(default_factory=lambda: [True])


def wrap(
    owner: Any,
    original: Callable[..., Any],
    wrapper: Callable[..., Any],
    enabled: object,
    callee: Callable[..., Any] | None = None,
) -> Any:
    """A :class:`Wrapper` of ``owner``'s ``original`` that calls ``callee`` (by
    default ``original``), as cheap to call as wrapt allows."""
    callee = callee or original
    if inspect.ismodule(owner) and inspect.isfunction(original):  # never bound as a method
        wrapped = _compat.function_wrapper(FunctionalWrapper, callee, wrapper, enabled)
        wrapped._self_torch_function = original
        return wrapped
    if inspect.ismodule(owner) and inspect.isbuiltin(original):
        return OpWrapper(callee, wrapper, enabled=enabled)  # type: ignore[arg-type]
    return Wrapper(callee, wrapper, enabled=enabled)  # type: ignore[arg-type]


class Patch:
    """The wrappers on the entry points of the losses guarded, on while any kl_guard
    layer is active: kl_div's always, each other loss's while a layer selects one of
    its codes."""

    def __init__(self) -> None:
        self.lock = _locks.Lock(reentrant=True)
        self._applied: list[_Applied] = []
        #: the loss of each function a wrapper calls (a module's forward by its function)
        self.contracts: dict[object, LossContract] = {}
        #: the op the patch on ``torch.kl_div`` calls (None when it is not patched):
        #: ``wrapped`` is this object exactly when the wrapper runs for a direct call
        self.op: object = None
        #: the filter of torch's 'mean' warning, made at apply for the wrappers' module
        self._mean_warning: dict[str, Any] = _mean_warning("")

    @property
    def on(self) -> bool:
        return bool(self._applied)

    @property
    def losses(self) -> tuple[LossContract, ...]:
        """The losses patched now, in the order they were."""
        return tuple(dict.fromkeys(a.contract for a in self._applied))

    def contract_of(self, wrapped: object) -> LossContract:
        """The loss a wrapper's ``wrapped`` (a function, the op, a bound forward) computes."""
        return self.contracts.get(getattr(wrapped, "__func__", wrapped), KL_DIV)

    def apply(
        self,
        wrappers: Mapping[str, Callable[..., Any]],
        losses: tuple[LossContract, ...] = (KL_DIV,),
    ) -> None:
        """Wrap the targets of each of ``losses`` not wrapped yet with the wrapper of
        each role (lock held).

        A loss once patched stays patched until :meth:`remove`, whatever the
        layers select later: removing a wrapper switches it off, and a reference
        taken while it was on (``self.criterion = F.cross_entropy``, a
        ``functools.partial``) would call torch unchecked and uncounted ever after.

        ``torch.kl_div`` is patched only where ``F.kl_div``'s own call of it
        can pass the patch by (``_compat.calling_op``): else every
        ``F.kl_div`` call would pay for a second wrapper.
        """
        patched = self.losses
        for contract in losses:
            if contract not in patched:
                self._apply(wrappers, contract)
        # torch's 'mean' warning names the frame that called F.kl_div: for a
        # patched call, one of the wrapper's own module
        self._mean_warning = _mean_warning(wrappers["call"].__module__)
        self.filter_mean_warning()

    def _apply(self, wrappers: Mapping[str, Callable[..., Any]], contract: LossContract) -> None:
        op = wrapt.resolve_path(*OP)[2]
        functional = (
            _compat.calling_op(wrapt.resolve_path(*FUNCTIONAL)[2], op)
            if contract is KL_DIV
            else None
        )
        for module, name, role in targets(contract):
            if (module, name) == OP and functional is None:
                _unchecked_op("F.kl_div is not torch's plain function here (another tool wraps it)")
                continue
            owner, attribute, original = wrapt.resolve_path(module, name)
            callee = functional if (module, name) == FUNCTIONAL and functional else original
            applied = _Applied((module, name), owner, attribute, original, callee, None, contract)
            applied.wrapper = wrap(owner, original, wrappers[role], applied.switch, callee)
            applied.wrapper._self_contract = contract
            if (module, name) == OP and not _compat.script_as_op(applied.wrapper, original):
                _unchecked_op("TorchScript's table of builtins cannot be reached on this torch")
                continue
            if callee is not original:  # the name torch passes to handle_torch_function
                callee.__globals__[attribute] = applied.wrapper
            wrapt.apply_patch(owner, attribute, applied.wrapper)
            self._applied.append(applied)
            self.contracts[callee] = contract
            if (module, name) == OP:
                self.op = original
            if inspect.ismodule(owner):
                rebind(original, applied.wrapper)

    def callee(self, path: tuple[str, str]) -> Callable[..., Any] | None:
        """What the wrapper at ``path`` (module, attribute path) calls (None when off)."""
        return next((a.callee for a in self._applied if a.path == path), None)

    def remove(self) -> None:
        """Put the originals back where our wrapper is still the attribute (lock held).

        Where another layer wrapped ours, the chain stays intact and ours is
        switched off, so removing kl_guard never removes somebody else's patch.
        """
        for applied in reversed(self._applied):
            if vars(applied.owner).get(applied.attribute) is applied.wrapper:
                setattr(applied.owner, applied.attribute, applied.original)
            if inspect.ismodule(applied.owner):
                rebind(applied.wrapper, applied.original)
            if applied.path == OP:
                _compat.unscript(applied.wrapper)
            applied.switch.clear()
        self._applied.clear()
        self.contracts.clear()
        self.op = None
        _unfilter_mean_warning(self._mean_warning)
        _compat_compile.forget_dynamo_rules()

    def filter_mean_warning(self) -> None:
        """Keep the filter of torch's 'mean' warning first while the patch is on.

        Called at every checked call: a user's ``simplefilter`` added later
        would otherwise take precedence over it.
        """
        if _mean_warning_filtered(self._mean_warning):
            return
        with self.lock:
            # A call that raced uninstall() must not put the filter back after it.
            if self._applied and not _mean_warning_filtered(self._mean_warning):
                warnings.filterwarnings(**self._mean_warning)


def call_unfiltered(wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """torch's call made from outside the wrapper's module, so torch's own 'mean'
    warning shows as it does without kl_guard: for the calls kl_guard cannot judge
    and reports nothing of (a 0-d input), whose warning nothing would replace."""
    return wrapped(*args, **kwargs)


def rebind(old: object, new: object) -> int:
    """Point every module global that holds ``old`` at ``new``; how many were.

    ``from torch.nn.functional import kl_div`` (or ``loss = F.kl_div``) in a
    module imported before the patch keeps the original: at apply it is
    pointed at the wrapper, and at removal whatever holds the wrapper (those
    imported while the patch was on too) gets the original back. Only a
    global that holds exactly ``old`` changes, so another tool's layer stays.
    Each module's values are searched by identity in C (``operator.is_``
    mapped over them; ``in`` would call each value's ``__eq__``): one pass
    over ``sys.modules`` (see docs/performance.md, "Install"). Containers,
    closures and default arguments are not searched.
    """
    rebound = 0
    same = itertools.repeat(old)
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in UNREBOUND or not isinstance(module, types.ModuleType):
            continue
        namespace = module.__dict__
        try:
            if True not in map(operator.is_, namespace.values(), same):
                continue
            for key, value in list(namespace.items()):
                if value is old:
                    namespace[key] = new
                    rebound += 1
        except RuntimeError:  # the module changed size while searched: a thread importing
            continue
    return rebound


# torch's warning for reduction='mean'. torch 2.10 and newer warn with
# stacklevel=2, naming the frame that called F.kl_div: for a patched call, one of
# the wrapper's module, so the filter is inert for any call that does not pass
# through kl_guard's wrappers. Older torch names its own module, which the filter
# then matches too. While the patch is on, every call of F.kl_div passes through
# the wrappers anyway, except one through a reference taken before the patch
# (``from torch.nn.functional import kl_div``): on that torch, such a call's
# warning is hidden while kl_guard is on, and the call is not checked.
def _mean_warning(caller_module: str) -> dict[str, Any]:
    """The filter of torch's 'mean' warning for calls made from ``caller_module``."""
    modules = (
        (caller_module,)
        if _compat.TORCH_WARNS_WITH_STACKLEVEL
        else (
            caller_module,
            "torch.nn.functional",
        )
    )
    return {
        "action": "ignore",
        "message": r"reduction: 'mean' divides the total loss",
        "category": UserWarning,
        "module": rf"(?:{'|'.join(map(re.escape, modules))})\Z",
    }


def _is_mean_filter(entry: tuple[Any, ...], mean_warning: dict[str, Any]) -> bool:
    return entry[0] == "ignore" and getattr(entry[3], "pattern", None) == str(
        mean_warning["module"]
    )


def _mean_warning_filtered(mean_warning: dict[str, Any]) -> bool:
    return bool(warnings.filters) and _is_mean_filter(warnings.filters[0], mean_warning)


def _unfilter_mean_warning(mean_warning: dict[str, Any]) -> None:
    kept = [f for f in warnings.filters if not _is_mean_filter(f, mean_warning)]
    if len(kept) != len(warnings.filters):
        warnings.filters[:] = kept  # type: ignore[index]
        _compat.filters_changed()


PATCH = Patch()

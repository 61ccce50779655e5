"""Patching: the wrapt wrappers around the KL entry points, install() and guard().

The patch is applied while at least one layer is active (``install()`` or a
running ``guard()``) and removed when the last one ends. The wrappers stay
thin: pick the call site, ask the policy, call torch, then hand the tensors
to ``_check`` and the findings to ``_reporting``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import copy
import dataclasses
import functools
import inspect
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar, cast

import torch
import wrapt

from kl_guard import _check, _reporting
from kl_guard._config import Config, Mode, configure, default_config
from kl_guard._diagnosis import Call, Diagnosis, argument_findings
from kl_guard._exceptions import KLGuardError, KLGuardWarning
from kl_guard._findings import Finding
from kl_guard._policy import Site, SitePolicy

F = TypeVar("F", bound=Callable[..., Any])

_getframe = sys._getframe
# How far above the wrapper the fast path looks for the latest call site.
_LATEST_DEPTH = 8

_is_compiling: Callable[[], bool] = (
    getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling
)


class _CompilingFlag:
    """``_is_compiling()`` as an attribute, for a torch without the flag itself."""

    @property
    def _is_compiling_flag(self) -> bool:
        return _is_compiling()


# torch.compiler.is_compiling() is two Python calls (torch.jit.is_scripting()
# first, never true here), dearer than the rest of the fast path's tests
# together: the fast path reads the flag it returns.
_compiler: Any = (
    torch.compiler if hasattr(torch.compiler, "_is_compiling_flag") else _CompilingFlag()
)
_is_dynamo_compiling: Callable[[], bool] = (
    getattr(torch.compiler, "is_dynamo_compiling", None) or torch._dynamo.is_compiling
)
# What can be known of a call while it is traced, from its arguments alone.
_TRACE_TIME_CODES = frozenset({"KLG001", "KLG005"})


def _compile_context() -> object:
    """The compilation being traced, or None outside one (or on a torch without it)."""
    context = getattr(torch._guards, "CompileContext", None)
    try_get = getattr(context, "try_get", None)
    return try_get() if try_get is not None else None


class _TraceReports:
    """What this compilation has already reported, so a finding counts once
    per compilation however many passes (AOTAutograd's metadata pass, its
    graph capture, a retrace) run the call.

    Compilations are told apart by their context object, not their id:
    ``torch._dynamo.reset()`` starts the ids again. Only the current
    compilation's keys are kept, and only a weak reference to it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.context: Callable[[], object] = lambda: None
        self.seen: set[tuple[str, str, int]] = set()

    def first(
        self, diagnoses: list[Diagnosis], site: _reporting.CallSite | None
    ) -> list[Diagnosis]:
        context = _compile_context()
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


_TRACE_REPORTS = _TraceReports()

# Torch's own warning for reduction='mean', as raised from inside our
# wrappers: while kl_guard is active its KLG001 replaces it. The module
# pattern matches only warnings attributed to this file, so the filter is
# inert for calls that do not pass through kl_guard.
_MEAN_WARNING = {
    "action": "ignore",
    "message": r"reduction: 'mean' divides the total loss",
    "category": UserWarning,
    "module": rf"{__name__.replace('.', chr(92) + '.')}\Z",
}


def _is_mean_filter(entry: tuple[Any, ...]) -> bool:
    return entry[0] == "ignore" and getattr(entry[3], "pattern", None) == _MEAN_WARNING["module"]


def _mean_warning_filtered() -> bool:
    return bool(warnings.filters) and _is_mean_filter(warnings.filters[0])


def _filter_mean_warning() -> None:
    if _mean_warning_filtered():
        return
    with _STATE.lock:
        # A call that read its view just before uninstall() must not put the
        # filter back after uninstall() removed it: it would outlive kl_guard.
        if _STATE.patches and not _mean_warning_filtered():
            warnings.filterwarnings(**_MEAN_WARNING)  # type: ignore[arg-type]


def _unfilter_mean_warning() -> None:
    kept = [f for f in warnings.filters if not _is_mean_filter(f)]
    if len(kept) != len(warnings.filters):
        warnings.filters[:] = kept  # type: ignore[index]
        warnings._filters_mutated()  # type: ignore[attr-defined]


class _Layer:
    """One active ``install()`` or ``guard()``: its settings, findings and call counts."""

    __slots__ = ("config", "record", "policy")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.record = _reporting.Record()
        self.policy = SitePolicy()


@dataclasses.dataclass(frozen=True)
class _View:
    """What a wrapper reads, swapped in one assignment so threads never see it torn."""

    config: Config
    layer: _Layer
    records: tuple[_reporting.Record, ...]
    policy: SitePolicy


@dataclasses.dataclass
class _Patch:
    owner: Any
    attribute: str
    original: Any
    wrapper: Any
    # wrapt tests ``enabled`` on every call, before it calls the wrapper: a
    # list's truth is a C-level test; ``switch.clear()`` turns ours off.
    switch: list[bool] = dataclasses.field(default_factory=lambda: [True])


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.base: _Layer | None = None
        self.guards: list[_Layer] = []
        self.patches: list[_Patch] = []
        self.view: _View | None = None

    def innermost(self) -> _Layer | None:
        return self.guards[-1] if self.guards else self.base

    def refresh(self) -> None:
        """Bring the patch and the wrappers' view in line with the layers (lock held)."""
        layers = [*reversed(self.guards), *([self.base] if self.base else [])]
        if not layers:
            self.view = None
            _unpatch(self)
            return
        if not self.patches:
            _patch(self)
        top = layers[0]
        self.view = (
            None
            if top.config.mode is Mode.OFF
            else _View(top.config, top, tuple(layer.record for layer in layers), top.policy)
        )


_STATE = _State()
_LOCAL = threading.local()

# How the fast path lets a repeat call of the latest site through
# (``SitePolicy.latest[3]``).
_GATE = 1  # F.kl_div: its gate answers wrapt no, and wrapt calls torch from C
_FUNCTION = 2  # F.kl_div where torch warns (see _warns_of_mean): _wrapper calls torch
_MODULE = 3  # KLDivLoss: _wrapper calls torch with the thread marked busy

# The busy mark (_LOCAL.busy) while torch runs a module's call (see _call_busy).
_BUSY = 1
_QUIET = 2  # and torch will not warn of the F.kl_div inside it

_FUNCTIONAL_PARAMS = ("input", "target", "size_average", "reduce", "reduction", "log_target")
_FUNCTIONAL_DEFAULTS: dict[str, Any] = {
    "size_average": None,
    "reduce": None,
    "reduction": "mean",
    "log_target": False,
}


def _function_gate(switch: list[bool]) -> Callable[[], bool]:
    """wrapt's ``enabled`` for ``F.kl_div``: False sends the call straight to
    torch, before wrapt calls :func:`_wrapper`.

    This is the fast path of a loop: the loss called again from the line of
    the user's code that called it last, in a stretch the policy lets
    through. The frame that many levels up is compared with that line, with
    no frame walk, key or look-up, and torch is called from C, with no
    Python frame of kl_guard's around it.
    """

    def enabled() -> bool:
        try:
            # dynamo's symbolic pass must not reach _getframe: a graph break
            if not switch or _is_dynamo_compiling():
                return False
            view = _STATE.view
            if view is None:
                return False
            code, lasti, depth, route, site = view.policy.latest
            # Not while a later pass of torch.compile or torch.export traces:
            # those run the user's own lines again, on fake tensors, and are
            # no eager call.
            if route == _GATE and site.skip > 0 and not _compiler._is_compiling_flag:
                frame = _getframe(depth)
                if frame.f_code is code and frame.f_lasti == lasti:
                    site.skip -= 1  # a lost decrement between threads only delays a check
                    return False
            elif route == _MODULE and getattr(_LOCAL, "busy", False) == _QUIET:
                return False  # the F.kl_div inside a module's forward: counted there
        except ValueError:  # _getframe: a shallower stack than the latest site's
            pass
        except Exception as exc:  # said once; the wrapper takes the call
            _reporting.internal_error(exc)
        return True

    return enabled


def _module_gate(switch: list[bool]) -> list[bool]:
    """wrapt's ``enabled`` for ``KLDivLoss.forward``: the switch itself (its
    fast path marks the thread busy around torch's call: see :func:`_wrapper`)."""
    return switch


def _wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The wrapper of both entry points: ``instance`` is the module for
    ``KLDivLoss.forward`` and None for ``F.kl_div``.

    ``F.kl_div`` comes here when its gate (:func:`_function_gate`) did not
    let it through. The fast path of the calls the gate must not let through
    is here: it is the gate's, with torch called from this frame (which the
    filter of torch's 'mean' warning matches), and the thread marked busy
    around a module's call.
    """
    __tracebackhide__ = True  # see _reporting.emit
    if _is_dynamo_compiling():  # its symbolic pass must not reach _getframe: a graph break
        return wrapped(*args, **kwargs)
    view = _STATE.view
    if view is None:
        return wrapped(*args, **kwargs)
    code, lasti, depth, route, site = view.policy.latest
    if (
        route == (_FUNCTION if instance is None else _MODULE)
        and site.skip > 0
        and not _compiler._is_compiling_flag
    ):
        try:
            frame = _getframe(depth)
        except ValueError:  # a shallower stack than the latest site's
            frame = None
        # ``latest`` only ever names a frame of the user's code. Inside a
        # module's call that can only be a mode's or a __torch_function__'s:
        # counted here, where the scheduled path takes it for the module's
        # own (busy). Rare: not worth a busy test on every call.
        if frame is not None and frame.f_code is code and frame.f_lasti == lasti:
            site.skip -= 1
            return (
                wrapped(*args, **kwargs)
                if instance is None
                else _call_busy(wrapped, args, kwargs, instance)
            )
    return _scheduled_call(wrapped, instance, args, kwargs, view)


def _scheduled_call(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    view: _View,
) -> Any:
    """A call the fast path did not let through: find its site, ask the policy.

    The later passes of torch.compile (AOTAutograd, inductor), which run the
    call as Python on fake tensors, always come here: their frames are
    torch's, never the ``latest`` of the fast path.
    """
    __tracebackhide__ = True  # see _reporting.emit
    if getattr(_LOCAL, "busy", False):  # inside KLDivLoss.forward's call: counted there
        if instance is None:
            return wrapped(*args, **kwargs)
        return _call_busy(wrapped, args, kwargs, instance)  # its F.kl_div may warn
    if _compiler._is_compiling_flag:
        return _traced_call(wrapped, args, kwargs, instance, view)
    try:
        code, lasti, depth, route, site = view.policy.latest
        try:
            frame: FrameType | None = _getframe(depth + 1)
        except ValueError:  # a shallower stack than the latest site's
            frame = None
        # The latest site, at a call to check: no frame walk, key or look-up
        if (
            frame is None
            or frame.f_code is not code
            or frame.f_lasti != lasti
            or (instance is None) is (route == _MODULE)
        ):
            frame, site = _find_site(view, instance, args, kwargs)
        elif route == _GATE and _warns_of_mean(args, kwargs):  # the line's reduction changed
            site.torch_warns = True
            view.policy.latest = (code, lasti, depth, _FUNCTION, site)
        checked = site.due(view.config)
    except Exception as exc:
        _reporting.internal_error(exc)
        return wrapped(*args, **kwargs)
    if checked:
        return _checked_call(wrapped, args, kwargs, view, instance, frame)
    if instance is None:
        return wrapped(*args, **kwargs)
    return _call_busy(wrapped, args, kwargs, instance)


def _find_site(
    view: _View, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[FrameType | None, Site]:
    """The user's frame that made this call, and its site; kept as the fast path's latest."""
    frame = _reporting.user_frame(3)
    # id(), not the code object: hashing a code object hashes its constants;
    # f_lasti, not f_lineno: the line number decodes the code's line table,
    # which alone cost more than the rest of this path (callgrind).
    key = (id(frame.f_code), frame.f_lasti) if frame is not None else None
    site = view.policy.site(key, view.config)
    if frame is not None:
        # how far above _wrapper the user's frame is: 1 for F.kl_div, 3 for
        # a module (through Module.__call__'s frames), more under hooks
        caller: FrameType | None = _getframe(3)
        depth = 1
        while caller is not None and caller is not frame and depth < _LATEST_DEPTH:
            caller, depth = caller.f_back, depth + 1
        if caller is frame:
            route = _MODULE
            if instance is None:
                if not site.torch_warns and _warns_of_mean(args, kwargs):
                    site.torch_warns = True
                route = _FUNCTION if site.torch_warns else _GATE
            view.policy.latest = (frame.f_code, frame.f_lasti, depth, route, site)
    return frame, site


def _warns_of_mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether torch's ``F.kl_div`` warns of ``reduction='mean'`` for these arguments.

    Its warning names the frame that called it: the filter by which KLG001
    replaces it matches _wrapper's, so such a call must not be let through
    by the gate, from C, where it would name the user's line.
    """
    given = kwargs
    if len(args) > 2:  # the legacy arguments or reduction, by position
        given = {**dict(zip(_FUNCTIONAL_PARAMS[2:5], args[2:5], strict=False)), **kwargs}
    reduction = given.get("reduction", "mean")
    return (
        given.get("size_average") is None
        and given.get("reduce") is None
        and isinstance(reduction, str)
        and reduction == "mean"
    )


def _bind(args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any) -> dict[str, Any]:
    if instance is None:
        bound = dict(_FUNCTIONAL_DEFAULTS)
        bound.update(zip(_FUNCTIONAL_PARAMS, args, strict=False))
    else:
        bound = {
            "reduction": getattr(instance, "reduction", "mean"),
            "log_target": getattr(instance, "log_target", False),
        }
        bound.update(zip(_FUNCTIONAL_PARAMS[:2], args, strict=False))
    bound.update(kwargs)
    return bound


def _describe(
    args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any
) -> tuple[Call | None, dict[str, Any]]:
    bound = _bind(args, kwargs, instance)
    call = _check.describe(
        bound.get("input"),
        bound.get("target"),
        api="function" if instance is None else "module",
        size_average=bound.get("size_average"),
        reduce=bound.get("reduce"),
        reduction=bound.get("reduction", "mean"),
        log_target=bound.get("log_target", False),
    )
    return call, bound


def _call_busy(
    wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None
) -> Any:
    """Call torch with this thread marked busy: the F.kl_div inside a module's
    forward is then neither checked nor counted a second time.

    The mark is :data:`_QUIET` for a module whose reduction torch does not
    warn of: the gate then lets that F.kl_div through from C (a 'mean' one
    must pass through _wrapper: see :func:`_warns_of_mean`).
    """
    previous = getattr(_LOCAL, "busy", False)
    # (getattr on None would raise and catch an AttributeError on every F.kl_div)
    reduction = None if instance is None else getattr(instance, "reduction", None)
    quiet = type(reduction) is str and reduction != "mean" and previous in (False, _QUIET)
    _LOCAL.busy = _QUIET if quiet else _BUSY
    try:
        return wrapped(*args, **kwargs)
    finally:
        _LOCAL.busy = previous  # a module called inside another's call (a mode's) nests


def _checked_call(
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    view: _View,
    instance: Any,
    frame: FrameType | None,
) -> Any:
    __tracebackhide__ = True  # see _reporting.emit
    # Everything kl_guard does runs inside ``try``: an internal error skips
    # the check and is logged once, and the user's call goes on untouched.
    try:
        if _PENDING:
            _drain(block=False)
        _filter_mean_warning()
    except Exception as exc:
        _reporting.internal_error(exc)
        return _call_busy(wrapped, args, kwargs, instance)  # half prepared: leave it alone
    result = _call_busy(wrapped, args, kwargs, instance)
    try:
        findings, site = _findings_of(args, kwargs, instance, view, result, frame)
    except Exception as exc:
        _reporting.internal_error(exc)
        return result
    if findings:
        _emit(findings, view.config, view.records, site)
    return result


def _findings_of(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    instance: Any,
    view: _View,
    result: Any,
    frame: FrameType | None,
) -> tuple[list[Finding], _reporting.CallSite | None]:
    """The findings of a checked call, now, or none yet when its check is deferred."""
    call, bound = _describe(args, kwargs, instance)
    if call is None:
        return [], None
    if _defers(bound["input"], view.config):
        # the site, not the frame: the caller's frame holds its tensors
        site = _reporting.site_of(frame)
        measurement = _check.measure(
            call,
            bound["input"],
            bound["target"],
            result,
            sample_rows=view.config.sample_rows,
            dims=_check.all_dims(call),
        )
        _defer(measurement, view, site)
        return [], site
    diagnoses = _check.examine(
        call, bound["input"], bound["target"], result, sample_rows=view.config.sample_rows
    )
    if not diagnoses:
        return [], None  # a correct call: no site to look up (its line number is a decode)
    site = _reporting.site_of(frame)
    return _reporting.attribute(diagnoses, site), site


class _BoundWrapper(wrapt.BoundFunctionWrapper[..., Any]):
    """``KLDivLoss.forward`` bound to its module: pickles and copies as a bound method."""

    def _owner(self) -> Any:
        return self._self_owner if self._self_instance is None else self._self_instance

    def __reduce_ex__(self, protocol: object) -> tuple[Callable[..., Any], tuple[Any, str]]:
        return getattr, (self._owner(), self.__name__)

    def __copy__(self) -> Any:
        return getattr(self._owner(), self.__name__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return getattr(copy.deepcopy(self._owner(), memo), self.__name__)


class _Wrapper(wrapt.FunctionWrapper[..., Any]):
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

    def __copy__(self) -> _Wrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Wrapper:
        return self


def _traced_call(
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    instance: Any,
    view: _View,
) -> Any:
    """A call seen while torch.compile traces: leave the graph alone.

    Dynamo's own symbolic pass never gets here (``_wrapper`` returns first),
    so nothing here can add a graph break. The later tracing passes
    (AOTAutograd, inductor) run this as plain Python on fake tensors: the
    argument-level findings (KLG001, KLG005) are reported then, once per
    compilation, since the compiled code never calls back into kl_guard.
    """
    __tracebackhide__ = True  # see _reporting.emit
    if getattr(_LOCAL, "busy", False):
        return wrapped(*args, **kwargs)
    _filter_mean_warning()
    try:
        call, _ = _describe(args, kwargs, instance)
        diagnoses = [
            d for d in (argument_findings(call) if call else []) if d.code in _TRACE_TIME_CODES
        ]
        site = _reporting.site_of(_reporting.user_frame(3))
        findings = _reporting.attribute(_TRACE_REPORTS.first(diagnoses, site), site)
    except Exception as exc:
        _reporting.internal_error(exc)
        return _call_busy(wrapped, args, kwargs)
    if findings:
        # Raising inside the compiler would surface as the compiler's error,
        # not the user's: at trace time raise mode warns.
        config = view.config
        if config.mode is Mode.RAISE:
            config = dataclasses.replace(config, mode=Mode.WARN)
        _emit(findings, config, view.records, site)
    return _call_busy(wrapped, args, kwargs)


def _emit(
    findings: list[Finding],
    config: Config,
    records: tuple[_reporting.Record, ...],
    site: _reporting.CallSite | None,
) -> None:
    """``_reporting.emit``, letting through only what is meant for the user."""
    __tracebackhide__ = True  # see _reporting.emit
    try:
        _reporting.emit(findings, config, records, site)
    except (KLGuardError, KLGuardWarning):
        # Raise mode's error, or a warning the user's filters made an error
        # (``-W error``): both are meant for the user.
        raise
    except Exception as exc:
        _reporting.internal_error(exc)


# Deferred checks (CUDA, warn and log modes): the statistics are copied to
# the host without blocking, and read once the copy has landed, at a later
# checked call, at flush(), at the end of a guard or at exit.
_PENDING_LIMIT = 64
_DEFER_ON_CPU = False  # tests exercise the deferred path on CPU tensors


@dataclasses.dataclass
class _Pending:
    measurement: _check.Measurement
    host: torch.Tensor
    event: Any
    view: _View
    site: _reporting.CallSite | None


_PENDING: collections.deque[_Pending] = collections.deque()


def _defers(input: Any, config: Config) -> bool:
    if config.mode not in (Mode.WARN, Mode.LOG) or not isinstance(input, torch.Tensor):
        return False
    # is_cuda, not device.type: no device object built on every checked call
    return input.is_cuda or (_DEFER_ON_CPU and input.device.type == "cpu")


def _defer(measurement: _check.Measurement, view: _View, site: _reporting.CallSite | None) -> None:
    measurement.pack_loss()
    packed = measurement.packed
    if packed is None:
        host, event = torch.empty(0), None
    elif packed.device.type == "cuda":
        host = packed.to("cpu", non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(packed.device))
    else:
        host, event = packed, None
    measurement.packed = None
    _PENDING.append(_Pending(measurement, host, event, view, site))
    if len(_PENDING) > _PENDING_LIMIT:
        _drain(block=True, limit=len(_PENDING) - _PENDING_LIMIT)


def _drain(*, block: bool, limit: int | None = None) -> None:
    """Diagnose and report the deferred checks whose numbers have landed (all, if ``block``)."""
    done = 0
    while _PENDING and (limit is None or done < limit):
        pending = _PENDING[0]
        if not block and pending.event is not None and not pending.event.query():
            return
        try:
            _PENDING.remove(pending)
        except ValueError:  # another thread took it
            continue
        done += 1
        try:
            if pending.event is not None:
                pending.event.synchronize()
            values = pending.host.tolist() if pending.measurement.spec is not None else None
            stats, loss = _check.conclude(pending.measurement, values)
            diagnoses = _check.diagnose(pending.measurement.call, stats, loss)
            findings = _reporting.attribute(diagnoses, pending.site)
        except Exception as exc:
            _reporting.internal_error(exc)
            continue
        if findings:
            _emit(findings, pending.view.config, pending.view.records, pending.site)


def flush() -> None:
    """Report now the checks still waiting for their numbers (CUDA, warn and log modes)."""
    _drain(block=True)


# Each entry point, and how its ``enabled`` is made from its switch.
_TARGETS: tuple[tuple[str, str, Callable[[list[bool]], object]], ...] = (
    ("torch.nn.functional", "kl_div", _function_gate),
    ("torch.nn.modules.loss", "KLDivLoss.forward", _module_gate),
)


def _function_wrapper(
    owner: Any, original: Any, wrapper: Callable[..., Any], enabled: object
) -> Any:
    """``wrapt.FunctionWrapper(original, wrapper, enabled=enabled)``, made cheaper to call.

    For a plain function wrapt looks up ``original.__self__`` on every call,
    and the AttributeError it raises and clears costs more than the rest of
    the not-checked path (0.6 us of 1.2 us, measured with wrapt 2.5). The
    binding "builtin" skips that look-up; it only changes what happens when
    the wrapper is bound as a method, which no call of ``F.kl_div`` does
    (binding would pass the instance as ``input``). A method, such as
    ``KLDivLoss.forward``, must bind: it keeps wrapt's own binding.
    """
    if inspect.ismodule(owner) and inspect.isfunction(original):
        base: Any = wrapt.FunctionWrapper.__mro__[1]  # wrapt's _FunctionWrapperBase
        base_init: Callable[..., None] = base.__init__
        try:
            fast = _Wrapper.__new__(_Wrapper)
            base_init(fast, original, None, wrapper, enabled, "builtin")
            return fast
        except TypeError:  # another wrapt whose base takes other arguments
            pass
    return _Wrapper(original, wrapper, enabled=enabled)  # type: ignore[arg-type]


def _patch(state: _State) -> None:
    for module, name, gate in _TARGETS:
        owner, attribute, original = wrapt.resolve_path(module, name)
        patch = _Patch(owner, attribute, original, None)
        patch.wrapper = _function_wrapper(owner, original, _wrapper, gate(patch.switch))
        wrapt.apply_patch(owner, attribute, patch.wrapper)
        state.patches.append(patch)
    _filter_mean_warning()


def _unpatch(state: _State) -> None:
    for patch in reversed(state.patches):
        current = vars(patch.owner).get(patch.attribute)
        if current is patch.wrapper:
            setattr(patch.owner, patch.attribute, patch.original)
        # Another layer wrapped ours: leave the chain intact and switch ours
        # off, so removing kl_guard never removes somebody else's patch.
        patch.switch.clear()
    state.patches.clear()
    _unfilter_mean_warning()


def _schedule(config: Config) -> tuple[int | None, int, int]:
    return config.check_every, config.warmup, config.max_interval


def install(mode: Mode | str | None = None, **options: Any) -> None:
    """Patch the KL entry points for the rest of the program (or until :func:`uninstall`).

    A second call only updates the settings. ``mode`` defaults to the
    ``KL_GUARD_MODE`` environment variable, else ``"warn"``.
    """
    with _STATE.lock:
        base = _STATE.base.config if _STATE.base else default_config()
        config = configure(base, mode, **options)
        if _STATE.base is None:
            _STATE.base = _Layer(config)
        else:
            if _schedule(config) != _schedule(_STATE.base.config):
                _STATE.base.policy = SitePolicy()  # a new schedule starts afresh at every site
            _STATE.base.config = config
        _STATE.refresh()


def uninstall() -> None:
    """Undo :func:`install`; the originals are back once no ``guard()`` is running."""
    _drain(block=True)
    with _STATE.lock:
        _STATE.base = None
        _STATE.refresh()


def is_installed() -> bool:
    """Whether the KL entry points are patched right now."""
    return bool(_STATE.patches)


def findings() -> list[Finding]:
    """Findings recorded since :func:`install`, one per (location, code) with a count."""
    _drain(block=True)
    base = _STATE.base
    return base.record.findings() if base else []


class Guard:
    """Checks KL calls while active: a context manager, a decorator, or start()/stop().

    Options left out are inherited from the enclosing ``install()`` or guard
    when it starts. Guards nest; ``stop()`` restores exactly the state before
    ``start()``.
    """

    def __init__(self, mode: Mode | str | None = None, **options: Any) -> None:
        # Fail now, not when the guard starts: a bad option or KL_GUARD_MODE
        # surfaces where the guard is written, before any training step.
        configure(default_config(), mode, **options)
        self._mode = mode
        self._options = options
        self._layer: _Layer | None = None
        self._last: _Layer | None = None

    @property
    def findings(self) -> list[Finding]:
        """Findings of the block so far, in order of first occurrence, with counts."""
        if self._layer is not None:
            _drain(block=True)
        layer = self._layer or self._last
        return layer.record.findings() if layer else []

    @property
    def active(self) -> bool:
        return self._layer is not None

    def start(self) -> None:
        with _STATE.lock:
            if self._layer is not None:
                raise RuntimeError(
                    "kl_guard: this guard is already active; create another guard() to nest."
                )
            outer = _STATE.innermost()
            base = outer.config if outer else default_config()
            self._layer = _Layer(configure(base, self._mode, **self._options))
            _STATE.guards.append(self._layer)
            _STATE.refresh()

    def stop(self) -> None:
        if self._layer is not None:
            _drain(block=True)
        with _STATE.lock:
            layer, self._layer = self._layer, None
            if layer is None:
                return
            self._last = layer
            if layer in _STATE.guards:
                _STATE.guards.remove(layer)
            _STATE.refresh()

    def __enter__(self) -> Guard:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        mode, options = self._mode, self._options
        if asyncio.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_guarded(*args: Any, **kwargs: Any) -> Any:
                with Guard(mode, **options):
                    return await func(*args, **kwargs)

            return cast(F, async_guarded)

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with Guard(mode, **options):
                return func(*args, **kwargs)

        return cast(F, guarded)


def guard(mode: Mode | str | None = None, **options: Any) -> Guard:
    """A :class:`Guard`: ``with kl_guard.guard(mode="raise") as g:`` or ``@kl_guard.guard()``."""
    return Guard(mode, **options)


atexit.register(_drain, block=True)

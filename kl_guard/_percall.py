"""The per-call path: what a patched ``F.kl_div`` or ``KLDivLoss.forward`` does on each call.

Most calls are let through: the loss called again from the line that
called it last, in a stretch its schedule does not check, is recognized
by identity (:class:`Latest`) and costs a few attribute
reads. The rest find their call site, ask its schedule, and, when due,
are checked (``_check``), then reported (``_reporting``) or deferred
(``_deferred``). A call in a compiled graph comes here once the graph has
computed its loss (``traced_call_ran``, from ``_recorder``). Every step of
kl_guard's own runs through ``_reporting.safely``: an internal error never
reaches the user's call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, NamedTuple

import torch

from kl_guard import (
    _arguments,
    _checking,
    _compat,
    _compiled,
    _deferred,
    _patch,
    _reporting,
    _sites,
)
from kl_guard._compat_compile import compiler as _compiler
from kl_guard._config import Config
from kl_guard._diagnosis import construction_findings
from kl_guard._findings import Counts, Finding
from kl_guard._patch import PATCH
from kl_guard._policy import ScheduleTable, SiteSchedule
from kl_guard._sites import CallSite

Wrapped = Callable[..., Any]
Args = tuple[Any, ...]
Kwargs = dict[str, Any]

#: How far above the wrapper the latest site may be and still be recognized
#: (1 for F.kl_div, 3 for a module through Module.__call__'s frames, more under hooks).
LATEST_DEPTH = 8


class Latest(NamedTuple):
    """The call site a wrapper saw last, recognized again by identity alone.

    A loop calls the loss from one line: the frame ``depth`` levels above the
    wrapper is that line when its code object *is* ``code`` and its
    instruction offset is ``lasti``. No frame walk, key or look-up. ``code``
    is held strongly, so its identity cannot pass to code compiled later.
    """

    code: CodeType | None
    lasti: int
    depth: int  # frames between the wrapper and the user's line
    module: bool  # the call was nn.KLDivLoss's, not F.kl_div's
    site: SiteSchedule


NO_LATEST = Latest(None, -1, 1, False, SiteSchedule(1))


class LayerCalls:
    """The call-site schedules of one layer, the site it saw last, and its traced calls."""

    __slots__ = ("policy", "recent", "traced", "compiled")

    def __init__(self) -> None:
        self.policy = ScheduleTable()
        #: the two sites seen last, the latest first: a step that calls two losses
        #: (a distillation's kl_div and cross_entropy) finds both by identity
        self.recent: tuple[Latest, Latest] = (NO_LATEST, NO_LATEST)
        self.traced = 0  # calls run by a tracing pass (see _traced_call)
        #: The schedules of calls in compiled graphs, by ``_compiled`` token.
        self.compiled: dict[int, SiteSchedule] = {}

    def counts(self) -> Counts:
        """The calls this schedule saw; the eager ones counted by their sites, the
        compiled ones by their tokens' sites."""
        seen, checked = self.policy.counts()
        compiled = list(self.compiled.values())
        seen += sum(site.seen for site in compiled)
        checked += sum(site.checks for site in compiled)
        return Counts(seen + self.traced, checked, self.traced)


@dataclasses.dataclass(frozen=True)
class View:
    """What the wrappers read, swapped in one assignment so threads never see it torn."""

    config: Config
    records: tuple[_reporting.Record, ...]  # innermost layer first
    schedule: LayerCalls


class _Active:
    """The view of the innermost active layer; None when kl_guard is off."""

    view: View | None = None


ACTIVE = _Active()


class _Thread(threading.local):
    #: torch is running a KLDivLoss's forward (or a compiled graph's kl_div,
    #: see torch_kl_div) on this thread: the F.kl_div inside it is that call,
    #: counted and checked there.
    in_module_call = False


_THREAD = _Thread()

_getframe = _compat.getframe
_is_dynamo_compiling = torch.compiler.is_dynamo_compiling
# public and documented, but not re-exported in torch.jit's stubs
_jit_tracing: Callable[[], bool] = torch.jit.is_tracing  # type: ignore[attr-defined]


def wrapper(wrapped: Wrapped, instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """The wrapper of both entry points: ``instance`` is the module for
    ``KLDivLoss.forward`` and None for ``F.kl_div``."""
    __tracebackhide__ = True  # see _reporting.emit
    # dynamo's symbolic pass must not reach _getframe: a graph break
    if _is_dynamo_compiling():
        return wrapped(*args, **kwargs)
    view = ACTIVE.view
    if view is None:
        return wrapped(*args, **kwargs)
    schedule = view.schedule
    # Not while a later pass of torch.compile or torch.export traces: those
    # run the user's lines again, on fake tensors, and are no eager call.
    if not _compiler._is_compiling_flag:
        module = instance is not None
        # the latest site first: a loop of one loss line tries no other
        for latest in schedule.recent:
            if latest.site.skip <= 0 or latest.module is not module:
                continue
            try:
                frame = _getframe(latest.depth)
            except ValueError:  # a shallower stack than the latest site's
                continue
            except Exception as exc:  # the call goes on to the scheduled path
                _reporting.internal_error(exc)
                break
            if frame.f_code is latest.code and frame.f_lasti == latest.lasti:
                latest.site.skip -= 1  # a decrement lost between threads only delays a check
                return (
                    wrapped(*args, **kwargs) if not module else _module_call(wrapped, args, kwargs)
                )
    return _scheduled_call(wrapped, instance, args, kwargs, view)


def built_wrapper(wrapped: Wrapped, instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """The wrapper of ``KLDivLoss.__init__``: where the module was built, for
    KLG001, and KLG009 for arguments that say one reduction and compute another."""
    __tracebackhide__ = True  # see _reporting.emit
    result = wrapped(*args, **kwargs)
    view = ACTIVE.view
    if view is not None:
        site = _reporting.safely(_record_built, instance, args, kwargs)
        if site is not None and site[0]:
            _reporting.report(site[0], view.config, view.records, site[1])
    return result


def _record_built(module: Any, args: Args, kwargs: Kwargs) -> tuple[list[Finding], CallSite | None]:
    frame = _sites.user_frame(1)
    _sites.record_built(module, frame)
    diagnoses = construction_findings(_arguments.bind_constructor(args, kwargs))
    if not diagnoses:
        return [], None
    site = _sites.site_of(frame)
    return _reporting.attribute(diagnoses, site), site


def _call(wrapped: Wrapped, instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """torch's own call, with a module's marked (see :func:`_module_call`)."""
    if instance is None:
        return wrapped(*args, **kwargs)
    return _module_call(wrapped, args, kwargs)


def _module_call(wrapped: Wrapped, args: Args, kwargs: Kwargs) -> Any:
    """A module's call with the thread marked: the F.kl_div inside its forward
    is then neither checked nor counted a second time."""
    thread = _THREAD
    previous = thread.in_module_call
    thread.in_module_call = True
    try:
        return wrapped(*args, **kwargs)
    finally:
        thread.in_module_call = previous  # a module called inside another's (a mode's) nests


def _scheduled_call(wrapped: Wrapped, instance: Any, args: Args, kwargs: Kwargs, view: View) -> Any:
    """A call the fast path did not let through: find its site, ask its schedule."""
    __tracebackhide__ = True  # see _reporting.emit
    if _zero_dim(args, kwargs):  # nothing to judge: torch's own warning stays
        if instance is None:
            return _patch.call_unfiltered(wrapped, args, kwargs)
        return _module_call(wrapped, args, kwargs)
    if _THREAD.in_module_call:  # the F.kl_div inside a module's forward
        return _call(wrapped, instance, args, kwargs)
    if _jit_tracing():  # torch.jit.trace would record kl_guard's own kernels in the graph
        return _call(wrapped, instance, args, kwargs)
    if _compiler._is_compiling_flag:
        return _traced_call(wrapped, instance, args, kwargs, view)
    try:
        caller: FrameType | None = _getframe(2)  # the wrapper's caller
    except ValueError:  # called from C, with no Python frame above
        caller = None
    located = _reporting.safely(_locate, view, instance is not None, caller)
    if located is None or not located[1]:
        return _call(wrapped, instance, args, kwargs)
    return _checked_call(wrapped, instance, args, kwargs, view, located[0])


def _zero_dim(args: Args, kwargs: Kwargs) -> bool:
    input = args[0] if args else kwargs.get("input")
    return isinstance(input, torch.Tensor) and input.ndim == 0


def _locate(view: View, module: bool, caller: FrameType | None) -> tuple[FrameType | None, bool]:
    """The user's frame of a call, and whether its schedule checks it now."""
    schedule = view.schedule
    for latest in schedule.recent:
        frame = caller
        for _ in range(latest.depth - 1):
            frame = frame.f_back if frame is not None else None
        if (
            frame is not None
            and frame.f_code is latest.code
            and frame.f_lasti == latest.lasti
            and latest.module is module
        ):
            return frame, latest.site.due(view.config)
    frame = _sites.user_frame_from(caller)
    # f_lasti, not f_lineno: the line number decodes the code's line table
    site = schedule.policy.site(
        frame.f_code if frame else None, frame.f_lasti if frame else -1, view.config
    )
    depth = _depth(caller, frame)
    if frame is not None and depth:
        latest = Latest(frame.f_code, frame.f_lasti, depth, module, site)
        schedule.recent = (latest, schedule.recent[0])
    return frame, site.due(view.config)


def _depth(caller: FrameType | None, frame: FrameType | None) -> int:
    """How many frames above the wrapper ``frame`` is (0 when past :data:`LATEST_DEPTH`)."""
    depth = 1
    while caller is not None and caller is not frame and depth < LATEST_DEPTH:
        caller, depth = caller.f_back, depth + 1
    return depth if caller is frame else 0


def _checked_call(
    wrapped: Wrapped,
    instance: Any,
    args: Args,
    kwargs: Kwargs,
    view: View,
    frame: FrameType | None,
) -> Any:
    __tracebackhide__ = True  # see _reporting.emit
    prepared = _reporting.safely(_prepare)
    result = _call(wrapped, instance, args, kwargs)
    if prepared is None:  # half prepared: leave the call alone
        return result
    outcome = _reporting.safely(_findings_of, args, kwargs, instance, wrapped, view, result, frame)
    if outcome is not None and outcome[0]:
        _reporting.report(outcome[0], view.config, view.records, outcome[1])
    return result


def torch_kl_div(*args: Any, **kwargs: Any) -> Any:
    """torch's ``F.kl_div``, one opaque node of a compiled graph (see ``_recorder``).

    Called from this module, so that ``_patch``'s filter replaces torch's
    'mean' warning while torch traces the call, as for an eager one; with the
    thread marked, so that the patched F.kl_div that torch's tracing modes
    call again is this call's, not one of its own.
    """
    PATCH.filter_mean_warning()
    functional = PATCH.callee(_patch.FUNCTIONAL) or torch.nn.functional.kl_div
    return _module_call(functional, args, kwargs)


def traced_call_ran(
    token: int, input: torch.Tensor, target: torch.Tensor, loss: torch.Tensor, view: View
) -> None:
    """A compiled graph's call, its loss computed: checked when its site's schedule
    says so, and reported as an eager call is (see ``_recorder``)."""
    __tracebackhide__ = True  # see _reporting.emit
    traced = _reporting.safely(_traced_due, token, view)
    if traced is None or _reporting.safely(_prepare) is None:
        return
    outcome = _reporting.safely(_traced_findings, traced, input, target, loss, view)
    if outcome is not None and outcome[0]:
        _reporting.report(outcome[0], view.config, view.records, outcome[1])


def _traced_due(token: int, view: View) -> _compiled.TracedCall | None:
    site = view.schedule.compiled.get(token)
    if site is None:
        site = view.schedule.compiled.setdefault(token, SiteSchedule(view.config.warmup))
    return _compiled.TRACED.sites[token] if site.due(view.config) else None


def _traced_findings(
    traced: _compiled.TracedCall,
    input: torch.Tensor,
    target: torch.Tensor,
    loss: torch.Tensor,
    view: View,
) -> tuple[list[Finding], CallSite | None]:
    call = _compiled.traced_call(traced, input, target)
    if call is None:
        return [], None
    return _checking.findings_at(
        call, input, target, loss, view.config, view.records, traced.site, None
    )


def _prepare() -> bool:
    if _deferred.pending():
        _deferred.drain(block=False)
    PATCH.filter_mean_warning()
    return True


def _findings_of(
    args: Args,
    kwargs: Kwargs,
    instance: Any,
    wrapped: Wrapped,
    view: View,
    result: Any,
    frame: FrameType | None,
) -> tuple[list[Finding], CallSite | None]:
    """The findings of a checked call, now, or none yet when its check is deferred."""
    call, bound = _checking.call_of(
        PATCH.contract_of(wrapped), args, kwargs, instance, wrapped is PATCH.op
    )
    if call is None:
        return [], None
    return _checking.findings_at(
        call,
        bound["input"],
        bound["target"],
        result,
        view.config,
        view.records,
        frame,
        instance,
        bound,
    )


def _traced_call(wrapped: Wrapped, instance: Any, args: Args, kwargs: Kwargs, view: View) -> Any:
    """A call run by a tracing pass of torch.compile or torch.export (see ``_compiled``)."""
    __tracebackhide__ = True  # see _reporting.emit
    view.schedule.traced += 1
    outcome = _reporting.safely(_trace, args, kwargs, instance, wrapped)
    if outcome is not None and outcome[0]:
        config = _compiled.trace_config(view.config)
        _reporting.report(outcome[0], config, view.records, outcome[1])
    return _call(wrapped, instance, args, kwargs)


def _trace(
    args: Args, kwargs: Kwargs, instance: Any, wrapped: Wrapped
) -> tuple[list[Finding], CallSite | None]:
    PATCH.filter_mean_warning()
    diagnoses = _compiled.trace_diagnoses(
        PATCH.contract_of(wrapped), args, kwargs, instance, wrapped is PATCH.op
    )
    site = _sites.site_of(_sites.user_frame(1))
    return _compiled.trace_findings(diagnoses, site), site

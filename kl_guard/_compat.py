"""Compatibility: every private torch, CPython and wrapt detail kl_guard uses, with its fallback.

Nothing else in kl_guard touches a private name or torch's version; the
compiler's details (dynamo, FX, inductor, export) are in ``_compat_compile``,
which records its own here. Each detail has a primary path (fast, or the
only exact one) and a fallback that is correct but slower or coarser (its
comment says what kl_guard does without the detail); :data:`PRIMARY` records
which one is in use, and the test suite asserts that on the pinned torch
every primary path is, so an upstream change fails a test instead of quietly
slowing kl_guard down or blinding it. Where supported torch versions behave
differently, the behaviour is recorded in a constant
(``TORCH_WARNS_WITH_STACKLEVEL``, ``_compat_compile.COMPILE_SETS_COMPILING_FLAG``)
that the tests compare with what torch does.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import types
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import torch
import wrapt

T = TypeVar("T")

#: Which primary path is in use, by detail (False: its fallback).
PRIMARY: dict[str, bool] = {}


def primary(name: str, available: bool) -> bool:
    """Record whether detail ``name``'s primary path is ``available``; return that."""
    PRIMARY[name] = available
    return available


# -- torch's version ----------------------------------------------------------
#: The oldest torch kl_guard supports: the releases of the last two years (README).
OLDEST_TORCH = (2, 6)

#: The installed torch's version (a variable so that a test can stand in another).
TORCH_VERSION: str = str(torch.__version__)


def release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``2.6.0+cu124``."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def require_supported_torch() -> None:
    """Refuse, in one line, to patch a torch older than :data:`OLDEST_TORCH`."""
    if release(TORCH_VERSION) < OLDEST_TORCH:
        major, minor = OLDEST_TORCH
        raise RuntimeError(
            f"kl_guard supports torch {major}.{minor} and newer; this is torch {TORCH_VERSION}."
        )


# -- CPython frames ---------------------------------------------------------
def _walk_up(depth: int = 0) -> FrameType:
    """``sys._getframe``'s fallback: the public ``inspect.currentframe()``, walked up."""
    frame = inspect.currentframe()
    for _ in range(depth + 1):  # depth 0 is the caller's frame, as for sys._getframe
        frame = frame.f_back if frame is not None else None
    if frame is None:  # too shallow (sys._getframe's error), or an interpreter without frames
        raise ValueError("call stack is not deep enough")
    return frame


#: ``sys._getframe(depth)``: the call site without building a traceback. Its
#: frames are read by their documented attributes; a site is keyed by
#: ``f_lasti``, which tells two calls on one line apart and is the same at
#: every run of one call (tests/test_compat.py checks both). The per-call
#: path reads it directly: a call through here would cost more than its test.
getframe: Callable[[int], FrameType] = (
    sys._getframe if primary("getframe", hasattr(sys, "_getframe")) else _walk_up
)


def calling_instance(kind: type[T], depth: int = 2, within: int = 4) -> T | None:
    """The ``kind`` that is ``self`` in the nearest of ``within`` frames from ``depth`` up
    (2: the caller's caller); None where none is.

    How a framework's callback finds the object that calls it, where the framework hands
    it none: transformers' ``CallbackHandler`` calls each callback's events from a method
    of its own (``call_event``). Frames read by their documented ``f_locals``.
    """
    try:
        frame: FrameType | None = getframe(depth)
    except ValueError:
        return None
    for _ in range(within):
        if frame is None:
            return None
        found = frame.f_locals.get("self")
        if isinstance(found, kind):
            return found
        frame = frame.f_back
    return None


# -- functorch's wrapped tensors ----------------------------------------------
_functorch_wrapped: Callable[[torch.Tensor], bool] | None = getattr(
    torch._C._functorch, "is_functorch_wrapped_tensor", None
)
primary("functorch_wrapped", _functorch_wrapped is not None)


def is_functorch_wrapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is a functorch wrapper (vmap's batched, grad's), whose values
    cannot be read. The fallback says no: the read then fails inside a check,
    which is logged once as an internal error and never reaches the user."""
    return _functorch_wrapped is not None and _functorch_wrapped(x)


# -- warnings ---------------------------------------------------------------
_filters_mutated: Callable[[], None] | None = getattr(warnings, "_filters_mutated", None)
primary("filters_mutated", _filters_mutated is not None)
_NEVER = "\x00kl_guard: a filter that matches no message"


def filters_changed() -> None:
    """Tell ``warnings`` that ``warnings.filters`` was edited in place, so the
    ``__warningregistry__`` caches of earlier decisions are dropped."""
    if _filters_mutated is not None:
        _filters_mutated()
        return
    # Public API bumps the same version: add a filter that matches nothing, then drop it.
    warnings.filterwarnings("ignore", message=_NEVER, append=True)
    warnings.filters[:] = [f for f in warnings.filters if getattr(f[1], "pattern", None) != _NEVER]  # type: ignore[index]


# -- torch's warning for reduction='mean' -----------------------------------------


def _torch_warns_with_stacklevel() -> bool:
    """Whether ``F.kl_div`` warns for reduction='mean' naming its caller's frame
    (``stacklevel=2``, torch 2.10 and newer) rather than its own module's."""
    functional = torch.nn.functional
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        functional.kl_div(torch.zeros(1, 1), torch.zeros(1, 1), reduction="mean")
    return all(w.filename != functional.__file__ for w in record)


#: Whether torch's 'mean' warning names the frame that called ``F.kl_div``
#: (else torch.nn.functional's own): decided once, by one call of torch's.
TORCH_WARNS_WITH_STACKLEVEL = _torch_warns_with_stacklevel()


# -- torch.kl_div, the op F.kl_div calls --------------------------------------
#: torch's ``kl_div`` op as torch defines it, taken before kl_guard patches
#: ``torch.kl_div``: kl_guard's own computations call it.
KL_DIV_OP: Callable[..., Any] = torch.kl_div


def calling_op(function: Callable[..., Any], op: Callable[..., Any]) -> Callable[..., Any] | None:
    """A copy of torch's ``function`` (``F.kl_div``) whose ``torch.kl_div`` is ``op``.

    ``F.kl_div`` looks ``torch`` up in its module's globals on every call, so
    a patch on ``torch.kl_div`` would run inside every ``F.kl_div`` call. The
    copy runs the same code with a snapshot of those globals in which
    ``torch`` is a stand-in module: ``kl_div`` is ``op``, every other name is
    torch's. It costs the call nothing. The caller points the copy's own name
    (``kl_div``, which the code passes to ``handle_torch_function``) at its
    patch. None (the fallback: ``torch.kl_div`` is left unpatched) where the
    function is not plain Python code naming ``torch`` without a closure
    (another tool's patch on ``F.kl_div`` under kl_guard's, too: the copy would skip it).
    """
    # type(), not isinstance(): another tool's wrapper passes for the function it wraps
    plain = (
        type(function) is types.FunctionType
        and function.__closure__ is None
        and "torch" in function.__code__.co_names
    )
    if not primary("functional_calls_op_copy", plain):
        return None
    assert isinstance(function, types.FunctionType)
    stand_in = types.ModuleType(torch.__name__, torch.__doc__)
    stand_in.kl_div = op  # type: ignore[attr-defined]
    stand_in.__getattr__ = functools.partial(getattr, torch)  # type: ignore[method-assign]
    copy = types.FunctionType(
        function.__code__,
        {**function.__globals__, "torch": stand_in},
        function.__name__,
        function.__defaults__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    copy.__annotations__ = function.__annotations__
    copy.__dict__.update(function.__dict__)
    return copy


def script_as_op(wrapper: object, op: object) -> bool:
    """Have ``torch.jit.script`` compile a call of ``wrapper`` as the builtin op
    ``op`` is (``aten::kl_div``), as it would a call of ``op``; False where
    TorchScript's table of builtins cannot be reached (the fallback: the op
    is left unpatched, so that scripted code keeps compiling)."""
    builtins = getattr(torch.jit, "_builtins", None)
    find = getattr(builtins, "_find_builtin", None)
    register = getattr(builtins, "_register_builtin", None)
    name = find(op) if find is not None else None
    if not primary("script_builtin", register is not None and name is not None):
        return False
    assert register is not None
    register(wrapper, name)
    return True


def unscript(wrapper: object) -> None:
    """Undo :func:`script_as_op`: the table is keyed by ``id()``, which a later
    object may reuse once ``wrapper`` is gone."""
    table = getattr(getattr(torch.jit, "_builtins", None), "_builtin_table", None)
    if isinstance(table, dict):
        table.pop(id(wrapper), None)


# -- wrapt --------------------------------------------------------------------
_wrapper_base: Any = wrapt.FunctionWrapper.__mro__[1]  # wrapt's _FunctionWrapperBase
primary("wrapt_builtin_binding", _wrapper_base.__name__ == "_FunctionWrapperBase")


def function_wrapper(
    cls: type[Any], original: Callable[..., Any], wrapper: Callable[..., Any], enabled: object
) -> Any:
    """``cls(original, wrapper, enabled=enabled)`` for a plain function, cheaper to call.

    For a plain function wrapt looks up ``original.__self__`` on every call,
    and the AttributeError it raises and clears costs about half of a
    not-checked call. wrapt's "builtin" binding skips that look-up; it only
    changes what happens when the wrapper is bound as a method, which no call
    of ``F.kl_div`` does.
    """
    if PRIMARY["wrapt_builtin_binding"]:
        try:
            fast = cls.__new__(cls)  # type: ignore[call-overload]
            _wrapper_base.__init__(fast, original, None, wrapper, enabled, "builtin")
            return fast
        except TypeError:  # a wrapt whose base takes other arguments
            PRIMARY["wrapt_builtin_binding"] = False
    return cls(original, wrapper, enabled=enabled)


_has_owner = primary("wrapt_bound_owner", hasattr(_wrapper_base, "_self_owner"))


def bound_owner(bound: Any) -> Any:
    """What a wrapt bound wrapper is bound to: the instance, else the class.

    The fallback, for a wrapt that keeps no owner (1.14), is the class that
    the wrapped function's qualified name says: the same ``forward`` for a
    subclass that does not override it.
    """
    instance = getattr(bound, "_self_instance", None)
    if instance is not None:
        return instance
    if _has_owner:
        return bound._self_owner
    function = bound.__wrapped__
    owner: Any = sys.modules[function.__module__]
    for name in function.__qualname__.split(".")[:-1]:
        owner = getattr(owner, name)
    return owner

"""Compatibility, compiler side: dynamo, FX, inductor and export internals, each with its fallback.

As in ``_compat``, whose :data:`~kl_guard._compat.PRIMARY` records these
too, each detail has a primary path and a fallback (its comment says what
kl_guard does without the detail): tests/test_compat.py fails on the pinned
torch when a primary path is not in use. Nothing of dynamo's is imported
here: a program that never compiles pays for none of it.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import torch

from kl_guard._compat import PRIMARY, TORCH_VERSION, getframe, primary, release

# -- is torch tracing now? ------------------------------------------------------
#: ``torch.compiler.is_compiling`` (public), the fallback's read of the flag.
_is_compiling: Callable[[], bool] = torch.compiler.is_compiling

# torch.compile sets torch.compiler's flag while it traces from torch 2.13; before,
# only torch.export does, and a call in a later pass of torch.compile (dynamo's run
# on fake tensors, AOTAutograd's) looks like an eager one. Telling this by behaviour
# takes a compilation (a second or more at import), so it is decided by version,
# here only; tests/test_compat.py checks the version against what torch does.
_has_flag = primary("compiling_flag", hasattr(torch.compiler, "_is_compiling_flag"))
#: Whether torch.compile sets ``torch.compiler._is_compiling_flag`` while it traces.
COMPILE_SETS_COMPILING_FLAG = _has_flag and release(TORCH_VERSION) >= (2, 13)

# Every tracing pass of torch.compile and torch.export on the supported torch
# versions runs under a FakeTensorMode (torch 2.6's export runs one pass with
# neither the flag nor a TracingContext set); an eager call never does, unless
# the user runs it on fake tensors, which kl_guard cannot read either.
_fake_mode_key = getattr(getattr(torch._C, "_TorchDispatchModeKey", None), "FAKE", None)
_fake_mode: Callable[[], object] = (
    functools.partial(torch._C._get_dispatch_mode, _fake_mode_key)
    if primary("fake_mode", _fake_mode_key is not None)
    else lambda: None  # only the flag tells: before 2.13, compile's passes look eager
)


class _CompilingFlag:
    """``_is_compiling_flag`` for a torch whose torch.compile does not set the flag
    (or has none): the flag (else ``is_compiling()``) or a fake-tensor pass under way."""

    @property
    def _is_compiling_flag(self) -> bool:
        flag = torch.compiler._is_compiling_flag if _has_flag else _is_compiling()
        return flag or _fake_mode() is not None


#: An object whose ``_is_compiling_flag`` is True while torch.compile or
#: torch.export traces. The hot path reads the attribute: the public
#: ``is_compiling()`` costs two Python calls (``torch.jit.is_scripting()``
#: first), more than the rest of a not-checked call's tests together.
compiler: Any = torch.compiler if COMPILE_SETS_COMPILING_FLAG else _CompilingFlag()

_try_get = getattr(getattr(torch._guards, "CompileContext", None), "try_get", None)
_try_get_tracing = getattr(getattr(torch._guards, "TracingContext", None), "try_get", None)
primary("compile_context", _try_get is not None and _try_get_tracing is not None)


def compile_context() -> object:
    """The compilation being traced, or None outside one (or where torch cannot say).

    torch.compile's ``CompileContext``; where none is set, the ``TracingContext``
    that a non-strict torch.export keeps over all its passes (2.13 sets no
    ``CompileContext`` there).
    """
    context = _try_get() if _try_get is not None else None
    if context is None and _try_get_tracing is not None:
        context = _try_get_tracing()
    return context


_EXPORT_DIR = os.sep + os.path.join("torch", "export") + os.sep


def is_exporting() -> bool:
    """Whether torch.export traces now. The fallback (torch 2.6 has no
    ``torch.compiler.is_exporting``) looks for torch.export's frames on the stack."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    if primary("is_exporting", exporting is not None):
        return bool(exporting())  # type: ignore[misc]
    frame: FrameType | None = getframe(1)
    while frame is not None:
        if _EXPORT_DIR in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


# -- whose code a frame runs ------------------------------------------------------
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_COMPILER_PACKAGES = ("_dynamo", "_functorch", "_inductor", "_higher_order_ops", "_export", "fx")
_compiler_paths = [os.path.join(_TORCH_DIR, package) for package in _COMPILER_PACKAGES]

#: The folders of torch's compiler stack, which builds code from strings and
#: calls it (AOTAutograd's wrappers): a ``<string>`` frame it calls is torch's.
#: A package torch renames or drops is left out: its frames are still torch's
#: (skipped), but code it builds and calls reads as the user's, so a call site
#: may be that code's line rather than the user's.
COMPILER_DIRS = tuple(path + os.sep for path in _compiler_paths if os.path.isdir(path))
primary("compiler_packages", len(COMPILER_DIRS) == len(_COMPILER_PACKAGES))

#: The file name FX gives the code of a graph (``<eval_with_key>.N``), which
#: torch.compile's eager backend runs between the compiled function and a call
#: in its graph. Where FX names it otherwise, graph code reads as other code
#: torch builds (still skipped), and a call site in compiled code may be a line
#: of the compiled function rather than the line that called it.
FX_GRAPH_FILE = "<eval_with_key>"


def _fx_names_graph_code() -> bool:
    """Whether FX still names a graph's code so: one empty graph, half a millisecond."""
    try:
        with warnings.catch_warnings():  # whatever FX says of it is not the user's
            warnings.simplefilter("ignore")
            graph = torch.fx.Graph()
            graph.output(None)
            forward: Any = torch.fx.GraphModule(torch.nn.Module(), graph).forward
        return str(forward.__code__.co_filename).startswith(FX_GRAPH_FILE)
    except Exception:  # an FX that cannot build it: say so, never break the import
        return False


primary("fx_graph_file", _fx_names_graph_code())

#: dynamo's name for a compiled graph in the bytecode it rewrites a function into.
_COMPILED_FN = "__compiled_fn"


def rewritten_by_dynamo(code: CodeType) -> bool:
    """Whether ``code`` is a function's bytecode as dynamo rewrote it, which calls
    its graph (:data:`FX_GRAPH_FILE`) and no longer maps to the loss's line.

    Recorded in ``PRIMARY`` once seen (a compilation shows it, not an import).
    Where dynamo names its graphs otherwise, such a frame reads as the user's,
    and a call site in compiled code is a line of the compiled function rather
    than the line that called it.
    """
    if any(name.startswith(_COMPILED_FN) for name in code.co_names):
        PRIMARY["dynamo_compiled_fn"] = True
        return True
    return False


# -- torch.compile: a check inside the compiled graph -------------------------
#: dynamo traces the function an object names in this attribute (as it does
#: for ``torch.jit.script``'s) in place of calling the object as one opaque
#: function. Where dynamo stops honouring it, the wrapper is an opaque call
#: in the graph again, diagnosed by its arguments while torch traces.
_DYNAMO_INLINE = "_torchdynamo_inline"


def trace_instead(cls: type[Any], traced: Callable[[Any], Callable[..., Any]]) -> None:
    """Have dynamo trace ``traced(wrapper)`` where a program calls ``wrapper``, an
    instance of ``cls``.

    ``traced`` is called when dynamo meets such a call, not before: nothing of
    dynamo's is imported until a program compiles.
    """

    def inline(self: Any) -> Callable[..., Any]:
        PRIMARY["dynamo_inline"] = True  # dynamo asked: the hook is honoured
        return traced(self)

    setattr(cls, _DYNAMO_INLINE, property(inline))


def forget_dynamo_rules() -> None:
    """Have dynamo read its table of torch functions afresh, once the patch is off.

    dynamo builds the table once, from the functions' names: built while the
    patch was on, it holds our wrappers, and torch's own ``F.kl_div`` would be
    traced into after ``uninstall()`` (and fail on its ``warnings.warn`` under
    ``fullgraph``). Without the primary path a compile after ``uninstall()``
    may trace into ``F.kl_div``.
    """
    rules = sys.modules.get("torch._dynamo.trace_rules")
    if rules is None:  # dynamo has built nothing yet
        return
    clear: Callable[[], None] | None = getattr(rules, "clear_lru_cache", None)
    if primary("dynamo_rules_cache", clear is not None) and clear is not None:
        clear()


def traced_stack() -> list[tuple[str, int, str]]:
    """The user's stack where dynamo traces now, outermost first: (file, line, function).

    dynamo keeps it for each node it records, with the frames of the torch
    functions it inlined (``nn.KLDivLoss.forward``'s). The fallback, an empty
    stack, leaves the compiled function's caller as the call site.
    """
    tracing_context = getattr(torch._guards, "TracingContext", None)
    extract = getattr(tracing_context, "extract_stack", None)
    if not primary("traced_stack", extract is not None):
        return []
    assert extract is not None
    return [(f.filename, f.lineno or 0, f.name) for f in extract()]


def record_tags() -> tuple[Any, ...]:
    """The tags of the recorder's operator: ``cudagraph_unsafe``, so that inductor
    does not capture it in a CUDA graph (mode="reduce-overhead"), whose replays
    run no Python and would check nothing. With graph partition (on by default
    from torch 2.13) inductor runs it between the graph's CUDA-graphed parts;
    without, it keeps that graph out of CUDA graphs and logs why. The fallback
    (torch 2.6 has no such tag): the operator may be captured, and
    ``_recorder`` says so where a capture runs it.
    """
    tag = getattr(torch.Tag, "cudagraph_unsafe", None)
    return (tag,) if primary("cudagraph_unsafe_tag", tag is not None) else ()


def capturing() -> bool:
    """Whether a CUDA graph is being captured on this thread's stream now."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def mark_side_effect(op: Any) -> None:
    """Keep ``op``, which returns nothing, in every graph: no pass may drop it as dead code.

    torch.fx's mark, which inductor honours where it asks
    ``torch._library.utils.is_impure``; before that, inductor kept only ops
    with an effect token (the fallback), threaded through training graphs.
    """
    import torch._library.utils
    import torch.fx.node

    torch.fx.node.has_side_effect(op)
    if not primary("side_effect_op", hasattr(torch._library.utils, "is_impure")):
        from torch._higher_order_ops import effects

        effects._register_effectful_op(op, effects._EffectType.ORDERED)

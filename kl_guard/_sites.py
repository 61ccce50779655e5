"""Call sites: which frame is the user's, and where it is."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import weakref
from types import FrameType
from typing import Any

import torch
import wrapt

from kl_guard import _compat, _compat_compile
from kl_guard._notebook import cell_label

_INTERNAL_PREFIXES = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (torch.__file__, wrapt.__file__, __file__)
    if path
)
# torch's compiler stack, which builds code from strings and calls it. Not
# torch.nn: a module's forward written in "<string>" (a REPL, exec, doctest)
# is called by Module.__call__ and is the user's.
_COMPILER_PREFIXES = _compat_compile.COMPILER_DIRS

# What a code object's file says of whose code it is.
USER = 0  # a file of the user's (first: falsy, the one test of the common call)
LIBRARY = 1  # torch, wrapt or kl_guard
COMPILER = 2  # torch's compiler stack: library code, and the caller of generated code
FX_GRAPH = 3  # FX graph code, which torch.compile's eager backend runs: torch's
SYNTHETIC = 4  # "<string>" and the like: torch's when its compiler runs it, else the user's

# Kinds of real files, by name. Bounded: a long session may load many files,
# and a kind is cheap to work out again; "<...>" names (one per FX graph, per
# notebook cell) are never kept, their kind being a prefix test.
_file_kinds: dict[str, int] = {}
FILE_KINDS_LIMIT = 4096


def file_kind(filename: str) -> int:
    kind = _file_kinds.get(filename)
    if kind is not None:
        return kind
    if filename.startswith("<"):
        return FX_GRAPH if filename.startswith(_compat_compile.FX_GRAPH_FILE) else SYNTHETIC
    path = os.path.abspath(filename)
    if path.startswith(_COMPILER_PREFIXES):
        kind = COMPILER
    elif path.startswith(_INTERNAL_PREFIXES):
        kind = LIBRARY
    else:
        kind = USER
    if len(_file_kinds) >= FILE_KINDS_LIMIT:
        _file_kinds.clear()
    _file_kinds[filename] = kind
    return kind


def user_frame(depth: int = 1) -> FrameType | None:
    """The innermost frame outside torch, wrapt and kl_guard, seen from ``depth`` up.

    Under ``torch.compile``'s eager backend the graph runs as generated code
    called from the user's function with its bytecode rewritten by dynamo
    (which no longer maps to the loss's line); both are skipped, so the call
    site is the line that called the compiled function, at run time as at
    trace time. So is code that torch's compiler builds from a string and
    calls (AOTAutograd's ``<string>`` wrappers); any other ``<string>`` frame
    is the user's (``python -c``, ``exec``, a REPL, a doctest).
    """
    try:
        frame: FrameType | None = _compat.getframe(depth + 1)
    except ValueError:
        return None
    return user_frame_from(frame)


def user_frame_from(frame: FrameType | None) -> FrameType | None:
    """:func:`user_frame`, starting at ``frame``."""
    generated = False
    kinds = _file_kinds
    while frame is not None:
        code = frame.f_code
        kind = kinds.get(code.co_filename)  # this runs on every call: no call per frame
        if kind is None:
            kind = file_kind(code.co_filename)
        if not kind:
            if not (generated and _compat_compile.rewritten_by_dynamo(code)):
                return frame
        elif kind == FX_GRAPH:
            generated = True
        elif kind == SYNTHETIC and not _called_by_torch(frame):
            return frame
        frame = frame.f_back
    return None


def _called_by_torch(frame: FrameType) -> bool:
    caller = frame.f_back
    return caller is not None and file_kind(caller.f_code.co_filename) in (COMPILER, FX_GRAPH)


@dataclasses.dataclass(frozen=True)
class CallSite:
    """Where the user called the loss: enough to warn there later, without the frame.

    Holding the frame would keep every local of the caller alive (tensors
    included) for as long as a finding is pending; the module's globals are
    alive anyway.
    """

    filename: str
    lineno: int
    module_globals: dict[str, Any] = dataclasses.field(compare=False, repr=False)
    #: for a module's call: where that ``nn.KLDivLoss`` was built, when known
    built: CallSite | None = dataclasses.field(default=None, compare=False, repr=False)

    @functools.cached_property
    def location(self) -> str:
        cell = cell_label(self.filename, self.lineno)
        if cell is not None:
            return cell
        filename = self.filename
        try:
            relative = os.path.relpath(filename)
        except ValueError:  # another drive on Windows
            relative = filename
        if not relative.startswith(os.pardir):
            filename = relative
        return f"{filename}:{self.lineno}"


def site_of(frame: FrameType | None, module: object = None) -> CallSite | None:
    """The call site of ``frame``, with where ``module`` was built when it is known."""
    if frame is None:
        return None
    built = _built.get(module) if module is not None else None
    return CallSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals, built)


# Where each nn.KLDivLoss was built while kl_guard was active: a KLG001 on its
# call is fixed where it was built, which may be far from where it is called.
_built: weakref.WeakKeyDictionary[object, CallSite] = weakref.WeakKeyDictionary()


def record_built(module: object, frame: FrameType | None) -> None:
    """Remember that ``module`` was built at ``frame``'s line."""
    site = site_of(frame)
    if site is not None:
        _built[module] = site


def site_at(filename: str, lineno: int) -> CallSite:
    """The site at a line known without its frame (one torch's compiler traced).

    The globals are those of the loaded module with that file, as a frame's
    would be; none for a file no module was loaded from (a notebook cell).
    """
    path = os.path.abspath(filename)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.abspath(file) == path:
            return CallSite(filename, lineno, vars(module))
    return CallSite(filename, lineno, {})

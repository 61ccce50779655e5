"""Reporting: attribute findings to the user's line, deduplicate, then warn, raise or log."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from types import CodeType, FrameType
from typing import Any

import torch
import wrapt

from kl_guard._config import Config, Mode
from kl_guard._diagnosis import Diagnosis
from kl_guard._exceptions import WARNING_CATEGORIES, KLGuardError
from kl_guard._findings import Finding
from kl_guard._suppression import is_suppressed

logger = logging.getLogger("kl_guard")

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_INTERNAL_PREFIXES = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (torch.__file__, wrapt.__file__, __file__)
    if path
)
# torch's compiler stack, which builds code from strings and calls it. Not
# torch.nn: a module's forward written in "<string>" (a REPL, exec, doctest)
# is called by Module.__call__ and is the user's.
_COMPILER_PREFIXES = tuple(
    os.path.join(_TORCH_DIR, package) + os.sep
    for package in ("_dynamo", "_functorch", "_inductor", "_higher_order_ops", "_export", "fx")
)

# What a code object's file says of whose code it is.
_USER = 0  # a file of the user's (first: falsy, the one test of the common call)
_LIBRARY = 1  # torch, wrapt or kl_guard
_COMPILER = 2  # torch's compiler stack: library code, and the caller of generated code
_FX_GRAPH = 3  # FX graph code, which torch.compile's eager backend runs: torch's
_SYNTHETIC = 4  # "<string>" and the like: torch's when its compiler runs it, else the user's
_file_kinds: dict[str, int] = {}


def _file_kind(filename: str) -> int:
    kind = _file_kinds.get(filename)
    if kind is None:
        path = os.path.abspath(filename)
        if filename.startswith("<eval_with_key>"):
            kind = _FX_GRAPH
        elif filename.startswith("<"):
            kind = _SYNTHETIC
        elif path.startswith(_COMPILER_PREFIXES):
            kind = _COMPILER
        elif path.startswith(_INTERNAL_PREFIXES):
            kind = _LIBRARY
        else:
            kind = _USER
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
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:
        return None
    generated = False
    kinds = _file_kinds
    while frame is not None:
        code = frame.f_code
        kind = kinds.get(code.co_filename)  # this runs on every call: no call per frame
        if kind is None:
            kind = _file_kind(code.co_filename)
        if not kind:
            if not (generated and _rewritten_by_dynamo(code)):
                return frame
        elif kind == _FX_GRAPH:
            generated = True
        elif kind == _SYNTHETIC and not _called_by_torch(frame):
            return frame
        frame = frame.f_back
    return None


def _called_by_torch(frame: FrameType) -> bool:
    caller = frame.f_back
    return caller is not None and _file_kind(caller.f_code.co_filename) in (_COMPILER, _FX_GRAPH)


def _rewritten_by_dynamo(code: CodeType) -> bool:
    return any(name.startswith("__compiled_fn") for name in code.co_names)


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

    @functools.cached_property
    def location(self) -> str:
        filename = self.filename
        try:
            relative = os.path.relpath(filename)
        except ValueError:  # another drive on Windows
            relative = filename
        if not relative.startswith(os.pardir):
            filename = relative
        return f"{filename}:{self.lineno}"


def site_of(frame: FrameType | None) -> CallSite | None:
    if frame is None:
        return None
    return CallSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)


def _rank() -> int | None:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return int(distributed.get_rank())
    return None


def attribute(diagnoses: Sequence[Diagnosis], site: CallSite | None) -> list[Finding]:
    """The findings of ``diagnoses`` at ``site``, less those its line silences.

    A ``# kl_guard: ignore[CODE]`` comment on the line that called the loss
    drops that code here, where every path (checked now, deferred, traced)
    turns a diagnosis into a finding: it is neither recorded nor reported.
    """
    if site is not None:
        diagnoses = [d for d in diagnoses if not is_suppressed(site.filename, site.lineno, d.code)]
    if not diagnoses:
        return []
    location = site.location if site is not None else "<unknown>"
    rank = _rank()
    return [
        Finding(
            code=d.code,
            summary=d.headline,
            message=d.render(location if rank is None else f"{location} (rank {rank})"),
            location=location,
            rank=rank,
        )
        for d in diagnoses
    ]


class Record:
    """Findings of one layer, one entry per (location, code) with a count.

    Counts, not copies: a training loop that repeats a misuse a million
    times keeps one entry per call site and code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Finding] = {}

    def add(self, finding: Finding) -> bool:
        """Count ``finding``; True when its (location, code) is new here.

        A fresh finding counts once; adding an aggregated one (from another
        process's record) adds its whole count, so records merge.
        """
        key = (finding.location, finding.code)
        with self._lock:
            seen = self._items.get(key)
            if seen is None:
                self._items[key] = finding
                return True
            self._items[key] = dataclasses.replace(seen, count=seen.count + finding.count)
            return False

    def findings(self) -> list[Finding]:
        with self._lock:
            return list(self._items.values())


def emit(
    findings: Sequence[Finding],
    config: Config,
    records: Iterable[Record],
    site: CallSite | None,
) -> None:
    """Record ``findings`` in every active layer, then report them by ``config.mode``.

    ``records`` is ordered innermost first: warnings and log lines are
    deduplicated against the innermost layer, so each ``guard()`` block
    reports its first occurrence of a (location, code) again. Raise mode
    raises on every rank, so that no rank goes on alone into a collective.
    """
    __tracebackhide__ = True  # pytest shows the user's call as the last frame
    selected = [f for f in findings if config.enabled(f.code)]
    if not selected:
        return
    fresh: list[Finding] = []
    for i, record in enumerate(records):
        for finding in selected:
            if record.add(finding) and i == 0:
                fresh.append(finding)
    if config.mode is Mode.RAISE:
        raise KLGuardError(selected)
    for finding in fresh:
        if not config.reports_on(finding.rank):
            continue
        if config.mode is Mode.WARN:
            _warn_at(finding, site)
        elif config.mode is Mode.LOG:
            logger.warning("%s", finding.message)


def summary_lines(findings: Sequence[Finding]) -> list[str]:
    """A table of ``findings``, one row per (location, code): code, location, count, cause."""
    rows = [("code", "location", "count", "cause")]
    rows += [(f.code, f.location, str(f.count), f.summary) for f in findings]
    code_w, location_w, count_w = (max(len(row[i]) for row in rows) for i in range(3))
    return [
        f"{code:<{code_w}}  {location:<{location_w}}  {count:>{count_w}}  {cause}"
        for code, location, count, cause in rows
    ]


def _warn_at(finding: Finding, site: CallSite | None) -> None:
    category = WARNING_CATEGORIES[finding.code]
    if site is None:
        warnings.warn(finding.message, category, stacklevel=2)
        return
    # warn_explicit at the user's line is what warnings.warn(stacklevel=n)
    # does internally, without counting frames through torch and wrapt; it
    # also works for a finding read back later (CUDA), off the user's stack.
    globals_ = site.module_globals
    warnings.warn_explicit(
        finding.message,
        category,
        site.filename,
        site.lineno,
        module=globals_.get("__name__", "<unknown>"),
        registry=globals_.setdefault("__warningregistry__", {}),
        module_globals=globals_,
    )


_failure_lock = threading.Lock()
_failure_said = False


def internal_error(exc: BaseException) -> None:
    """Say once, through logging, that kl_guard failed; never raise."""
    global _failure_said
    with _failure_lock:
        if _failure_said:
            return
        _failure_said = True
    # A broken logging setup must not reach the user either.
    with contextlib.suppress(Exception):
        logger.error(
            "kl_guard failed while checking a kl_div call and skipped that check; "
            "the call's result is unaffected. Please report this. (%s: %s)",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )


def reset_internal_error() -> None:
    global _failure_said
    with _failure_lock:
        _failure_said = False

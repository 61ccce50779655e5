"""Reporting: findings attributed to the user's line, recorded, then warned, raised or logged."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

import torch

from kl_guard import _locks
from kl_guard._config import Config, Mode
from kl_guard._exceptions import WARNING_CATEGORIES, KLGuardError, KLGuardWarning
from kl_guard._findings import Finding, tally
from kl_guard._messages import Diagnosis
from kl_guard._sites import CallSite
from kl_guard._suppression import is_suppressed

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("kl_guard")


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
    if site is not None and site.built is not None:
        built = f"the module was built at {site.built.location}: its reduction is set there"
        diagnoses = [
            dataclasses.replace(d, evidence=(*d.evidence, built)) if d.code == "KLG001" else d
            for d in diagnoses
        ]
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
        self._lock = _locks.Lock()
        self._items: dict[tuple[str, str], Finding] = {}
        #: Called after each finding is recorded (``_child`` writes its record then).
        self.on_add: Callable[[Finding], None] | None = None

    def add(self, finding: Finding) -> bool:
        """Count ``finding``; True when its (location, code) is new here.

        A fresh finding counts once; adding an aggregated one (from another
        process's record) adds its whole count, so records merge.
        """
        with self._lock:
            first = tally(self._items, (finding.location, finding.code), finding)
        if self.on_add is not None:
            self.on_add(finding)
        return first

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


def report(
    findings: Sequence[Finding],
    config: Config,
    records: Iterable[Record],
    site: CallSite | None,
) -> None:
    """:func:`emit`, letting through only what is meant for the user."""
    __tracebackhide__ = True  # see emit
    try:
        emit(findings, config, records, site)
    except (KLGuardError, KLGuardWarning):
        # Raise mode's error, or a warning the user's filters made an error
        # (``-W error``): both are meant for the user.
        raise
    except Exception as exc:
        internal_error(exc)


def _warn_at(finding: Finding, site: CallSite | None) -> None:
    category = WARNING_CATEGORIES[finding.code]
    if site is None:
        warnings.warn(finding.message, category, stacklevel=2)
        return
    # warn_explicit at the user's line is what warnings.warn(stacklevel=n)
    # does internally, without counting frames through torch and wrapt; it
    # also works for a finding read back later (CUDA), off the user's stack.
    globals_ = site.module_globals
    # The module's loader finds the source line for the warning's display;
    # ``python -c``'s __main__ names a loader that refuses (an ImportError).
    loader = globals_.get("__loader__")
    sourced = not (isinstance(loader, type) and loader.__name__ == "BuiltinImporter")
    warnings.warn_explicit(
        finding.message,
        category,
        site.filename,
        site.lineno,
        module=globals_.get("__name__", "<unknown>"),
        registry=globals_.setdefault("__warningregistry__", {}),
        module_globals=globals_ if sourced else None,
    )


_failure_lock = _locks.Lock()
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
            "kl_guard failed while checking a loss call or reporting a finding, and skipped "
            "that step; the program's results are unaffected. Please report this. (%s: %s)",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )


def safely(step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """``step(*args, **kwargs)``, or None after an internal error is said once.

    The one way kl_guard runs its own part of a user's call: whatever fails
    in kl_guard skips that check, and the user's call goes on untouched.
    """
    try:
        return step(*args, **kwargs)
    except Exception as exc:
        internal_error(exc)
        return None


def reset_internal_error() -> None:
    global _failure_said
    with _failure_lock:
        _failure_said = False

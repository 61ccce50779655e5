"""Every Python process of ``python -m kl_guard run``'s program: guarded, and its record
written when it starts and when it ends.

The start-up hook (``_hook/sitecustomize.py``) calls :func:`start` in every
Python process the runner starts: the program, and each Python child of it.
Nothing happens until the process imports torch (one that never does pays
nothing and imports no torch); then a guard with the run's settings starts. A process forked from a
guarded one (``multiprocessing``'s fork and forkserver, ``os.fork()``, a
DataLoader worker) keeps the guard it inherits and becomes a process of the
run itself: its record counts only what it did after the fork.

A process writes a first record when it starts, and its whole record when it
ends: at exit, at ``multiprocessing``'s exit of a child (which ends with
``os._exit``, no ``atexit``), or at a SIGTERM (``Pool.terminate()``). Each new
finding is written at once, so one killed outright, or ended by ``os._exit``
outside ``multiprocessing``, keeps its findings, and the summary says what is
missing.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from kl_guard import _processes
from kl_guard._findings import Counts, Finding

if TYPE_CHECKING:  # imported at start-up: torch only once the program imports it
    from kl_guard._lifecycle import Guard


def start() -> None:
    """Guard this process once it imports torch, when a runner started it."""
    settings = _processes.settings()
    if settings is not None:
        sys.meta_path.insert(0, _AfterTorch(settings))


class _AfterTorch(importlib.abc.MetaPathFinder):
    """Starts the guard right after ``import torch`` has run, then leaves ``sys.meta_path``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is None:
            return spec
        run = loader.exec_module
        settings = self.settings

        def exec_module(module: ModuleType) -> None:
            run(module)
            try:
                from kl_guard._lifecycle import Guard

                guard = Guard(settings["mode"], **settings["options"])
                guard.start()
                follow(guard, settings["folder"])
            except Exception as exc:  # never break the program's import of torch: say it
                print(f"kl_guard: process {os.getpid()} is not guarded: {exc}", file=sys.stderr)

        setattr(loader, "exec_module", exec_module)  # noqa: B010  # this loader, this import
        return spec


class Part:
    """This process's part of the run: its guard, what it inherited, and its record."""

    def __init__(self, guard: Guard, folder: str) -> None:
        self.guard = guard
        self.folder = folder
        self.pid = os.getpid()
        self.inherited: tuple[Counts, dict[tuple[str, str], int]] = (Counts(), {})
        self.ended = False
        #: A SIGTERM came while the whole record was being written: it ends the
        #: process once the record is written (``Pool.terminate()`` races a
        #: worker's own exit).
        self.terminated = False
        self.written = False
        #: The descriptor of the lock that says this process is alive (``_processes.hold``)
        self.lock: int | None = None

    def after_fork(self) -> None:
        """In a forked child: start this process's own record from what it inherited."""
        self.pid = os.getpid()
        self.ended = self.written = self.terminated = False
        from kl_guard import _deferred

        _deferred.forget()  # the parent's pending checks: the parent reports them
        findings = self.guard.findings
        self.inherited = (self.guard.counts, {(f.location, f.code): f.count for f in findings})
        if self.lock is not None:
            os.close(self.lock)  # the parent's lock file: the child holds no lock on it
        self.lock = _processes.hold(self.folder)
        _finish_at_sigterm()
        self.guard.on_new_finding(self.wrote_finding)
        _say_failure(self.write, complete=False)

    def wrote_finding(self) -> None:
        """A new finding goes into the record at once: a process killed later keeps it."""
        if not self.ended and os.getpid() == self.pid:
            _say_failure(self.write, complete=False)

    def write(self, *, complete: bool) -> None:
        counts, seen = self.inherited
        findings = []
        for f in self.guard.findings:
            count = f.count - seen.get((f.location, f.code), 0)
            if count > 0:
                findings.append(dataclasses.replace(f, count=count))
        process = _processes.Process(
            self.pid,
            _rank(findings),
            tuple(sys.argv),
            self.guard.counts - counts,
            tuple(findings),
            complete,
        )
        _processes.write(self.folder, process)

    def finish(self) -> None:
        """Write the whole record, once, in the process it belongs to."""
        if self.ended or os.getpid() != self.pid:
            return
        self.ended = True
        _say_failure(self.write, complete=True)
        self.written = True
        if self.terminated:
            _terminate()


#: This process's part, while it is one of a run's.
_PART: Part | None = None


def follow(guard: Guard, folder: str) -> Part:
    """Make ``guard`` this process's part of the run in ``folder``; its forks follow it."""
    import multiprocessing.util

    global _PART
    part = _PART = Part(guard, folder)
    part.lock = _processes.hold(folder)
    guard.on_new_finding(part.wrote_finding)
    _say_failure(part.write, complete=False)
    _finish_at_sigterm()
    _at_multiprocessing_exit(part)
    if sys.excepthook is sys.__excepthook__:  # the program set none of its own
        sys.excepthook = _report_uncaught
    # multiprocessing forgets its exit functions in each child it starts, then calls
    # these: a record for a child it forks, or spawns (torch imported before its start)
    multiprocessing.util.register_after_fork(part, _at_multiprocessing_exit)
    _HOOKS.once()
    return part


def _finish() -> None:
    if _PART is not None:
        _PART.finish()


def _at_multiprocessing_exit(part: Part) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, part.finish, exitpriority=0)


def _after_fork() -> None:
    if _PART is not None and not _PART.ended:
        _PART.after_fork()


class _Hooks:
    """The process-wide hooks, set once per process (``os.register_at_fork`` has no undo)."""

    done = False

    def once(self) -> None:
        if not self.done:
            os.register_at_fork(after_in_child=_after_fork)
            atexit.register(_finish)
            self.done = True


_HOOKS = _Hooks()


def _say_failure(write: Callable[..., None], *, complete: bool) -> None:
    try:
        write(complete=complete)
    except Exception as exc:  # at start, at exit, in a signal handler: say it, never raise
        print(f"kl_guard: process {os.getpid()} could not write its record: {exc}", file=sys.stderr)


def _rank(findings: Sequence[Finding]) -> int | None:
    """This process's rank: torchrun's ``RANK``, else torch.distributed's, else its findings'."""
    rank = os.environ.get("RANK", "")
    if rank.isdigit():
        return int(rank)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return next((f.rank for f in findings if f.rank is not None), None)


def _finish_at_sigterm() -> None:
    """Write the record before a SIGTERM ends the process, where nobody else handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, _at_sigterm):
        return
    signal.signal(signal.SIGTERM, _at_sigterm)


def _at_sigterm(signum: int, frame: FrameType | None) -> None:
    part = _PART
    if part is not None and part.ended and not part.written and os.getpid() == part.pid:
        part.terminated = True  # the record is being written: the process ends after it
        return
    _finish()
    _terminate()


def _terminate() -> None:
    """End this process as the SIGTERM it was sent would have."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _report_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """Python's own report of an error that ends the process, without kl_guard's frames:
    its wrappers sit between the program's line and torch (a ``KLGuardError`` is raised
    there)."""
    report = traceback.TracebackException(kind, error, trace)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not frame.filename.startswith(_PACKAGE)]
    )
    print("".join(report.format()), end="", file=sys.stderr)

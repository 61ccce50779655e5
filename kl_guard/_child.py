"""Every Python process of ``python -m kl_guard run``'s program: guarded, and its record
written when it starts and when it ends.

The start-up hook (``_hook/sitecustomize.py``) calls :func:`start` in every
Python process the runner starts: the program, and each Python child of it.
Nothing happens until the process imports torch (one that never does pays
nothing and imports no torch); then a guard with the run's settings starts.
A process forked from a guarded one (``multiprocessing``'s fork and
forkserver, ``os.fork()``, a DataLoader worker) keeps the guard it inherits
and becomes a process of the run itself: its record counts only what it did
after the fork.

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
import secrets
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from kl_guard import _locks, _processes
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
        self._writing = _locks.Lock()  # one write at a time (threads, exit, SIGTERM)
        self._start()

    def _start(self) -> None:
        self.pid = os.getpid()
        #: The record's name: the pid alone may come again (``os.exec*``, a reused pid).
        self.name = f"{self.pid}-{secrets.token_hex(4)}"
        self.inherited: tuple[Counts, dict[tuple[str, str], int]] = (Counts(), {})
        self.written: set[tuple[str, str]] = set()  # (location, code) in the record
        self.ended = False
        #: The rank torch.distributed gave this process, kept past destroy_process_group().
        self.rank: int | None = None
        #: The lock that says this process is alive (``_processes.hold``).
        self.lock = _processes.hold(self.folder, self.name)

    def after_fork(self) -> None:
        """In a forked child: start this process's own record from what it inherited."""
        from kl_guard import _deferred, _lifecycle

        if self.lock is not None:
            os.close(self.lock)  # the parent's lock file: the child holds no lock on it
        self._start()
        _deferred.forget()  # the parent's pending checks: the parent reports them
        findings, counts = _lifecycle.recorded(self.guard)
        self.inherited = (counts, {(f.location, f.code): f.count for f in findings})
        _write_safely(self, complete=False)

    def recorded(self, finding: Finding) -> None:
        """Each (location, code) goes into the record the first time this process records
        it: a process killed later keeps its findings."""
        if (finding.location, finding.code) not in self.written and os.getpid() == self.pid:
            _write_safely(self, complete=False)

    def write(self, *, complete: bool) -> None:
        from kl_guard import _lifecycle

        with self._writing:
            if self.ended and not complete:
                return
            recorded, total = _lifecycle.recorded(self.guard)  # no wait for deferred checks
            counts, inherited = self.inherited
            findings = []
            for f in recorded:
                count = f.count - inherited.get((f.location, f.code), 0)
                if count > 0:
                    findings.append(dataclasses.replace(f, count=count))
            process = _processes.Process(
                self.pid,
                self.rank_now(findings),
                tuple(sys.argv),
                total - counts,
                tuple(findings),
                complete,
                self.name,
            )
            _processes.write(self.folder, process)
            self.written = {(f.location, f.code) for f in findings}

    def rank_now(self, findings: Sequence[Finding]) -> int | None:
        """This process's rank: torchrun's ``RANK``, else torch.distributed's (kept
        once seen), else its findings'."""
        rank = os.environ.get("RANK", "")
        if rank.isdigit():
            return int(rank)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.rank = int(dist.get_rank())
        if self.rank is not None:
            return self.rank
        return next((f.rank for f in findings if f.rank is not None), None)

    def finish(self) -> None:
        """Write the whole record, once, in the process it belongs to."""
        if self.ended or os.getpid() != self.pid:
            return
        from kl_guard import _deferred

        _deferred.drain(block=True)  # the checks still waiting for their numbers
        _write_safely(self, complete=True)
        self.ended = True
        if _TERMINATED:  # a SIGTERM came while this was written: it ends the process now
            os.kill(os.getpid(), signal.SIGTERM)


#: This process's part, while it is one of a run's.
_PART: Part | None = None


def follow(guard: Guard, folder: str) -> Part:
    """Make ``guard`` this process's part of the run in ``folder``; its forks follow it."""
    import multiprocessing.util

    from kl_guard import _lifecycle

    global _PART
    part = _PART = Part(guard, folder)
    _lifecycle.on_record(guard, part.recorded)
    _write_safely(part, complete=False)
    _finish_at_sigterm()
    _at_multiprocessing_exit(part)
    # multiprocessing forgets its exit functions in each child it starts, then calls
    # these: a record for a child it forks, or spawns (torch imported before its start)
    multiprocessing.util.register_after_fork(part, _at_multiprocessing_exit)
    if not _HOOKED:
        _hook_process()
        _keep_rank_past_destroy()
    if sys.excepthook is sys.__excepthook__:  # the program set none of its own
        sys.excepthook = _report_uncaught
    return part


def _keep_rank_past_destroy() -> None:
    """Read the rank before ``torch.distributed.destroy_process_group()`` forgets it:
    a program that ends its group (as torch asks) is still labelled by rank."""
    import torch.distributed as dist
    import wrapt

    if not dist.is_available():
        return

    def before(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _PART is not None and not _PART.ended and dist.is_initialized():
            _write_safely(_PART, complete=False)  # reads the rank, keeps it, records it
        return wrapped(*args, **kwargs)

    try:
        wrapt.wrap_function_wrapper(dist, "destroy_process_group", before)
    except (AttributeError, TypeError):  # no such function here: labels fall back to pids
        return


def _finish() -> None:
    if _PART is not None:
        _PART.finish()


def _at_multiprocessing_exit(part: Part) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, part.finish, exitpriority=0)


def _after_fork() -> None:
    if _PART is not None and not _PART.ended:
        _PART.after_fork()


_HOOKED: list[bool] = []


def _hook_process() -> None:
    """The process-wide hooks, set once (``os.register_at_fork`` has no undo)."""
    _locks.after_fork(_after_fork)  # after _locks' own hook (its import): the locks are free
    if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
        os.register_at_fork(
            before=_hold_sigterm, after_in_parent=_release_sigterm, after_in_child=_release_sigterm
        )
    atexit.register(_finish)
    _HOOKED.append(True)


class _Fork(threading.local):
    #: the forking thread's signal mask before the fork, while SIGTERM is held over it
    mask: set[int | signal.Signals] | None = None


_FORK = _Fork()


def _hold_sigterm() -> None:
    """Hold SIGTERM over a fork while kl_guard's handler takes it. A child's Python
    drops the signals that arrive before it has reset their state after the fork: a
    SIGTERM that ``Pool.terminate()`` sends to a worker just forked would be lost, and
    the worker, whose handler is Python's, would live on (and the pool's join hang).
    Held, it stays pending, and the child takes it once it can."""
    if signal.getsignal(signal.SIGTERM) is _at_sigterm:
        _FORK.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _release_sigterm() -> None:
    mask, _FORK.mask = _FORK.mask, None
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _write_safely(part: Part, *, complete: bool) -> None:
    try:
        part.write(complete=complete)
    except Exception as exc:  # at start, at exit, at a finding: say it, never raise
        print(f"kl_guard: process {os.getpid()} could not write its record: {exc}", file=sys.stderr)


def _finish_at_sigterm() -> None:
    """Write the record before a SIGTERM ends the process, where nobody else handles it
    (``Pool.terminate()``)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _at_sigterm)


#: A SIGTERM came: the process ends once its whole record is written.
_TERMINATED: list[bool] = []


def _at_sigterm(signum: int, frame: FrameType | None) -> None:
    # The interrupted code may hold a lock the record needs (or be writing it): a
    # thread writes it and ends the process, while this one carries on meanwhile.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    _TERMINATED.append(True)
    threading.Thread(target=_finish_then_end, name="kl_guard-sigterm", daemon=True).start()


def _finish_then_end() -> None:
    try:
        _finish()
    finally:  # whatever went wrong, the SIGTERM still ends the process
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

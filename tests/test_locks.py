"""Fork-safe locks: free in a forked child whichever thread held them at the fork."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kl_guard
from kl_guard import _check, _child, _compiled, _locks, _patch, _policy, _recorder, _reporting

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the system cannot fork")
# Python 3.12+ warns at a fork while other threads run: here they are the point.
threads_at_fork = pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")


def in_a_forked_child(test: Callable[[], bool]) -> bool:
    """Whether ``test()`` holds in a child forked from here; the child says it by its exit
    status and never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        status = 2  # test() raised
        try:
            status = 0 if test() else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@contextlib.contextmanager
def held_by_another_thread(lock: _locks.Lock, times: int = 1) -> Iterator[None]:
    """``lock`` taken ``times`` times by another thread, which lets go on leaving."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for _ in range(times):
                stack.enter_context(lock)
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()


@needs_fork
@threads_at_fork
def test_a_lock_another_thread_holds_at_a_fork_is_free_in_the_child() -> None:
    lock = _locks.Lock()
    with held_by_another_thread(lock):
        assert in_a_forked_child(lambda: lock.acquire(timeout=5))
        assert not lock.acquire(blocking=False)  # the parent's stays held, by its thread
    with lock:  # and is free once that thread lets go
        pass


@needs_fork
@threads_at_fork
def test_a_reentrant_lock_held_at_a_fork_is_free_in_the_child() -> None:
    lock = _locks.Lock(reentrant=True)
    with held_by_another_thread(lock, times=2):
        assert in_a_forked_child(lambda: lock.acquire(timeout=5) and lock.acquire(timeout=5))


def test_a_free_lock_stays_usable_in_the_child() -> None:
    lock = _locks.Lock()

    def twice() -> bool:
        with lock:
            pass
        return lock.acquire(timeout=5)

    assert in_a_forked_child(twice)


def test_the_locks_of_checks_findings_and_records_are_fork_safe(tmp_path: Path) -> None:
    part = _child.Part(kl_guard.Guard(), str(tmp_path))
    if part.lock is not None:
        os.close(part.lock)
    locks = {
        "_check._CALLS_LOCK": _check._CALLS_LOCK,
        "_recorder._lock": _recorder._lock,
        "_reporting._failure_lock": _reporting._failure_lock,
        "_reporting.Record": _reporting.Record()._lock,
        "_policy.ScheduleTable": _policy.ScheduleTable()._lock,
        "_child.Part": part._writing,
        "_patch.Patch": _patch.Patch().lock,
        "_compiled._TraceReports": _compiled._TraceReports().lock,
        "_compiled._TracedCalls": _compiled._TracedCalls().lock,
    }
    assert {name for name, lock in locks.items() if not isinstance(lock, _locks.Lock)} == set()


def test_a_lock_goes_with_its_owner() -> None:
    lock = _locks.Lock()
    gone = weakref.ref(lock)
    del lock
    assert gone() is None


def test_a_hook_is_registered_only_where_the_system_can_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[dict[str, Callable[[], None]]] = []
    monkeypatch.setattr(os, "register_at_fork", lambda **hooks: registered.append(hooks))

    def renew() -> None:
        pass

    _locks.after_fork(renew)
    assert registered == [{"after_in_child": renew}]
    monkeypatch.delattr(os, "register_at_fork")  # as on Windows
    _locks.after_fork(renew)
    assert len(registered) == 1

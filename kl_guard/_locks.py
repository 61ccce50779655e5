"""Locks that a forked child finds free, whichever thread held them at the fork.

A child of ``os.fork()`` (``multiprocessing``'s fork and forkserver, a
DataLoader worker) has only the thread that forked: a lock another thread
held at that moment would stay held in the child for good, and the child's
next check, finding or record would hang on it. Each lock those take is a
:class:`Lock`, and one hook, registered here once, gives every one still alive
a new lock in the child. Standard library only: the start-up hook's ``_child``
imports it before torch.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable


class Lock:
    """A ``threading.Lock`` (``with``, ``acquire``, ``release``) that is free in a forked child;
    a ``threading.RLock`` where ``reentrant``.

    The thread that forks must hold none: kl_guard neither forks nor runs the
    program's code while it holds one, so only another thread can.
    """

    __slots__ = ("_lock", "_new", "__weakref__")

    def __init__(self, *, reentrant: bool = False) -> None:
        self._new: Callable[[], threading.Lock | threading.RLock] = (
            threading.RLock if reentrant else threading.Lock
        )
        self._lock = self._new()
        _LIVE.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


# Weak: a lock goes with its owner (a guard's record, a process's part).
_LIVE: weakref.WeakSet[Lock] = weakref.WeakSet()


def after_fork(renew: Callable[[], None]) -> None:
    """Call ``renew`` in each child forked from this process; nowhere where the system
    cannot fork (Windows has no ``os.register_at_fork``)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=renew)


def _renew() -> None:
    for lock in _LIVE:
        lock._lock = lock._new()


after_fork(_renew)

"""A child process of ``python -m kl_guard run``: guarded from torch's import on, its record
written when it ends.

The start-up hook (``_hook/sitecustomize.py``) calls :func:`start` in every
Python process the runner's program starts. Nothing happens until the
process imports torch (a child that never does pays nothing and imports no
torch); then a guard with the run's settings starts, and at exit, or at a
SIGTERM (``multiprocessing.Pool``'s ``terminate()``), the process writes its
findings and counts where the runner collects them (``_processes``).
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType
from typing import Any

from kl_guard import _processes


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
            _begin(settings)

        setattr(loader, "exec_module", exec_module)  # noqa: B010  # this loader, this import
        return spec


def _begin(settings: dict[str, Any]) -> None:
    from kl_guard._lifecycle import Guard
    from kl_guard._processes import Process

    guard = Guard(settings["mode"], **settings["options"])
    guard.start()
    pid, folder = os.getpid(), settings["folder"]

    def finish() -> None:
        # A forked child inherits this: its record would repeat the parent's.
        if os.getpid() != pid or not guard.active:
            return
        try:
            findings = guard.findings
            guard.stop()
            process = Process(pid, _rank(findings), tuple(sys.argv), guard.counts, tuple(findings))
            _processes.write(folder, process)
        except Exception as exc:  # at exit: say it, never raise
            print(f"kl_guard: process {pid} could not write its record: {exc}", file=sys.stderr)

    atexit.register(finish)
    _finish_at_sigterm(finish)


def _rank(findings: Sequence[Any]) -> int | None:
    """This process's rank: torchrun's ``RANK``, else torch.distributed's, else its findings'."""
    rank = os.environ.get("RANK", "")
    if rank.isdigit():
        return int(rank)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return next((f.rank for f in findings if f.rank is not None), None)


def _finish_at_sigterm(finish: Callable[[], None]) -> None:
    """Write the record before a SIGTERM ends the process, where nobody else handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        finish()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)

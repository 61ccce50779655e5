"""``python -m kl_guard run``: a program run under a guard, then a summary of its findings.

The runner supervises, as ``torchrun`` does, and hosts nothing: it starts the
program as ``python [-m] target args`` with the run's environment
(``_processes.followed``), so the program's process is guarded like every
other Python process of the job (``_child``), and a program that ends by
``os._exit``, or that a framework kills (Lightning's ``ddp`` SIGKILLs its main
process when a rank fails), still gets its summary. The runner imports no
torch. However the program ends, the summary is printed to stderr and the
optional JSON report is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

from kl_guard import _processes
from kl_guard._config import Mode, configure, default_config
from kl_guard._findings import Counts, Finding, to_dict
from kl_guard._summary import job_summary

JSON_VERSION = 1


class NotFound(LookupError):
    """The script or module to run does not exist: a usage error, not the program's."""


def run(
    target: str,
    args: Sequence[str],
    *,
    module: bool,
    mode: Mode,
    options: Mapping[str, Any],
    json_path: str | None = None,
) -> int:
    """Run ``target`` with every Python process guarded by ``mode`` and ``options``; its exit
    status.

    Raises :class:`NotFound` before anything runs when ``target`` is missing.
    """
    configure(default_config(), mode, **options)  # a bad option fails before the program runs
    if module:
        _find(target)
    else:
        target = _script(target)
    # The program may chdir; the report goes where the command line meant.
    report = os.path.abspath(json_path) if json_path is not None else None
    rank = _launched_rank()
    if rank is not None and report is not None:  # each rank its own report, none lost
        root, ext = os.path.splitext(report)
        report = f"{root}.rank{rank}{ext}"
    program = ["-m", target] if module else [target]
    with _processes.followed(mode.value, options) as folder:
        status = _supervise([sys.executable, *_interpreter_flags(), *program, *args])
        processes = _children(folder)
    found, counts = _processes.combined(processes)
    sys.stdout.flush()
    if mode is Mode.RAISE and found and status == 0:
        # A KLGuardError that the program, a framework or a compiler caught,
        # or that ended a child whose failure its parent ignored, must not
        # turn into a clean exit.
        print(_SWALLOWED, file=sys.stderr)
        status = 1
    of = (
        f"mode={mode}"
        if rank is None
        else f"mode={mode}, rank {rank} of {os.environ['WORLD_SIZE']}"
    )
    lines = job_summary(found, counts, processes, of)
    if rank == 0:
        lines.insert(1, f"  {_ONE_PER_RANK}")
    print("\n".join(lines), file=sys.stderr)
    if report is not None:
        try:
            write_json(report, found, counts, processes, mode.value, status)
        except OSError as exc:
            print(f"kl_guard: could not write the JSON report: {exc}", file=sys.stderr)
            return status or 2
    return status


#: How long the runner waits for children still writing their records (a launcher
#: that does not wait for its ranks, such as Lightning's ddp).
WAIT = 30.0


def _children(folder: str) -> list[_processes.Process]:
    """The processes' records, once each is whole or its process has ended (``WAIT`` at
    most, or until Ctrl-C)."""
    start = time.monotonic()
    told = False
    try:
        while time.monotonic() - start < WAIT:
            waiting = _waiting(folder)
            if not waiting:
                break
            if not told and time.monotonic() - start > 1:
                pids = ", ".join(str(p.pid) for p in waiting)
                print(f"kl_guard: waiting up to {WAIT:.0f} s for process {pids}", file=sys.stderr)
                told = True
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass  # the summary of what there is
    running = {p.name for p in _waiting(folder)}
    # read after the locks: a record written just before its lock went is whole
    return [
        dataclasses.replace(p, running=True) if p.name in running else p
        for p in _processes.collect(folder)
    ]


def _waiting(folder: str) -> list[_processes.Process]:
    return [
        p
        for p in _processes.collect(folder)
        if not p.complete and _processes.running(folder, p.name)
    ]


def _launched_rank() -> int | None:
    """This runner's rank when a launcher started one runner per rank
    (``torchrun -m kl_guard run train.py``), else None."""
    if _processes.settings() is not None:  # a runner's child: that runner sums up
        return None
    rank, world = os.environ.get("RANK", ""), os.environ.get("WORLD_SIZE", "")
    if rank.isdigit() and world.isdigit() and int(world) > 1:
        return int(rank)
    return None


_ONE_PER_RANK = (
    "one summary per rank (the launcher started kl_guard in each); "
    "`python -m kl_guard run torchrun ...` sums up the whole job in one"
)


def _script(target: str) -> str:
    """The script to run: a file, else a Python console script on PATH (``torchrun``),
    run as ``python /path/to/torchrun`` would run it."""
    if os.path.exists(target):
        return target
    # PATH first, then the scripts folder of this interpreter (an environment not activated)
    found = shutil.which(target) or shutil.which(target, path=sysconfig.get_path("scripts"))
    if found is not None:
        with open(found, "rb") as file:
            first = file.readline()
        if first.startswith(b"#!") and b"python" in first:
            return found
    raise NotFound(f"can't open file {target!r}: no such file or directory")


def _find(target: str) -> None:
    """Fail now if ``python -m target`` would find no module (its ``sys.path[0]``: here)."""
    path = sys.path[:]
    sys.path[0:1] = [os.getcwd()]
    try:
        spec = importlib.util.find_spec(target)
    except ModuleNotFoundError as exc:
        # Only a missing package on the way to ``target`` means "not found";
        # a package that fails to import one of its own dependencies is the
        # program's error, reported when it runs.
        if exc.name is None or not f"{target}.".startswith(f"{exc.name}."):
            return
        spec = None
    finally:
        sys.path[:] = path
    if spec is None:
        raise NotFound(f"no module named {target!r}")


def _interpreter_flags() -> list[str]:
    """The options of this interpreter that the program's should share (``-W``, ``-X``,
    ``-O``, ``-B``), not ``-E``/``-I``/``-s``, which would drop the run's hook."""
    flags = [f"-W{option}" for option in sys.warnoptions]
    flags += [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
    if sys.flags.optimize:
        flags.append("-" + "O" * sys.flags.optimize)
    if sys.flags.dont_write_bytecode:
        flags.append("-B")
    return flags


def _supervise(argv: list[str]) -> int:
    """Run ``argv`` to its end; its exit status, a signal's as a shell gives it (128 + N).

    Ctrl-C reaches the program from the terminal (one process group): the
    runner waits for it to end. A SIGTERM sent to the runner alone (a scheduler,
    ``docker stop``) is passed on.
    """
    program = subprocess.Popen(argv)
    with _passing_on(signal.SIGTERM, program):
        while True:
            try:
                code = program.wait()
                break
            except KeyboardInterrupt:
                continue
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _passing_on(signum: signal.Signals, program: subprocess.Popen[bytes]) -> Iterator[None]:
    def pass_on(received: int, frame: FrameType | None) -> None:
        program.send_signal(received)

    try:
        previous = signal.signal(signum, pass_on)
    except ValueError:  # not the main thread (a test): nothing to pass on
        yield
        return
    try:
        yield
    finally:
        signal.signal(signum, previous)


_SWALLOWED = (
    "kl_guard: a finding was recorded in raise mode but the program went on "
    "(its KLGuardError was caught, by the program, a framework or a compiler); exit status 1"
)


def write_json(
    path: str,
    found: Sequence[Finding],
    counts: Counts,
    processes: Sequence[_processes.Process],
    mode: str,
    status: int,
) -> None:
    """The run's JSON report (README, "The JSON report"); ``merge`` writes the same."""
    report = {
        "version": JSON_VERSION,
        "mode": mode,
        "findings": [to_dict(f) for f in found],
        "calls": to_dict(counts),
        "processes": [
            {
                "pid": p.pid,
                "rank": p.rank,
                "argv": list(p.argv),
                "calls": to_dict(p.counts),
                "findings": len(p.findings),
                "complete": p.complete,
                "running": p.running,
            }
            for p in processes
        ],
        "exit_status": status,
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
        file.write("\n")

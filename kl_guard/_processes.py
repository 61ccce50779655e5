"""The processes of one ``python -m kl_guard run``: the environment that follows its children,
each process's record, and the records combined.

The runner names a folder and its settings in ``KL_GUARD_RUN`` and puts the
start-up hook (``kl_guard/_hook/sitecustomize.py``) first on
``PYTHONPATH``; every Python child inherits both, and each writes its record
there, one JSON file (``<pid>-<token>.json``), when it starts, at each new
finding, and whole when it ends (``_child``), and holds a lock while it lives.
The runner then reads them all, as ``coverage combine`` reads its data files.
Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kl_guard._findings import (
    Counts,
    Finding,
    counts_from_dict,
    finding_from_dict,
    merged,
    to_dict,
)

if sys.platform != "win32":
    import fcntl

#: The run's settings and folder, as JSON: what makes a child start kl_guard.
ENV = "KL_GUARD_RUN"
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hook")


@dataclasses.dataclass(frozen=True)
class Process:
    """What one process of the run saw."""

    pid: int
    rank: int | None
    argv: tuple[str, ...]
    counts: Counts
    findings: tuple[Finding, ...]
    #: False for a process that started but was ended before it wrote its whole
    #: record (killed, or ``os._exit`` outside ``multiprocessing``)
    complete: bool = True
    #: The record's name in the run's folder (``<pid>-<token>``)
    name: str = ""
    #: Still running when the runner gave up waiting for its whole record
    running: bool = False
    #: The report it came from, where ``merge`` joined several nodes' (pids repeat across nodes)
    node: str = ""

    def label(self) -> str:
        if self.rank is not None:
            return f"rank {self.rank}"
        return f"pid {self.pid} on {self.node}" if self.node else f"pid {self.pid}"


@contextlib.contextmanager
def followed(mode: str, options: Mapping[str, Any]) -> Iterator[str]:
    """The environment that guards every Python child, while the program runs; the folder."""
    folder = tempfile.mkdtemp(prefix="kl_guard-")
    settings = {
        "mode": mode,
        "options": {k: sorted(v) if isinstance(v, frozenset) else v for k, v in options.items()},
        "folder": folder,
    }
    saved = {name: os.environ.get(name) for name in (ENV, "PYTHONPATH")}
    os.environ[ENV] = json.dumps(settings)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HOOK, saved["PYTHONPATH"]]))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def settings() -> dict[str, Any] | None:
    """This process's settings when a runner started it, else None."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def as_record(process: Process) -> dict[str, Any]:
    """``process`` as plain data: its record in a run's folder, or what a rank sends rank zero."""
    return {
        "pid": process.pid,
        "rank": process.rank,
        "argv": list(process.argv),
        "calls": to_dict(process.counts),
        "findings": [to_dict(f) for f in process.findings],
        "complete": process.complete,
    }


def write(folder: str, process: Process) -> None:
    """Write ``process``'s record in ``folder``, whole or not at all (a rename)."""
    record = as_record(process)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{process.name}.", suffix=".tmp")
    with open(fd, "w", encoding="utf-8") as file:
        json.dump(record, file)
    os.replace(temporary, os.path.join(folder, f"{process.name}.json"))


def hold(folder: str, name: str) -> int | None:
    """Lock ``<name>.lock`` in ``folder`` for the rest of this process's life; its descriptor.

    The system lets go of the lock when the process ends, however it ends
    (SIGKILL included), and a forked child does not inherit it: the runner
    asks :func:`running` whether a process that has not written its whole
    record is still at it.
    """
    if sys.platform == "win32":  # no fork, no lockf: the runner does not wait
        return None
    try:
        fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:  # the folder is gone: the runner is no longer waiting
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file of its own
    except OSError:  # no locks on this file system (ENOLCK): the runner does not wait
        os.close(fd)
        return None
    return fd


def running(folder: str, name: str) -> bool:
    """Whether the process of record ``name`` still holds its lock (see :func:`hold`)."""
    if sys.platform == "win32":
        return False
    try:
        fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # EAGAIN or EACCES: another process holds it
        return True
    finally:
        os.close(fd)  # and with it, a lock this process got
    return False


def collect(folder: str) -> list[Process]:
    """The records in ``folder``, by rank, then by process id; one that cannot be read is
    said on stderr and left out."""
    processes = []
    for entry in sorted(os.listdir(folder)):
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, entry), encoding="utf-8") as file:
                processes.append(from_record(entry[: -len(".json")], json.load(file)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"kl_guard: the record {entry} could not be read: {exc!r}", file=sys.stderr)
    return sorted(processes, key=lambda p: (p.rank is None, p.rank or 0, p.pid))


def from_record(name: str, record: dict[str, Any]) -> Process:
    """The process :func:`as_record` made, named ``name``; a finding without a rank takes
    its process's."""
    rank = record["rank"]
    return Process(
        pid=record["pid"],
        rank=rank,
        argv=tuple(record["argv"]),
        counts=counts_from_dict(record["calls"]),
        findings=tuple(
            dataclasses.replace(f, rank=rank if f.rank is None else f.rank)
            for f in map(finding_from_dict, record["findings"])
        ),
        complete=record.get("complete", True),
        name=name,
    )


def combined(processes: Sequence[Process]) -> tuple[list[Finding], Counts]:
    """Every process's findings, one per (location, code, rank) with the counts added."""
    total = sum((process.counts for process in processes), Counts())
    return merged(f for process in processes for f in process.findings), total

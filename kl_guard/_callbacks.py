"""What the framework callbacks share, knowing no framework: a guard over a fit, the findings
new since the last look, every rank's findings gathered, and the summary at the end.

A callback (``kl_guard.lightning``, ``kl_guard.transformers``) owns one :class:`Watch`. Its
guard records on every rank; rank zero tells the loggers at once what it finds itself, and
what the other ranks found where all ranks meet anyway (an epoch's end, the end of the fit):
``torch.distributed.all_gather_object``, once there, never per step.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from kl_guard._config import Config, Mode
from kl_guard._findings import Counts, Finding, finding_from_dict, to_dict
from kl_guard._lifecycle import Guard, on_record
from kl_guard._processes import Process, as_record, combined, from_record
from kl_guard._summary import job_summary

Key = tuple[str, str, "int | None"]

#: The metric prefix: ``kl_guard/KLG001`` counts the call sites (per rank) with KLG001.
PREFIX = "kl_guard/"


def _key(finding: Finding) -> Key:
    return (finding.location, finding.code, finding.rank)


class Watch:
    """One callback's guard, what it found, and what the loggers were told."""

    def __init__(self, mode: Mode | str | None, config: Config | None, options: dict[str, Any]):
        # Codes given as an iterator are read once, here: each start reads them again.
        options = {
            k: v if k not in ("select", "ignore") or v is None or isinstance(v, str) else tuple(v)
            for k, v in options.items()
        }
        Guard(mode, config=config, **options)  # a bad option fails where the callback is built
        self._settings = (mode, config, options)
        self.guard: Guard | None = None
        self._lock = threading.Lock()
        self._fresh: collections.deque[Finding] = collections.deque()
        self._queued: set[Key] = set()  # this process's findings, each queued once
        self._told: set[Key] = set()  # what the loggers were told (rank zero)
        self._per_code: collections.Counter[str] = collections.Counter()

    def __getstate__(self) -> dict[str, Any]:
        # Lightning's ddp_spawn pickles the callbacks into each rank: settings only.
        return {"_settings": self._settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["_settings"])  # type: ignore[misc]

    def start(self) -> None:
        """Start a fresh guard; one left running (a fit that raised) is stopped first."""
        self.stop()
        mode, config, options = self._settings
        self.guard = Guard(mode, config=config, **options)
        self.guard.start()
        on_record(self.guard, self._queue)

    def stop(self) -> None:
        if self.guard is not None:
            self.guard.stop()

    @property
    def mode(self) -> Mode:
        config = self.guard.config if self.guard is not None else None
        return config.mode if config is not None else Mode.WARN

    def _queue(self, finding: Finding) -> None:
        # Called at every finding recorded, from any thread (deferred checks): each
        # (location, code, rank) is queued once.
        with self._lock:
            if _key(finding) in self._queued:
                return
            self._queued.add(_key(finding))
        self._fresh.append(finding)

    def new_here(self) -> list[Finding]:
        """This process's findings since the last look."""
        taken = []
        while self._fresh:
            taken.append(self._fresh.popleft())
        return taken

    def tell(self, findings: Iterable[Finding]) -> tuple[dict[str, float], list[Finding]]:
        """Of ``findings``, those the loggers were not told yet, and the metrics that count
        them: ``kl_guard/<code>``, the call sites with that code so far."""
        fresh = []
        for finding in findings:
            if _key(finding) not in self._told:
                self._told.add(_key(finding))
                self._per_code[finding.code] += 1
                fresh.append(finding)
        codes = sorted({f.code for f in fresh})
        return {f"{PREFIX}{code}": float(self._per_code[code]) for code in codes}, fresh

    def entries(
        self, found: Sequence[Finding], summary: tuple[Counts, list[str]] | None = None
    ) -> tuple[dict[str, float], dict[str, str]]:
        """What a logger gets of ``found`` (and at the end, of the summary's counts and
        lines): the metrics, and the texts by tag; both empty when nothing is new."""
        metrics, fresh = self.tell(found)
        texts = {f"{PREFIX}text": as_markdown(f.message for f in fresh)} if fresh else {}
        if summary is not None:
            counts, lines = summary
            metrics.update(summary_metrics(found, counts))
            texts[f"{PREFIX}summary"] = as_markdown(lines)
        return metrics, texts

    def share(self, findings: Sequence[Finding], world: int) -> list[Finding]:
        """Every rank's ``findings``, on every rank: all ``world`` ranks of the trainer call it
        together (a trainer of one rank gathers nothing, whatever process group is up)."""
        parts = _all_gather([to_dict(f) for f in findings], world)
        return [finding_from_dict(fields) for part in parts for fields in part]

    def finish(self, of: str, world: int) -> tuple[list[Finding], Counts, list[str]]:
        """Stop the guard; every rank's findings and calls, and their summary (``of``: whose,
        after the mode). All ``world`` ranks call it together."""
        self.stop()
        guard = self.guard
        mine = Process(
            pid=os.getpid(),
            rank=_rank(),
            argv=tuple(sys.argv),
            counts=guard.counts if guard else Counts(),
            findings=tuple(guard.findings) if guard else (),
        )
        parts = _all_gather(as_record(mine), world)
        processes = [from_record(f"rank-{i}", part) for i, part in enumerate(parts)]
        found, counts = combined(processes)
        return found, counts, job_summary(found, counts, processes, f"mode={self.mode}, {of}")


class Watched:
    """What both callbacks offer beside their hooks, from their :class:`Watch`."""

    _watch: Watch

    @property
    def findings(self) -> list[Finding]:
        """This process's findings in the current (or last) guarded stage or ``train()``."""
        guard = self._watch.guard
        return guard.findings if guard else []

    @property
    def counts(self) -> Counts:
        """This process's loss calls in the current (or last) guarded stage or ``train()``."""
        guard = self._watch.guard
        return guard.counts if guard else Counts()

    def stop(self) -> None:
        """Stop the guard now: after a training that raised where the framework calls no
        callback then (the Trainer), and the process goes on. The next start stops it too."""
        self._watch.stop()


def summary_metrics(found: Sequence[Finding], counts: Counts) -> dict[str, float]:
    """The end's numbers for a logger: loss calls seen and checked, findings."""
    return {
        f"{PREFIX}loss_calls": float(counts.seen),
        f"{PREFIX}checked": float(counts.checked),
        f"{PREFIX}findings": float(len(found)),
    }


def as_markdown(lines: Iterable[str]) -> str:
    """Text as TensorBoard shows it as written: a code block."""
    return "\n".join(f"    {line}" for text in lines for line in text.splitlines())


def _rank() -> int | None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return None


def _all_gather(obj: Any, world: int) -> list[Any]:
    dist = torch.distributed
    if world <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts

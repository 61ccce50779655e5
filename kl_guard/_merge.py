"""``python -m kl_guard merge``: the JSON reports of a job's nodes as one summary, one report
and one exit status.

Each node of a multi-node job runs ``python -m kl_guard run --json node<N>.json torchrun
--nnodes ...``: its runner sees only that node's processes. Their ranks are the job's
(torchrun's ``RANK``), so the reports add up: findings one per (location, code, rank),
calls summed, the exit status the first node's that failed. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from kl_guard._findings import Counts, Finding, counts_from_dict, finding_from_dict, merged
from kl_guard._processes import Process
from kl_guard._runner import JSON_VERSION, write_json
from kl_guard._summary import job_summary


class ReportError(ValueError):
    """A report that cannot be merged: missing, not JSON, or not a kl_guard run's."""


@dataclasses.dataclass(frozen=True)
class Report:
    """One node's report, as ``run --json`` wrote it."""

    path: str
    mode: str
    findings: tuple[Finding, ...]
    counts: Counts
    processes: tuple[Process, ...]
    exit_status: int


def read(path: str) -> Report:
    """The report at ``path``; :class:`ReportError` says why one cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or "version" not in raw:
        raise ReportError(f"{path}: not a report of `python -m kl_guard run --json`")
    if raw["version"] != JSON_VERSION:
        raise ReportError(
            f"{path}: report version {raw['version']!r}; this kl_guard reads version "
            f"{JSON_VERSION} (merge with the kl_guard that wrote it)"
        )
    try:
        findings = tuple(finding_from_dict(f) for f in raw["findings"])
        return Report(
            path=path,
            mode=raw["mode"],
            findings=findings,
            counts=counts_from_dict(raw["calls"]),
            processes=tuple(_process(path, p, findings) for p in raw["processes"]),
            exit_status=int(raw["exit_status"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{path}: a field is missing or malformed: {exc!r}") from None


def _process(path: str, entry: dict[str, Any], findings: Sequence[Finding]) -> Process:
    # A report keeps how many findings each process had, not which: those of the
    # process's rank stand in (a rank's are its own), so its line's count is exact.
    own = [f for f in findings if f.rank == entry["rank"]][: entry["findings"]]
    return Process(
        pid=entry["pid"],
        rank=entry["rank"],
        argv=tuple(entry["argv"]),
        counts=counts_from_dict(entry["calls"]),
        findings=tuple(own),
        complete=entry["complete"],
        name=f"{path}:{entry['pid']}",
        running=entry.get("running", False),
        node=path,
    )


def notes(reports: Sequence[Report]) -> list[str]:
    """What the merged numbers do not show: which node failed; what makes them doubtful (a
    rank in two reports: the same node's twice, or two jobs'; reports of different modes)."""
    said = [f"{r.path} ended with exit status {r.exit_status}" for r in reports if r.exit_status]
    where: dict[int, str] = {}
    for report in reports:
        for rank in sorted({p.rank for p in report.processes if p.rank is not None}):
            first = where.setdefault(rank, report.path)
            if first != report.path:
                said.append(
                    f"rank {rank} is in {first} and in {report.path}: the same node's report "
                    "twice, or reports of two jobs? Its calls are counted twice"
                )
    modes = sorted({r.mode for r in reports})
    if len(modes) > 1:
        said.append(f"the nodes ran in different modes ({', '.join(modes)})")
    return said


def merge(paths: Sequence[str], json_path: str | None = None, stream: TextIO | None = None) -> int:
    """Sum up the reports at ``paths`` on ``stream`` (stderr), optionally as one JSON report;
    the job's exit status (2 when a report cannot be read)."""
    stream = stream or sys.stderr
    if len({os.path.realpath(p) for p in paths}) < len(paths):
        print("kl_guard merge: a report is named twice", file=stream)
        return 2
    if json_path is not None and os.path.realpath(json_path) in map(os.path.realpath, paths):
        print(f"kl_guard merge: --json {json_path} would overwrite a report", file=stream)
        return 2
    try:
        reports = [read(path) for path in paths]
    except ReportError as exc:
        print(f"kl_guard merge: {exc}", file=stream)
        return 2
    found = merged(f for report in reports for f in report.findings)
    counts = sum((report.counts for report in reports), Counts())
    processes = sorted(
        (p for report in reports for p in report.processes),
        key=lambda p: (p.rank is None, p.rank or 0, p.pid),
    )
    status = next((r.exit_status for r in reports if r.exit_status), 0)
    mode = reports[0].mode if len({r.mode for r in reports}) == 1 else "mixed"
    of = f"mode={mode}, {len(reports)} reports merged"
    for line in job_summary(found, counts, processes, of):
        print(line, file=stream)
    for said in notes(reports):
        print(f"  note: {said}", file=stream)
    if json_path is not None:
        try:
            write_json(json_path, found, counts, processes, mode, status)
        except OSError as exc:
            print(f"kl_guard merge: could not write the JSON report: {exc}", file=stream)
            return status or 2
    return status

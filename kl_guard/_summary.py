"""How findings read in a summary: the headline, the table of findings, and a job's
summary over its processes (the runner's, ``merge``'s and the framework callbacks')."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kl_guard._findings import Counts, Finding
from kl_guard._processes import Process


def summary_lines(findings: Sequence[Finding]) -> list[str]:
    """A table of ``findings``, one row per (location, code): code, location, count, cause."""
    rows = [("code", "location", "count", "cause")]
    rows += [(f.code, f.location, str(f.count), f.summary) for f in findings]
    code_w, location_w, count_w = (max(len(row[i]) for row in rows) for i in range(3))
    return [
        f"{code:<{code_w}}  {location:<{location_w}}  {count:>{count_w}}  {cause}"
        for code, location, count, cause in rows
    ]


#: Said instead of "no findings" when no call was seen: that is no clean bill of health.
NOTHING_SEEN = (
    "no loss call seen: the program called none of the losses kl_guard guards (F.kl_div, "
    "F.cross_entropy, F.nll_loss, F.binary_cross_entropy_with_logits, their nn modules), or "
    "called them where kl_guard could not see (a reference taken before kl_guard started, "
    "a process kl_guard did not follow, compiled code)"
)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def headline(found: Sequence[Finding], counts: Counts, *, at_least: bool = False) -> str:
    """What was found and what was checked, in one line; ``at_least``: the counts stop
    short (a process ended before it wrote them all)."""
    if not counts.seen and not found and not at_least:
        return NOTHING_SEEN
    what = plural(len(found), "finding") if found else "no findings"
    checked = f"{counts.checked} checked from their tensors"
    if counts.traced:
        checked += f", {counts.traced} from their arguments only (traced by the compiler)"
    calls = plural(counts.seen, "loss call")
    return f"{what} in {'at least ' if at_least else ''}{calls} ({checked})"


def job_summary(
    found: Sequence[Finding], counts: Counts, processes: Sequence[Process], of: str = ""
) -> list[str]:
    """The summary of a job whose ``processes`` together found ``found`` in ``counts``: a
    headline (``of`` says whose, e.g. ``"mode=warn"``), a line per process that saw a loss
    call when there are several, then the findings, each labelled by its rank."""
    cut = [p for p in processes if not p.complete]
    line = headline(found, counts, at_least=bool(cut))
    if len(processes) > 1:
        line += f", in {len(processes)} processes"
    ended, running = sum(not p.running for p in cut), sum(p.running for p in cut)
    short = [f"{ended} ended before writing its whole record"] if ended else []
    short += [f"{running} still running"] if running else []
    if short:
        line += f" ({', '.join(short)})"
    lines = [f"kl_guard summary ({of}): {line}" if of else f"kl_guard summary: {line}"]
    if len(processes) > 1 or cut:
        lines += [f"  {said}" for said in process_lines(processes)]
    labelled = [
        f if f.rank is None else dataclasses.replace(f, location=f"{f.location} (rank {f.rank})")
        for f in found
    ]
    if labelled:
        lines += [f"  {row}" for row in summary_lines(labelled)]
    return lines


def process_lines(processes: Sequence[Process]) -> list[str]:
    """A line per process that saw a loss call or did not write its whole record; one line
    for the rest (DataLoader workers, launchers)."""
    labels = [p.label() for p in processes]
    shared = {label for label in labels if labels.count(label) > 1}
    lines, quiet = [], []
    for process, label in zip(processes, labels, strict=True):
        if label in shared and process.rank is not None:  # a rank's forked children
            label += f" pid {process.pid}"
        cut = "" if process.complete else _RUNNING if process.running else _CUT
        if process.findings or process.counts.seen:
            said = headline(process.findings, process.counts)
            lines.append(f"{label}: {said}{cut and '; '}{cut}")
        elif cut:
            lines.append(f"{label}: {cut}")
        else:
            quiet.append(label)
    if quiet:
        shown = ", ".join(quiet[:_SHOWN]) + (", ..." if len(quiet) > _SHOWN else "")
        lines.append(f"{plural(len(quiet), 'process')} saw no loss call: {shown}")
    return lines


_SHOWN = 8
_CUT = (
    "ended before writing its whole record (killed, or os._exit outside multiprocessing): "
    "its findings are all here, but calls after its last finding are not counted"
)
_RUNNING = (
    "still running when the program ended (a server or daemon process): "
    "calls after its last finding are not counted"
)

"""How a run's findings read in a summary: the one-line headline and the table of findings."""

from __future__ import annotations

from collections.abc import Sequence

from kl_guard._findings import Counts, Finding


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

"""The public contract of kl_guard: the codes, the :class:`Finding` record and the calls'
:class:`Counts`, as plain data too, and findings merged.

A finding leaves its process only as :func:`to_dict` makes it: in each
process's record of a run, the runner's JSON report (a public format, see the
README) and what a pytest-xdist worker sends its controller; it comes back
through :func:`finding_from_dict`, and findings from many places become one per
key by :func:`merged`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar

from kl_guard import _codes

#: Every code kl_guard can report, with its one-line meaning (read-only; the
#: full text is in ``python -m kl_guard explain CODE``). Codes are a public
#: contract: they are never renumbered or reused.
CODES: Mapping[str, str] = types.MappingProxyType({c.code: c.title for c in _codes.ALL})

#: Codes that are off unless ``select`` names them (or ``"ALL"``), like a
#: linter's opt-in rules: they fire on a correct idiom too. KLG008 cannot
#: tell the swapped roles it was written for from reverse KL on purpose
#: (KL(student || teacher), the student's output as the target).
OPT_IN: frozenset[str] = frozenset(c.code for c in _codes.ALL if c.opt_in)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis of one call site.

    ``message`` is the whole diagnosis (headline, evidence, fix, location);
    ``summary`` is its headline without the code; ``count`` is how many
    checked calls at ``location`` produced this code; ``rank`` is the
    distributed rank that saw it, when torch.distributed is initialized.
    """

    code: str
    summary: str
    message: str = dataclasses.field(repr=False)
    location: str = ""
    count: int = 1
    rank: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Counts:
    """The loss calls a layer saw: ``seen`` in all, ``checked`` from their tensors,
    ``traced`` from their arguments only (while torch.compile or torch.export
    traced them: the compiled code never calls kl_guard). Calls let through
    by the schedule are ``seen - checked - traced``.
    """

    seen: int = 0
    checked: int = 0
    traced: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.seen + other.seen, self.checked + other.checked, self.traced + other.traced
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.seen - other.seen, self.checked - other.checked, self.traced - other.traced
        )


def to_dict(value: Finding | Counts) -> dict[str, Any]:
    """``value``'s fields by name, in the order they are declared: JSON's plain data."""
    return dataclasses.asdict(value)


def finding_from_dict(fields: Mapping[str, Any]) -> Finding:
    """The finding that :func:`to_dict` made. A field left out takes its default (a record
    written before the field existed); an unknown one is a TypeError, as in the constructor."""
    return Finding(**fields)


def counts_from_dict(fields: Mapping[str, Any]) -> Counts:
    """The counts that :func:`to_dict` made; a field left out or unknown as for a finding."""
    return Counts(**fields)


K = TypeVar("K", bound=Hashable)


def tally(table: dict[K, Finding], key: K, finding: Finding) -> bool:
    """Count ``finding`` into ``table`` at ``key``; True when it is the first there.

    Counts, not copies: a later finding adds its whole count (one from another
    process's record may hold many) to the first, whose text stays.
    """
    seen = table.get(key)
    table[key] = (
        finding if seen is None else dataclasses.replace(seen, count=seen.count + finding.count)
    )
    return seen is None


def merged(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (location, code, rank), with the counts added, in order of first
    occurrence: the same misuse at the same line is one finding, per rank."""
    table: dict[tuple[str, str, int | None], Finding] = {}
    for finding in findings:
        tally(table, (finding.location, finding.code, finding.rank), finding)
    return list(table.values())

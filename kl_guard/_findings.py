"""The public contract of kl_guard: the codes and the :class:`Finding` record."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

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
    """The KL calls a layer saw: ``seen`` in all, ``checked`` from their tensors,
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

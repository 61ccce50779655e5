"""The public contract of kl_guard: the codes and the :class:`Finding` record."""

from __future__ import annotations

import dataclasses

#: Every code kl_guard can report, with its one-line meaning. Codes are a
#: public contract: they are never renumbered or reused.
CODES: dict[str, str] = {
    "KLG001": "reduction resolves to 'mean', which also divides by the number of classes",
    "KLG002": "log_target does not match the space the target is in",
    "KLG003": "input is not log-probabilities",
    "KLG004": "the loss is negative beyond rounding, NaN or infinite",
    "KLG005": "input and target shapes differ and broadcast silently",
    "KLG006": "a distribution is normalized over the wrong dimension",
    "KLG007": "target is not a probability distribution",
    "KLG008": "the target requires grad while the input does not",
}

#: Codes that are off unless ``select`` names them (or ``"ALL"``), like a
#: linter's opt-in rules: they fire on a correct idiom too. KLG008 cannot
#: tell the swapped roles it was written for from reverse KL on purpose
#: (KL(student || teacher), the student's output as the target).
OPT_IN: frozenset[str] = frozenset({"KLG008"})


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

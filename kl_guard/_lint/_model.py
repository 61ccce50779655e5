"""The linter's records: an edit, a finding and where it is."""

from __future__ import annotations

import dataclasses
import enum


class Applicability(str, enum.Enum):
    """How sure a fix is, as ruff separates them: ``--fix`` applies safe ones only."""

    SAFE = "safe"
    UNSAFE = "unsafe"
    NONE = "none"  # the fix is described, never applied

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, order=True)
class Edit:
    """Replace ``source[start:end]`` (character offsets) by ``text``."""

    start: int
    end: int
    text: str


@dataclasses.dataclass(frozen=True)
class LintFinding:
    """One diagnosis of one place in one document.

    ``line``/``column`` (1-based, column in characters) are where it points;
    ``lines`` are the lines whose suppression comment silences it; ``fix`` is
    the corrected call in words, ``edits`` what ``--fix`` writes.
    """

    code: str
    line: int
    column: int
    message: str
    fix: str
    applicability: Applicability = Applicability.NONE
    edits: tuple[Edit, ...] = ()
    lines: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True)
class Located:
    """A finding with its file: ``cell`` is the notebook cell (1-based), else None."""

    path: str
    cell: int | None
    finding: LintFinding

    @property
    def where(self) -> str:
        cell = "" if self.cell is None else f"cell {self.cell}:"
        return f"{self.path}:{cell}{self.finding.line}:{self.finding.column}"

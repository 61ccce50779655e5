"""Suppression comments: ``# kl_guard: ignore[KLG001]`` silences codes on one line.

Shared by the runtime guard (the line that called the loss) and the linter
(the line a finding points at). ``# kl_guard: ignore`` with no list silences
every code. The directive may follow other comments (``# noqa  # kl_guard: ...``).
"""

from __future__ import annotations

import linecache
import re

from kl_guard._findings import CODES

_DIRECTIVE = re.compile(r"#.*?\bkl_guard:\s*ignore\b(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE)
ALL_CODES = frozenset(CODES)


def suppressed_codes(line: str) -> frozenset[str]:
    """The codes a source line's comment silences; empty when it has no directive.

    Unknown codes in the list are ignored, so a typo never silences everything.
    """
    if "kl_guard" not in line:  # almost every line: no regex
        return frozenset()
    match = _DIRECTIVE.search(line)
    if match is None:
        return frozenset()
    listed = match.group("codes")
    if listed is None:
        return ALL_CODES
    return frozenset(code.strip().upper() for code in listed.split(",")) & ALL_CODES


def is_suppressed(filename: str, lineno: int, code: str) -> bool:
    """Whether the line ``filename:lineno`` carries a directive that silences ``code``."""
    return code in suppressed_codes(linecache.getline(filename, lineno))

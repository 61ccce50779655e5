"""What a finding code is: its record (title, meaning, examples, fix) and how to silence it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Code:
    """One code: its one-line ``title``, what it means, and how to fix or silence it.

    ``cause`` and ``fix`` are the README table's short columns (Markdown);
    ``meaning`` is plain text, paragraphs split by blank lines. An
    ``opt_in`` code is reported only where ``select`` names it; a ``linted``
    one is found by ``python -m kl_guard lint`` too, in the runtime's words;
    one not ``runtime`` is found by the linter alone (so far).
    """

    code: str
    title: str
    meaning: str
    cause: str
    fix: str
    wrong: str
    right: str
    opt_in: bool = False
    linted: bool = False
    runtime: bool = True
    loss: str = "kl_div"  # the function whose line a suppression comment sits on

    @property
    def heading(self) -> str:
        if self.opt_in:
            return f"{self.code} (opt-in)"
        return self.code if self.runtime else f"{self.code} (lint only)"

    @property
    def silence(self) -> tuple[str, ...]:
        """How to turn the code off, for one line, or for warnings only: lines of code."""
        if not self.runtime:
            return (
                f"python -m kl_guard lint --ignore {self.code}",
                f"loss = ...  # kl_guard: ignore[{self.code}]  (this line only)",
            )
        if self.opt_in:
            switch = f"# off unless select names {self.code}: install(select=...), run --select"
        else:
            switch = (
                f'kl_guard.install(ignore="{self.code}")  # also guard(), run --ignore {self.code}'
            )
        return (
            switch,
            f"loss = F.{self.loss}(...)  # kl_guard: ignore[{self.code}]  (this line only)",
            f'warnings.filterwarnings("ignore", category=kl_guard.{self.code}Warning)'
            "  # warning only",
        )

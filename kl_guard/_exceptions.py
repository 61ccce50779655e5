"""Warning categories and the error raised in ``raise`` mode."""

from __future__ import annotations

from collections.abc import Iterable

from kl_guard._findings import Finding


class KLGuardWarning(UserWarning):
    """Base category of every kl_guard finding reported as a warning."""

    code = ""


class KLG001Warning(KLGuardWarning):
    code = "KLG001"


class KLG002Warning(KLGuardWarning):
    code = "KLG002"


class KLG003Warning(KLGuardWarning):
    code = "KLG003"


class KLG004Warning(KLGuardWarning):
    code = "KLG004"


class KLG005Warning(KLGuardWarning):
    code = "KLG005"


class KLG006Warning(KLGuardWarning):
    code = "KLG006"


class KLG007Warning(KLGuardWarning):
    code = "KLG007"


class KLG008Warning(KLGuardWarning):
    code = "KLG008"


class KLG009Warning(KLGuardWarning):
    code = "KLG009"


class KLG010Warning(KLGuardWarning):
    code = "KLG010"


class KLG011Warning(KLGuardWarning):
    code = "KLG011"


class KLG012Warning(KLGuardWarning):
    code = "KLG012"


class KLG013Warning(KLGuardWarning):
    code = "KLG013"


class KLG014Warning(KLGuardWarning):
    code = "KLG014"


class KLG015Warning(KLGuardWarning):
    code = "KLG015"


WARNING_CATEGORIES: dict[str, type[KLGuardWarning]] = {
    cls.code: cls
    for cls in (
        KLG001Warning,
        KLG002Warning,
        KLG003Warning,
        KLG004Warning,
        KLG005Warning,
        KLG006Warning,
        KLG007Warning,
        KLG008Warning,
        KLG009Warning,
        KLG010Warning,
        KLG011Warning,
        KLG012Warning,
        KLG013Warning,
        KLG014Warning,
        KLG015Warning,
    )
}


class KLGuardError(ValueError):
    """Raised from the user's call in ``raise`` mode; ``.findings`` holds the diagnoses."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        self.findings: tuple[Finding, ...] = tuple(findings)
        super().__init__("\n\n".join(f.message for f in self.findings))

    def __reduce__(self) -> tuple[type[KLGuardError], tuple[tuple[Finding, ...]]]:
        # pytest-xdist and multiprocessing pickle exceptions; the default
        # reduction would pass the message string back in as ``findings``.
        return (type(self), (self.findings,))

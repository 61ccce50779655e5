"""kl_guard: catch misuse of KL divergence in PyTorch while the program runs.

``kl_guard.install()`` at the start of training patches ``torch.nn.functional.kl_div``,
``torch.nn.KLDivLoss.forward`` and the op ``torch.kl_div``; each checked call is
diagnosed from its live tensors and reported as a warning, an error or a log line.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

# These modules need only the standard library: importing them here keeps
# ``kl_guard.KLGuardError`` its public name in a traceback whatever raised it.
from kl_guard._config import Config, Mode, Options
from kl_guard._exceptions import (
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
    KLGuardError,
    KLGuardWarning,
)
from kl_guard._findings import CODES, Counts, Finding

if TYPE_CHECKING:
    from kl_guard._deferred import flush
    from kl_guard._lifecycle import (
        Guard,
        counts,
        findings,
        guard,
        install,
        is_active,
        is_installed,
        uninstall,
    )
    from kl_guard._manual import check

__version__ = "0.1.0"

__all__ = [
    "CODES",
    "Config",
    "Counts",
    "Finding",
    "Guard",
    "KLG001Warning",
    "KLG002Warning",
    "KLG003Warning",
    "KLG004Warning",
    "KLG005Warning",
    "KLG006Warning",
    "KLG007Warning",
    "KLG008Warning",
    "KLG009Warning",
    "KLG010Warning",
    "KLG011Warning",
    "KLG012Warning",
    "KLG013Warning",
    "KLG014Warning",
    "KLG015Warning",
    "KLGuardError",
    "KLGuardWarning",
    "Mode",
    "Options",
    "check",
    "counts",
    "findings",
    "flush",
    "guard",
    "install",
    "is_active",
    "is_installed",
    "uninstall",
]

# The names that need torch, imported on first use (PEP 562): a pytest run
# with the plugin off, or ``kl_guard.__version__``, imports no torch.
_LAZY = {
    "check": "kl_guard._manual",
    "counts": "kl_guard._lifecycle",
    "Guard": "kl_guard._lifecycle",
    "findings": "kl_guard._lifecycle",
    "flush": "kl_guard._deferred",
    "guard": "kl_guard._lifecycle",
    "install": "kl_guard._lifecycle",
    "is_active": "kl_guard._lifecycle",
    "is_installed": "kl_guard._lifecycle",
    "uninstall": "kl_guard._lifecycle",
}


def _claim(obj: object) -> None:
    """Show ``obj`` as ``kl_guard.<name>`` in reprs, tracebacks and docs."""
    with contextlib.suppress(AttributeError, TypeError):  # a mapping has no __module__
        obj.__module__ = __name__


# Hidden from type checkers, which would otherwise take any misspelled
# ``kl_guard.<name>`` for a lazy name; they see the imports above.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        obj = getattr(importlib.import_module(module), name)
        _claim(obj)
        globals()[name] = obj  # found directly from now on
        return obj


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


for _name in __all__:
    if _name not in _LAZY:
        _claim(globals()[_name])
del _name

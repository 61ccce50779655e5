"""kl_guard: catch misuse of KL divergence in PyTorch while the program runs.

``kl_guard.install()`` at the start of training patches ``torch.nn.functional.kl_div``
and ``torch.nn.KLDivLoss.forward``; each checked call is diagnosed from its
live tensors and reported as a warning, an error or a log line.
"""

from __future__ import annotations

import contextlib

from kl_guard._config import Config, Mode
from kl_guard._deferred import flush
from kl_guard._exceptions import (
    KLG001Warning,
    KLG002Warning,
    KLG003Warning,
    KLG004Warning,
    KLG005Warning,
    KLG006Warning,
    KLG007Warning,
    KLG008Warning,
    KLGuardError,
    KLGuardWarning,
)
from kl_guard._findings import CODES, Finding
from kl_guard._lifecycle import Guard, findings, guard, install, is_installed, uninstall
from kl_guard._manual import check

__version__ = "0.1.0"

__all__ = [
    "CODES",
    "Config",
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
    "KLGuardError",
    "KLGuardWarning",
    "Mode",
    "check",
    "findings",
    "flush",
    "guard",
    "install",
    "is_installed",
    "uninstall",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, dict):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj

"""torch.compile and torch.export: what kl_guard reports of a call while it is traced.

The compiled code never calls back into kl_guard, so a call can only be
diagnosed from its arguments, while a later tracing pass (AOTAutograd,
inductor, export) runs it as Python on fake tensors. Those findings are
reported once per compilation, however many passes run the call.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable

from kl_guard import _compat, _reporting
from kl_guard._call import Call
from kl_guard._config import Config, Mode
from kl_guard._diagnosis import argument_findings
from kl_guard._findings import Finding
from kl_guard._messages import Diagnosis
from kl_guard._sites import CallSite

#: What can be known of a call while it is traced, from its arguments alone.
TRACE_TIME_CODES = frozenset({"KLG001", "KLG005"})


class _TraceReports:
    """What this compilation has already reported, so a finding counts once
    per compilation however many passes (AOTAutograd's metadata pass, its
    graph capture, a retrace) run the call.

    Compilations are told apart by their context object, not their id:
    ``torch._dynamo.reset()`` starts the ids again. Only the current
    compilation's keys are kept, and only a weak reference to it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.context: Callable[[], object] = lambda: None
        self.seen: set[tuple[str, str, int]] = set()

    def first(self, diagnoses: list[Diagnosis], site: CallSite | None) -> list[Diagnosis]:
        context = _compat.compile_context()
        if context is None or site is None:
            return diagnoses
        with self.lock:
            if self.context() is not context:
                self.context, self.seen = weakref.ref(context), set()
            fresh = []
            for diagnosis in diagnoses:
                key = (diagnosis.code, site.filename, site.lineno)
                if key not in self.seen:
                    self.seen.add(key)
                    fresh.append(diagnosis)
            return fresh


_trace_reports = _TraceReports()


def trace_findings(call: Call | None, site: CallSite | None) -> list[Finding]:
    """The findings of a traced call not yet reported in this compilation."""
    diagnoses = [d for d in (argument_findings(call) if call else []) if d.code in TRACE_TIME_CODES]
    return _reporting.attribute(_trace_reports.first(diagnoses, site), site)


def trace_config(config: Config) -> Config:
    """How a finding is reported while tracing: raising inside the compiler
    would surface as the compiler's error, not the user's, so raise mode warns."""
    if config.mode is Mode.RAISE:
        return dataclasses.replace(config, mode=Mode.WARN)
    return config

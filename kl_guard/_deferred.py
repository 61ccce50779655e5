"""Deferred checks: statistics copied to the host without a sync, diagnosed once they land.

On CUDA, in warn and log modes, a check must not block the training step:
its numbers are copied back with ``non_blocking=True`` and read at a later
checked call, at :func:`flush`, at the end of a guard, or at exit.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
from typing import Any

import torch

from kl_guard import _check, _family_check, _reporting
from kl_guard._config import Config, Mode
from kl_guard._findings import Finding
from kl_guard._sites import CallSite

#: Checks waiting for their numbers; past this many the oldest are read now.
LIMIT = 64


@dataclasses.dataclass
class _Pending:
    measurement: _check.Measurement | _family_check.Measurement
    host: torch.Tensor
    event: Any
    config: Config
    records: tuple[_reporting.Record, ...]
    site: CallSite | None


_pending: collections.deque[_Pending] = collections.deque()


class _Switches:
    #: Tests exercise the deferred path on CPU tensors.
    on_cpu = False


SWITCHES = _Switches()


def defers(input: Any, config: Config) -> bool:
    """Whether the check of a call with this ``input`` is deferred."""
    if config.mode not in (Mode.WARN, Mode.LOG) or not isinstance(input, torch.Tensor):
        return False
    # is_cuda, not device.type: no device object built on every checked call
    return input.is_cuda or (SWITCHES.on_cpu and input.device.type == "cpu")


def defer(
    measurement: _check.Measurement | _family_check.Measurement,
    config: Config,
    records: tuple[_reporting.Record, ...],
    site: CallSite | None,
) -> None:
    """Start the copy of ``measurement``'s numbers; they are diagnosed once they land."""
    measurement.pack_loss()
    packed = measurement.packed
    if packed is None:
        host, event = torch.empty(0), None
    elif packed.device.type == "cuda":
        host = packed.to("cpu", non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(packed.device))
    else:
        host, event = packed, None
    measurement.packed = None
    _pending.append(_Pending(measurement, host, event, config, records, site))
    if len(_pending) > LIMIT:
        drain(block=True, limit=len(_pending) - LIMIT)


def pending() -> int:
    """How many checks wait for their numbers."""
    return len(_pending)


def drain(*, block: bool, limit: int | None = None) -> None:
    """Diagnose and report the deferred checks whose numbers have landed (all, if ``block``)."""
    done = 0
    while _pending and (limit is None or done < limit):
        item = _pending[0]
        if not block and item.event is not None and not item.event.query():
            return
        try:
            _pending.remove(item)
        except ValueError:  # another thread took it
            continue
        done += 1
        findings = _reporting.safely(_conclude, item)
        if findings:
            _reporting.report(findings, item.config, item.records, item.site)


def _conclude(item: _Pending) -> list[Finding]:
    if item.event is not None:
        item.event.synchronize()
    values = item.host.tolist() if item.measurement.layout is not None else None
    return _reporting.attribute(item.measurement.diagnose(values), item.site)


def forget() -> None:
    """Drop the pending checks: in a forked child they are the parent's to report."""
    _pending.clear()


def flush() -> None:
    """Report now the checks still waiting for their numbers (CUDA, warn and log modes)."""
    drain(block=True)


atexit.register(drain, block=True)

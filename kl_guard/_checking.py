"""Which check a call gets: kl_div's, or its loss's by its contract; now, or deferred.

Between the per-call path (``_percall``), which knows when to check, and the
checks themselves (``_check`` for kl_div, ``_family_check`` for the others).
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from kl_guard import _arguments, _check, _deferred, _family_check, _reporting, _sites
from kl_guard._config import Config
from kl_guard._contract import KL_DIV, LossContract
from kl_guard._family_rules import FamilyCall
from kl_guard._findings import Finding
from kl_guard._signature import Api, Call
from kl_guard._sites import CallSite

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def call_of(
    contract: LossContract, args: Args, kwargs: Kwargs, instance: Any, op: bool
) -> tuple[Call | FamilyCall | None, dict[str, Any]]:
    """The call described by its loss's contract, and its arguments by name."""
    if contract is KL_DIV:
        return _arguments.call_of(args, kwargs, instance, op)
    bound = _family_check.bind(contract, args, kwargs, instance)
    api: Api = "function" if instance is None else "module"
    return _family_check.describe(contract, bound, api), bound


def findings_at(
    call: Call | FamilyCall,
    input: Any,
    target: Any,
    result: Any,
    config: Config,
    records: tuple[_reporting.Record, ...],
    where: FrameType | CallSite | None,
    module: object,
    bound: dict[str, Any] | None = None,
) -> tuple[list[Finding], CallSite | None]:
    """The findings of a checked call, now, or none yet when its check is deferred
    (then the site, which the caller's report needs)."""
    rows = config.sample_rows
    weight = None if bound is None else bound.get("weight")
    if _deferred.defers(input, config):
        # the site, not the frame: the caller's frame holds its tensors
        site = _site(where, module)
        measurement: _check.Measurement | _family_check.Measurement
        if isinstance(call, FamilyCall):
            dims = (
                None
                if call.class_dim is None
                else (call.class_dim, *_family_check.other_dims(call))
            )
            measurement = _family_check.measure(
                call, input, target, weight, sample_rows=rows, dims=dims
            )
        else:
            measurement = _check.measure(
                call, input, target, result, sample_rows=rows, dims=_check.all_dims(call)
            )
        _deferred.defer(measurement, config, records, site)
        return [], site
    if isinstance(call, FamilyCall):
        diagnoses = _family_check.examine(call, input, target, weight, sample_rows=rows)
    else:
        diagnoses = _check.examine(call, input, target, result, sample_rows=rows)
    if not diagnoses:
        return [], None  # a correct call: no site to look up (its line number is a decode)
    site = _site(where, module)
    return _reporting.attribute(diagnoses, site), site


def _site(where: FrameType | CallSite | None, module: object) -> CallSite | None:
    return where if isinstance(where, CallSite) else _sites.site_of(where, module)

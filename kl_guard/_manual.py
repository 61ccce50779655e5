"""``kl_guard.check()``: one call diagnosed by hand, with nothing patched."""

from __future__ import annotations

import torch

from kl_guard._check import REDUCTION_ENUM, describe, examine, judgeable, kl_div_unchecked
from kl_guard._config import Config, configure
from kl_guard._findings import Finding
from kl_guard._reporting import attribute
from kl_guard._sites import site_of, user_frame


def check(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    loss: torch.Tensor | None = None,
    sample_rows: int = 64,
    select: object = None,
    ignore: object = (),
) -> list[Finding]:
    """Diagnose one kl_div call without patching anything.

    ``kl_guard.check(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")``
    returns the findings kl_guard would report for that call (an empty list
    when it is correct). When ``loss`` is not given it is computed, so a
    negative or NaN loss (KLG004) is caught too. ``select`` and ``ignore``
    are those of ``install()``: the opt-in codes only when selected.
    """
    config = configure(Config(), select=select, ignore=ignore)
    if reduction not in REDUCTION_ENUM:
        raise ValueError(
            f"kl_guard.check: reduction must be one of "
            f"{', '.join(repr(r) for r in REDUCTION_ENUM)}, not {reduction!r}."
        )
    call = describe(input, target, api="function", reduction=reduction, log_target=log_target)
    if call is None:
        raise TypeError(
            "kl_guard.check: input and target must be tensors, not "
            f"{type(input).__name__} and {type(target).__name__}."
        )
    given = loss is not None
    if not given and judgeable(input) and judgeable(target):
        loss = kl_div_unchecked(input, target, reduction, log_target)
    diagnoses = examine(
        call, input, target, loss, sample_rows=sample_rows, loss_from_torch=not given
    )
    enabled = [d for d in diagnoses if config.enabled(d.code)]
    return attribute(enabled, site_of(user_frame(1)))

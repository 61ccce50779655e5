"""Torch's reduction rules: the legacy ``size_average``/``reduce`` pair, or an enum, to a reduction.

Imports nothing but the standard library: the runtime check and the static
linter both resolve a call's reduction here.
"""

from __future__ import annotations


def resolve_reduction(size_average: object, reduce: object, reduction: object) -> str:
    """The reduction torch applies, following ``torch.nn._reduction.legacy_get_string``."""
    if size_average is None and reduce is None:
        return str(reduction)
    average = True if size_average is None else bool(size_average)
    reducing = True if reduce is None else bool(reduce)
    if average and reducing:
        return "mean"
    return "sum" if reducing else "none"


def kl_div_reduction(size_average: object, reduce: object, reduction: object) -> tuple[str, bool]:
    """What ``F.kl_div`` applies: the op's reduction, and whether it then divides
    the result by the batch size.

    'batchmean' is F.kl_div's own: it asks the op for 'sum' and divides by
    ``input.size(0)``. Next to a legacy argument the op's reduction is the
    legacy one and the division still follows: ``size_average=False`` with
    'batchmean' is 'batchmean' as written, ``reduce=True`` with it is 'mean'
    divided by the batch size once more. ``nn.KLDivLoss`` resolves the legacy
    pair when it is built and passes F.kl_div no 'batchmean' then.
    """
    resolved = resolve_reduction(size_average, reduce, reduction)
    if reduction != "batchmean" or resolved == "batchmean":
        return resolved, False
    return ("batchmean", False) if resolved == "sum" else (resolved, True)


def op_reduction(enum: object) -> str:
    """The reduction the op ``torch.kl_div`` applies for its ``reduction`` enum
    (``torch.nn._reduction.get_enum``): 1 is 'mean', 2 'sum', any other 'none',
    as ATen's ``apply_loss_reduction`` reads it. 'batchmean' exists only in
    ``F.kl_div``, which divides the op's sum itself."""
    if isinstance(enum, int) and enum in (1, 2):
        return "mean" if enum == 1 else "sum"
    return "none"

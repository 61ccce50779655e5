"""Torch's reduction rules: the deprecated ``size_average``/``reduce`` pair to a reduction.

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

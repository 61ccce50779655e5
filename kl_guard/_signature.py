"""A kl_div call as plain values: its tensors' shapes and dtypes, its arguments,
and the dimensions its distribution may lie along."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

#: How the call was made: ``F.kl_div``, ``nn.KLDivLoss``, or the op ``torch.kl_div``.
Api = Literal["function", "module", "op"]

_DTYPE_ABBREVIATIONS = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What the diagnosis needs of a tensor without holding it."""

    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool = False

    @property
    def summary(self) -> str:
        short = _DTYPE_ABBREVIATIONS.get(self.dtype, self.dtype)
        return f"{short}[{', '.join(str(s) for s in self.shape)}]"


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """The arguments of one kl_div call, as plain values.

    Compared and hashed by identity: ``_check.describe`` makes one Call per
    call signature, and what a signature decides (the argument findings, the
    screen's plan) is kept by the Call, looked up at the cost of an ``id()``,
    where a dataclass's hash would rebuild the tuple of every field.
    """

    input: TensorInfo
    target: TensorInfo
    reduction: str
    log_target: bool
    api: Api = "function"
    reduction_arg: object = None  # as written; None: not written (torch's default)
    size_average: object = None
    reduce: object = None
    grad_enabled: bool = True

    @property
    def legacy(self) -> bool:
        return self.size_average is not None or self.reduce is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape both tensors broadcast to (the input's when they do not)."""
        shape = self.input.shape
        if shape == self.target.shape:  # nearly always: no broadcast to work out
            return shape
        return broadcast_shape(shape, self.target.shape) or shape


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast of two shapes, or None when they do not broadcast."""
    out: list[int] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 not in (x, y) else x * y)
    return tuple(reversed(out))


def candidate_dims(shape: Sequence[int]) -> tuple[int, ...]:
    """Dimensions that may hold the distribution, most likely first.

    ``[N, C]`` holds it on dim 1; ``[B, T, V]`` token distributions and
    ``[B, H, T, T]`` attention rows on the last dim; ``[N, C, T]`` and
    ``[N, C, H, W]`` dense predictions on dim 1. The statistics decide
    between the two; the order only breaks ties when nothing is normalized.
    """
    n = len(shape)
    if n == 0:
        return ()
    if n == 1:
        dims: tuple[int, ...] = (0,)
    elif n == 2:
        dims = (1,)
    elif n == 3:
        dims = (2, 1)
    elif shape[-1] == shape[-2]:
        dims = (n - 1, 1)
    else:
        dims = (1, n - 1)
    return tuple(d for d in dims if shape[d] > 1)


def other_dims(shape: Sequence[int]) -> tuple[int, ...]:
    """The remaining dimensions, where a distribution would be misplaced (KLG006)."""
    candidates = candidate_dims(shape)
    return tuple(d for d in range(len(shape)) if shape[d] > 1 and d not in candidates)

"""Statistics: live tensors in, a few numbers out.

Everything here runs on the tensors' own device and reads a bounded sample:
at most ``sample_rows`` fibers along each examined dimension, evenly spaced
so the first and the last are always included. The numbers for all the
dimensions are packed into one small float32 tensor, so the caller reads the
device back once (or never, until the copy has landed, on CUDA).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import torch

#: Per-row statistics, in packing order.
ROW_STATS = ("row_sum", "logsumexp", "min", "max")
#: Numbers packed for one dimension: the count of rows kept, then the low and
#: the high of each per-row statistic for (input, target), then the lowest
#: per-row sum of the elementwise loss.
_PER_DIM = 1 + 2 * 2 * len(ROW_STATS) + 1


@dataclasses.dataclass(frozen=True)
class Range:
    lo: float
    hi: float

    def within(self, centre: float, tol: float) -> bool:
        return abs(self.lo - centre) <= tol and abs(self.hi - centre) <= tol


@dataclasses.dataclass(frozen=True)
class SideStats:
    """What one tensor looks like along one dimension, over the rows kept."""

    row_sum: Range
    logsumexp: Range
    value: Range

    @property
    def has_nan(self) -> bool:
        return any(
            math.isnan(x) for r in (self.row_sum, self.logsumexp, self.value) for x in (r.lo, r.hi)
        )


@dataclasses.dataclass(frozen=True)
class DimStats:
    """Statistics of input and target along ``dim``.

    ``rows`` is how many fibers were looked at out of ``total_rows``;
    ``kept`` excludes those whose target is all zeros (or all ``-inf``) or
    whose input is all zeros, the usual marks of masked padding, which carry
    no distribution.
    """

    dim: int
    size: int
    rows: int
    total_rows: int
    kept: int
    input: SideStats
    target: SideStats
    loss_row_min: float | None


@dataclasses.dataclass(frozen=True)
class Layout:
    """How to read back a packed statistics tensor."""

    dims: tuple[int, ...]
    sizes: tuple[int, ...]
    rows: tuple[int, ...]
    total_rows: tuple[int, ...]
    with_loss: bool


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=256)
def _row_index(
    other_shape: tuple[int, ...], k: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Multi-indices of ``k`` evenly spaced rows of a tensor shaped ``other_shape + (C,)``."""
    total = math.prod(other_shape)
    flat = [round(j * (total - 1) / (k - 1)) for j in range(k)] if k > 1 else [0]
    per_dim: list[list[int]] = [[] for _ in other_shape]
    for position in flat:
        for axis in range(len(other_shape) - 1, -1, -1):
            position, index = divmod(position, other_shape[axis])
            per_dim[axis].append(index)
    return tuple(torch.tensor(ix, dtype=torch.long, device=device) for ix in per_dim)


def sample_fibers(x: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """At most ``k`` fibers of ``x`` along ``dim`` as a ``[rows, size]`` tensor.

    Only the sampled rows are copied, whatever the layout (expanded views,
    channels-last, broadcast): never the whole tensor.
    """
    moved = x.movedim(dim, -1)
    other = tuple(moved.shape[:-1])
    total = math.prod(other)
    if total <= k:
        return moved.reshape(total, moved.shape[-1])
    return moved[_row_index(other, k, x.device)]


def layout(shape: Sequence[int], dims: Sequence[int], k: int, with_loss: bool) -> Layout:
    sizes = tuple(shape[d] for d in dims)
    totals = tuple(math.prod(shape) // s for s in sizes)
    return Layout(
        dims=tuple(dims),
        sizes=sizes,
        rows=tuple(min(t, k) for t in totals),
        total_rows=totals,
        with_loss=with_loss,
    )


def compute(
    input: torch.Tensor,
    target: torch.Tensor,
    loss: torch.Tensor | None,
    dims: Sequence[int],
    sample_rows: int,
) -> torch.Tensor:
    """Pack the statistics of ``input`` and ``target`` along each of ``dims``.

    ``input`` and ``target`` must have the same shape (broadcast views are
    fine); ``loss`` is the elementwise loss of ``reduction='none'`` or None.
    The result is a float32 tensor on the inputs' device; read it with
    :func:`unpack` and the :func:`layout` of the same arguments.
    """
    dtype = work_dtype(input.dtype)
    inf = torch.tensor(math.inf, dtype=dtype, device=input.device)
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for dim in dims:
            pair = torch.stack(
                (
                    sample_fibers(input, dim, sample_rows).to(dtype),
                    sample_fibers(target, dim, sample_rows).to(dtype),
                )
            )
            row_min = pair.amin(-1)
            row_max = pair.amax(-1)
            per_row = torch.stack((pair.sum(-1), torch.logsumexp(pair, -1), row_min, row_max))
            zero = (row_min == 0) & (row_max == 0)
            # Masked padding: a zero (or -inf) target row, or a zero input row,
            # as a masked teacher passed as the input (swapped) leaves it.
            keep = ~(zero[0] | zero[1] | (row_max[1] == -inf))
            lo = torch.where(keep, per_row, inf).amin(-1)
            hi = torch.where(keep, per_row, -inf).amax(-1)
            if loss is not None:
                loss_rows = sample_fibers(loss, dim, sample_rows).to(dtype).sum(-1)
                loss_min = torch.where(keep, loss_rows, inf).amin().reshape(1)
            else:
                loss_min = inf.reshape(1)
            parts.append(
                torch.cat((keep.sum().to(dtype).reshape(1), lo.flatten(), hi.flatten(), loss_min))
            )
        return torch.cat(parts).to(torch.float32)


def unpack(values: Sequence[float], spec: Layout) -> dict[int, DimStats]:
    """Turn the numbers read back from :func:`compute` into :class:`DimStats`."""
    out: dict[int, DimStats] = {}
    n = len(ROW_STATS)
    for i, dim in enumerate(spec.dims):
        chunk = values[i * _PER_DIM : (i + 1) * _PER_DIM]
        kept = int(chunk[0])
        lo = chunk[1 : 1 + 2 * n]
        hi = chunk[1 + 2 * n : 1 + 4 * n]

        def side(which: int, lo: Sequence[float] = lo, hi: Sequence[float] = hi) -> SideStats:
            ranges = [Range(lo[2 * s + which], hi[2 * s + which]) for s in range(n)]
            row_sum, logsumexp, row_min, row_max = ranges
            return SideStats(row_sum, logsumexp, Range(row_min.lo, row_max.hi))

        loss_min = chunk[-1]
        out[dim] = DimStats(
            dim=dim,
            size=spec.sizes[i],
            rows=spec.rows[i],
            total_rows=spec.total_rows[i],
            kept=kept,
            input=side(0),
            target=side(1),
            loss_row_min=loss_min if spec.with_loss and kept else None,
        )
    return out

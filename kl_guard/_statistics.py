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

from kl_guard._rows import DimStats, Range, SideStats

#: Per-row statistics, in packing order, each for (input, target). The last
#: two are 1 where all of a row's values are exactly representable in
#: bfloat16 (float16), else 0: the precision the values were computed in.
ROW_STATS = ("min", "max", "row_sum", "logsumexp", "on_bfloat16", "on_float16")
#: At most this many elements of each tensor are read per examined dimension:
#: a 50k vocabulary gets 2 rows, a 1000-class problem ``sample_rows`` rows.
ELEMENT_BUDGET = 1 << 17
MIN_ROWS = 2
#: Up to this many elements per tensor the screen stacks the two samples and
#: sums once (fewer kernels); beyond, it sums each (no copy of the samples).
_STACKED_SCREEN_ELEMENTS = 8192


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


def rows_for(size: int, sample_rows: int) -> int:
    """Rows to read along a dimension of ``size``: within the element budget."""
    return max(MIN_ROWS, min(sample_rows, ELEMENT_BUDGET // max(size, 1)))


@functools.lru_cache(maxsize=256)
def flat_index(total: int, k: int, device: torch.device) -> torch.Tensor:
    """Indices of ``k`` evenly spaced rows out of ``total``, first and last included.

    Built with arithmetic on the device, so no host-to-device copy (and no
    synchronization) happens, even the first time.
    """
    flat = torch.arange(k, device=device, dtype=torch.long)
    if k > 1:
        # round(j * (total - 1) / (k - 1)) in exact integer arithmetic
        flat = (2 * flat * (total - 1) + (k - 1)) // (2 * (k - 1))
    return flat


@functools.lru_cache(maxsize=256)
def _row_index(
    other_shape: tuple[int, ...], k: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The rows of :func:`flat_index` as multi-indices into ``other_shape``."""
    flat = flat_index(math.prod(other_shape), k, device)
    per_dim: list[torch.Tensor] = []
    for size in reversed(other_shape):
        per_dim.append(flat % size)
        flat = flat // size
    return tuple(reversed(per_dim))


def sample_fibers(x: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """At most ``k`` fibers of ``x`` along ``dim`` as a ``[rows, size]`` tensor.

    Only the sampled rows are copied, whatever the layout (expanded views,
    channels-last, broadcast): never the whole tensor.
    """
    last = dim == x.dim() - 1
    if last and x.dim() == 2:
        if x.shape[0] <= k:
            return x  # the common [N, C] call, small enough to read whole: no copy, no kernel
        # index_select, a single kernel: a quarter of what advanced indexing costs
        return x.index_select(0, flat_index(x.shape[0], k, x.device))
    moved = x.movedim(dim, -1)
    other = tuple(moved.shape[:-1])
    total = math.prod(other)
    if total <= k:
        return moved.reshape(total, moved.shape[-1])
    if last and x.is_contiguous():  # a view as [total, size]: no copy
        return x.view(total, x.shape[-1]).index_select(0, flat_index(total, k, x.device))
    return moved[_row_index(other, k, x.device)]


def make_layout(
    shape: Sequence[int], dims: Sequence[int], sample_rows: int, with_loss: bool
) -> Layout:
    sizes = tuple(shape[d] for d in dims)
    totals = tuple(math.prod(shape) // s for s in sizes)
    return Layout(
        dims=tuple(dims),
        sizes=sizes,
        rows=tuple(min(t, rows_for(s, sample_rows)) for s, t in zip(sizes, totals, strict=True)),
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
    """Pack per-row statistics of ``input`` and ``target`` along each of ``dims``.

    ``input`` and ``target`` must have the same shape (broadcast views are
    fine); ``loss`` is the elementwise loss of ``reduction='none'`` or None.
    For each dimension the result holds, for every sampled row, the
    :data:`ROW_STATS` of both tensors (and the row's loss sum): a float32
    tensor on the inputs' device, to be read with :func:`unpack`. About twenty
    small kernels per dimension, whatever the tensors' size.
    """
    dtype = work_dtype(input.dtype)
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for dim in dims:
            k = rows_for(input.shape[dim], sample_rows)
            pair = torch.stack((sample_fibers(input, dim, k), sample_fibers(target, dim, k)))
            if pair.dtype != dtype:
                pair = pair.to(dtype)
            parts.append(row_stats(pair).flatten())
            if loss is not None:
                parts.append(sample_fibers(loss, dim, k).to(dtype).sum(-1))
        packed = parts[0] if len(parts) == 1 else torch.cat(parts)
        return packed.to(torch.float32)


def row_stats(rows: torch.Tensor, grids: torch.dtype | None = None) -> torch.Tensor:
    """The :data:`ROW_STATS` of each row of ``rows`` (``[..., rows, size]``), as one
    ``[6, ..., rows]`` stack: fewer kernels than flattening and concatenating each,
    which is what small calls pay for. ``grids``: the half dtype the values were
    read from, whose grid they are on by construction (no round trip to measure)."""
    if grids is None:
        on_bfloat16, on_float16 = _on_grid(rows, torch.bfloat16), _on_grid(rows, torch.float16)
    else:
        on_bfloat16 = rows.new_full(rows.shape[:-1], float(grids == torch.bfloat16))
        on_float16 = rows.new_full(rows.shape[:-1], float(grids == torch.float16))
    return torch.stack(
        (
            rows.amin(-1),
            rows.amax(-1),
            rows.sum(-1),
            torch.logsumexp(rows, -1),
            on_bfloat16,
            on_float16,
        )
    )


def _on_grid(rows: torch.Tensor, half: torch.dtype) -> torch.Tensor:
    """Per row, whether every value survives a round trip through ``half``."""
    return (rows.to(half).to(rows.dtype) == rows).all(-1)


def screen(
    input: torch.Tensor,
    target: torch.Tensor,
    dim: int,
    sample_rows: int,
    log_target: bool,
    *,
    target_min: bool = True,
    input_max: bool = False,
    target_max: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The cheap first look along ``dim``: three kernels for a small ``[N, C]`` call.

    (One more for each of ``target_min``, ``input_max`` and ``target_max``; for a large
    tensor, one per tensor to sample its rows and one more to sum each
    sample apart.)

    Returns the ``[2, rows]`` sums, over each sampled row, of ``exp(input)``
    and of the target (of ``exp(target)`` when ``log_target``); the target's
    least value when it holds probabilities and ``target_min`` asks for it;
    the input's (the target's) greatest value when ``input_max``
    (``target_max``) asks for it (None otherwise). A row of
    log-probabilities has ``sum(exp) == 1``, which also bounds each of its
    values by ``log(1 + tol)``: the maximum is needed only where rounding
    allows a wider logsumexp (half precision). Enough to
    confirm a correct call, where :func:`compute` takes several times as
    many kernels; anything the screen does not confirm is measured in full.
    """
    k = rows_for(input.shape[dim], sample_rows)
    dtype = work_dtype(input.dtype)
    # detach(), not torch.no_grad(): two views cost less than the context manager
    i = sample_fibers(input.detach(), dim, k)
    t = sample_fibers(target.detach(), dim, k)
    i = i if i.dtype == dtype else i.to(dtype)
    t = t if t.dtype == dtype else t.to(dtype)
    if i.numel() <= _STACKED_SCREEN_ELEMENTS:  # one reduction: the fewest kernels
        pair = torch.stack((i, t)).exp() if log_target else torch.stack((i.exp(), t))
        sums = pair.sum(-1)
    else:  # no copy of the sample into a stack: less memory traffic
        sums = torch.stack((i.exp().sum(-1), (t.exp() if log_target else t).sum(-1)))
    least = t.amin() if target_min and not log_target else None
    return sums, least, i.amax() if input_max else None, t.amax() if target_max else None


def range_of(values: Sequence[float]) -> Range:
    if not values:
        return Range(math.inf, -math.inf)
    total = sum(values)
    if total != total:  # NaN somewhere (or +inf and -inf): the range is unknown
        return Range(math.nan, math.nan)
    return Range(min(values), max(values))


def unpack(values: Sequence[float], layout: Layout) -> dict[int, DimStats]:
    """Aggregate the per-row numbers read back from :func:`compute` into :class:`DimStats`.

    Rows whose target is all zeros (or all ``-inf``) are left out: that is
    how masked padding looks, and it carries no distribution.
    """
    out: dict[int, DimStats] = {}
    offset = 0
    for i, dim in enumerate(layout.dims):
        r = layout.rows[i]
        # per statistic: input's r values, then target's r values
        stat = {}
        for name in ROW_STATS:
            stat[name] = (values[offset : offset + r], values[offset + r : offset + 2 * r])
            offset += 2 * r
        loss_rows = values[offset : offset + r] if layout.with_loss else ()
        offset += r if layout.with_loss else 0
        (i_min, t_min), (i_max, t_max) = stat["min"], stat["max"]
        # Masked padding: a zero (or -inf) target row, or a zero input row,
        # as a masked teacher passed as the input (swapped) leaves it.
        keep = [
            j
            for j in range(r)
            if not (
                (t_min[j] == 0 and t_max[j] == 0)
                or t_max[j] == -math.inf
                or (i_min[j] == 0 and i_max[j] == 0)
            )
        ]
        zeros = sum(
            1 for j in range(r) if t_min[j] == 0 and t_max[j] == 0 and not i_min[j] == i_max[j] == 0
        )
        if len(keep) < r:
            stat = {
                name: ([pair[0][j] for j in keep], [pair[1][j] for j in keep])
                for name, pair in stat.items()
            }
            loss_rows = [loss_rows[j] for j in keep] if layout.with_loss else ()

        def side(
            which: int, stat: dict[str, tuple[Sequence[float], Sequence[float]]] = stat
        ) -> SideStats:
            return SideStats(
                row_sum=range_of(stat["row_sum"][which]),
                logsumexp=range_of(stat["logsumexp"][which]),
                value=Range(range_of(stat["min"][which]).lo, range_of(stat["max"][which]).hi),
                on_bfloat16=all(stat["on_bfloat16"][which]),
                on_float16=all(stat["on_float16"][which]),
            )

        out[dim] = DimStats(
            dim=dim,
            size=layout.sizes[i],
            rows=r,
            total_rows=layout.total_rows[i],
            kept=len(keep),
            input=side(0),
            target=side(1),
            loss_row_min=range_of(loss_rows).lo if layout.with_loss and keep else None,
            zero_target_rows=zeros,
        )
    return out

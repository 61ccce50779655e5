from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kl_guard._statistics import (
    _row_index,
    compute,
    flat_index,
    make_layout,
    sample_fibers,
    unpack,
)


@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    data=st.data(),
    k=st.integers(1, 9),
    contiguous=st.booleans(),
)
def test_sample_fibers_matches_a_reference(
    shape: list[int], data: st.DataObject, k: int, contiguous: bool
) -> None:
    # contiguous tensors take index_select on a flat view; strided ones advanced indexing
    x = torch.arange(2 * math.prod(shape), dtype=torch.float32).reshape(*shape, 2)[..., 0]
    x = x.contiguous() if contiguous else x
    dim = data.draw(st.integers(0, len(shape) - 1))
    rows = sample_fibers(x, dim, k)
    reference = x.movedim(dim, -1).reshape(-1, shape[dim])
    total = reference.shape[0]
    assert rows.shape == (min(total, k), shape[dim])
    if total <= k:
        assert torch.equal(rows, reference)
    else:
        # j * (total - 1) / (k - 1), rounded half up
        positions = (
            [(2 * j * (total - 1) + k - 1) // (2 * (k - 1)) for j in range(k)] if k > 1 else [0]
        )
        assert torch.equal(rows, reference[positions])


def test_sampling_copies_only_the_sampled_rows() -> None:
    x = torch.randn(4096, 2, 8).expand(4096, 2, 8).permute(1, 0, 2)  # non-contiguous
    rows = sample_fibers(x, 2, 16)
    assert rows.shape == (16, 8)
    assert rows.numel() < x.numel() / 100


@pytest.mark.parametrize(("total", "k"), [(200, 16), (17, 16), (5, 2), (1000, 3)])
def test_sampled_rows_are_evenly_spaced_first_and_last_included(total: int, k: int) -> None:
    rows = flat_index(total, k, torch.device("cpu")).tolist()
    assert rows[0] == 0 and rows[-1] == total - 1
    assert rows == sorted(set(rows)) and len(rows) == k
    gaps = [b - a for a, b in zip(rows, rows[1:], strict=False)]
    assert max(gaps) - min(gaps) <= 1


def test_row_multi_indices_address_the_same_rows() -> None:
    x = torch.arange(10 * 20).reshape(10, 20)
    flat = flat_index(200, 16, torch.device("cpu"))
    i, j = _row_index((10, 20), 16, torch.device("cpu"))
    assert torch.equal(x[i, j], flat)


def test_masked_rows_are_excluded() -> None:
    inp = torch.log_softmax(torch.randn(4, 3), 1)
    tgt = torch.softmax(torch.randn(4, 3), 1)
    tgt[1] = 0
    tgt[2] = float("-inf")
    packed_layout = make_layout((4, 3), (1,), 16, False)
    [stats] = unpack(compute(inp, tgt, None, (1,), 16).tolist(), packed_layout).values()
    assert stats.kept == 2
    assert stats.rows == 4
    assert stats.target.row_sum.lo == pytest.approx(1.0)
    assert stats.loss_row_min is None


@pytest.mark.parametrize(
    ("computed_in", "grids"),
    [
        (torch.float32, (False, False)),
        (torch.bfloat16, (True, True)),  # bfloat16's 8 bits of mantissa fit in float16's 11
        (torch.float16, (False, True)),
    ],
)
def test_values_computed_in_half_precision_are_recognized_in_float32(
    computed_in: torch.dtype, grids: tuple[bool, bool]
) -> None:
    x = torch.log_softmax(torch.randn(4, 300).to(computed_in), 1).float()
    [stats] = unpack(
        compute(x, x.exp(), None, (1,), 16).tolist(), make_layout((4, 300), (1,), 16, False)
    ).values()
    assert (stats.input.on_bfloat16, stats.input.on_float16) == grids

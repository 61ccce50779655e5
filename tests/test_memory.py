"""A long loop of guarded calls keeps memory flat and retains no tensor."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import logits
from kl_guard import _check, _lifecycle, _sites, _statistics

CALLS = 10_000  # half functional, half module
CHECK_EVERY = 20
SAMPLE_ROWS = 16
# Batch sizes above SAMPLE_ROWS, so that rows are indexed, more of them
# than the row index cache holds (256), so that it evicts, and a count prime
# to CHECK_EVERY, so that the checked calls meet every size.
BATCHES = range(17, 17 + 301)


def loop(calls: int, refs: list[weakref.ref[torch.Tensor]]) -> None:
    criterion = nn.KLDivLoss(reduction="batchmean")
    sites: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
        lambda inp, tgt: F.kl_div(inp, tgt, reduction="batchmean"),
        lambda inp, tgt: criterion(inp, tgt),
    )
    base = F.softmax(logits(BATCHES[-1], 5), 1)
    for i in range(calls):
        n = BATCHES[i % len(BATCHES)]
        inp = base[:n].clone()  # probabilities as input: a finding at every check
        tgt = base[:n].clone()
        loss = sites[i % 2](inp, tgt)
        if i % 100 < 2:
            refs += [weakref.ref(inp), weakref.ref(tgt), weakref.ref(loss)]


def test_ten_thousand_calls_keep_memory_flat() -> None:
    refs: list[weakref.ref[torch.Tensor]] = []
    # Traced from the start: a cache entry allocated untraced and evicted
    # later would not count as freed, and its successor would look like growth.
    _statistics._row_index.cache_clear()
    _statistics.flat_index.cache_clear()
    _check._CALLS.clear()
    _check._KNOWN.clear()
    _sites._file_kinds.clear()  # the files of this loop's frames, not of the whole session
    tracemalloc.start()
    try:
        kl_guard.install(mode="log", check_every=1, sample_rows=SAMPLE_ROWS)
        loop(2 * len(BATCHES), refs)  # warm up: every size at both sites, a full cache
        kl_guard.install(check_every=CHECK_EVERY)
        loop(2_000, refs)  # and torch's own pools, which settle within a few thousand
        gc.collect()
        snapshots = [tracemalloc.take_snapshot()]
        for _ in range(2):  # two halves
            loop(CALLS // 2, refs)
            gc.collect()
            snapshots.append(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    first, middle, last = (
        # what the loop allocates, not the weak references this test keeps
        snapshot.filter_traces([tracemalloc.Filter(False, __file__)])
        for snapshot in snapshots
    )
    # A leak grows with every call; what settles (torch's pools, a cache) does
    # not grow again in the second half. One small object per check is 16 KiB
    # a half; flat is a few KiB over both.
    late = last.compare_to(middle, "lineno")
    assert sum(stat.size_diff for stat in late) < 8 * 1024, late[:5]
    overall = last.compare_to(first, "lineno")
    assert sum(stat.size_diff for stat in overall) < 32 * 1024, overall[:5]

    assert [r for r in refs if r() is not None] == []
    layer = _lifecycle._LAYERS.base
    assert layer is not None
    assert len(layer.schedule.policy) == 2  # one entry per call site
    # one entry per (call site, code), counting every check
    checks = len(BATCHES) + (2_000 + CALLS) // 2 // CHECK_EVERY
    assert [(f.code, f.count) for f in layer.record.findings()] == [
        ("KLG003", checks),
        ("KLG004", checks),
    ] * 2
    assert _statistics._row_index.cache_info().currsize <= 256
    assert _statistics.flat_index.cache_info().currsize <= 256
    assert len(_sites._file_kinds) < 50
    assert len(_check._CALLS) <= _check._CALLS_LIMIT
    assert set(_check._KNOWN) == set(_check._CALLS.values())

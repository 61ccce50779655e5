"""One rank of the two-process gloo run in test_torch_features; run as a script.

``python ddp_worker.py RANK STORE`` trains one step of a DistributedDataParallel
model with and without kl_guard, then under guards with ``all_ranks`` off and
on, and prints a JSON report as its last line.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import kl_guard


def step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model.zero_grad()
    # nn.KLDivLoss()'s default reduction is 'mean': KLG001 on every rank
    loss = nn.KLDivLoss()(F.log_softmax(model(x), 1), target)
    loss.backward()
    return loss.detach(), *(p.grad.clone() for p in model.parameters() if p.grad is not None)


def main(rank: int, store: str) -> dict[str, Any]:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(8, 5))
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(4, 8, generator=generator)
    target = F.softmax(torch.randn(4, 5, generator=generator), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own 'mean' warning
        expected = step(model, x, target)
    report: dict[str, Any] = {}
    for all_ranks in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with kl_guard.guard("warn", check_every=1, all_ranks=all_ranks) as g:
                got = step(model, x, target)
                if rank == 1:
                    # probabilities as input (KLG003), on rank 1 only
                    F.kl_div(target, target, reduction="batchmean")
        report[f"all_ranks={all_ranks}"] = {
            "identical": all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)),
            "warned": sorted(
                w.category.code for w in caught if issubclass(w.category, kl_guard.KLGuardWarning)
            ),
            "found": sorted([f.code, f.rank] for f in g.findings),
            "ranks_in_messages": all(f"(rank {rank})" in f.message for f in g.findings),
        }
    dist.destroy_process_group()
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2])))

"""CUDA graphs with kl_guard: ``python benchmarks/cuda_graphs.py`` on a machine with a GPU.

A train step compiled with ``mode="reduce-overhead"`` (inductor's CUDA graphs)
whose cross_entropy gets a softmax (KLG010) and whose kl_div gets
probabilities (KLG003): checked at every step (``check_every=1``), the
findings' counts must grow with the steps, CUDA graphs replays included,
and inductor must not skip CUDA graphs for the step's graphs because of
kl_guard's recorder (``cudagraph_unsafe``: with graph partition it runs
between the CUDA-graphed parts). Prints the counts, inductor's skip
counter, and the step's time with and without kl_guard, side by side.
Exits 1 when a check is missing. Not run on CPU machines (see
docs/performance.md, "CUDA graphs").
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import kl_guard

STEPS = 20


def make_step() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    @torch.compile(mode="reduce-overhead")
    def forward(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        ce = F.cross_entropy(logits.softmax(1), y)  # KLG010
        kl = F.kl_div(logits.softmax(1), t, reduction="batchmean")  # KLG003
        return ce + kl

    def step() -> float:
        x = torch.randn(128, 64, device="cuda")
        y = torch.randint(0, 10, (128,), device="cuda")
        t = torch.softmax(torch.randn(128, 10, device="cuda"), 1)
        loss = forward(x, y, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss.detach())

    return model, step


def timed(step: object) -> float:
    assert callable(step)
    for _ in range(5):  # warm-up and recording
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / STEPS


def main() -> int:
    if not torch.cuda.is_available():
        print("cuda_graphs.py needs a GPU")
        return 2
    torch._dynamo.reset()
    plain = timed(make_step()[1])
    counters = torch._dynamo.utils.counters
    skips_plain = counters["inductor"]["cudagraph_skips"]
    torch._dynamo.reset()
    counters.clear()
    kl_guard.install(mode="log", check_every=1)
    guarded = timed(make_step()[1])
    kl_guard.flush()
    found = {f.code: f.count for f in kl_guard.findings()}
    skips = counters["inductor"]["cudagraph_skips"]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"step: {plain * 1e3:.3f} ms without kl_guard, {guarded * 1e3:.3f} ms with it")
    print(f"inductor's cudagraph skips: {skips_plain} without, {skips} with kl_guard")
    print(f"findings: {found} after {STEPS + 5} steps; {kl_guard.counts()}")
    steps = STEPS + 5
    ok = found.get("KLG010") == steps and found.get("KLG003") == steps and skips == skips_plain
    print("OK" if ok else "FAILED: a step went unchecked, or CUDA graphs were skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

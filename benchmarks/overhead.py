"""Overhead of kl_guard against the unpatched ``F.kl_div``, measured side by side.

    python benchmarks/overhead.py            # the full table (about a minute)
    python benchmarks/overhead.py --quick    # fewer repeats

Every variant runs in the same process, interleaved round by round, on one
thread; each figure is the best round (the least disturbed by the machine),
and ratios are against the unpatched call of the same round set.

Variants:
  unpatched      the original ``F.kl_div``, captured before ``install()``
  default        ``install()`` with the default policy, in steady state
                 (the call site is past its first checks)
  check_every=1  every call checked
  detect_anomaly ``torch.autograd.detect_anomaly()`` for reference
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import kl_guard

ORIGINAL_KL_DIV = F.kl_div
Step = Callable[[], object]


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def best_time(fn: Step, number: int, rounds: int, context: Callable[[], object]) -> float:
    """Best mean seconds per call over ``rounds`` rounds of ``number`` calls."""
    times = []
    for _ in range(rounds):
        with context():  # type: ignore[attr-defined]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times.append((time.perf_counter() - start) / number)
    return min(times)


def interleaved(
    variants: dict[str, tuple[Step, Callable[[], object]]], number: int, rounds: int
) -> dict[str, float]:
    """Time each variant one round at a time, in turn, so drift hits all alike."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fn, context) in variants.items():
            results[name].append(best_time(fn, number, 1, context))
    return {name: min(times) for name, times in results.items()}


def warm_up(fn: Step, calls: int = 5000, seconds: float = 2.0) -> None:
    """Take a call site past the default policy's first checks, into its steady state."""
    deadline = time.perf_counter() + seconds
    for _ in range(calls):
        fn()
        if time.perf_counter() > deadline:
            break


def loss_variants(shape: tuple[int, ...]) -> dict[str, tuple[Step, Callable[[], object]]]:
    g = torch.Generator().manual_seed(0)
    inp = F.log_softmax(torch.randn(*shape, generator=g), -1)
    tgt = F.softmax(torch.randn(*shape, generator=g), -1)

    def unpatched() -> object:
        return ORIGINAL_KL_DIV(inp, tgt, reduction="batchmean")

    def default() -> object:
        return F.kl_div(inp, tgt, reduction="batchmean")

    def every_call() -> object:
        return F.kl_div(inp, tgt, reduction="batchmean")

    warm_up(default)
    return {
        "unpatched": (unpatched, nothing),
        "default": (default, nothing),
        "check_every=1": (every_call, lambda: kl_guard.guard(check_every=1)),
        "detect_anomaly": (unpatched, torch.autograd.detect_anomaly),
    }


class MLP(nn.Module):
    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def training_variants() -> dict[str, tuple[Step, Callable[[], object]]]:
    """A distillation step: teacher and student MLPs, batch 128, 1000 classes."""
    torch.manual_seed(0)
    teacher, student = MLP(1024, 1000).eval(), MLP(512, 1000)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    x = torch.randn(128, 256)
    temperature = 2.0

    def make_step(kl_div: Callable[..., torch.Tensor]) -> Step:
        def step() -> object:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / temperature, dim=1)
            loss = kl_div(
                F.log_softmax(student(x) / temperature, dim=1), soft, reduction="batchmean"
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        return step

    unpatched = make_step(ORIGINAL_KL_DIV)
    default = make_step(lambda *a, **k: F.kl_div(*a, **k))
    warm_up(default)
    return {
        "unpatched": (unpatched, nothing),
        "default": (default, nothing),
        "check_every=1": (
            make_step(lambda *a, **k: F.kl_div(*a, **k)),
            lambda: kl_guard.guard(check_every=1),
        ),
        "detect_anomaly": (unpatched, torch.autograd.detect_anomaly),
    }


def check_cost(batch: int, classes: int, number: int, rounds: int) -> float:
    """Seconds one check adds at this batch size (check_every=1 minus unpatched)."""
    variants = loss_variants((batch, classes))
    picked = {k: variants[k] for k in ("unpatched", "check_every=1")}
    t = interleaved(picked, number, rounds)
    return t["check_every=1"] - t["unpatched"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, rougher figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scale = 0.2 if args.quick else 1.0
    kl_guard.install(mode="log")

    print(f"kl_guard overhead, torch {torch.__version__}, 1 thread, CPU")
    print(f"{'workload':<22}{'unpatched':>12}{'default':>10}{'every=1':>10}{'anomaly':>10}")
    workloads: list[tuple[str, Callable[[], dict[str, tuple[Step, Callable[[], object]]]], int]]
    workloads = [
        ("kl_div [32, 10]", lambda: loss_variants((32, 10)), 2000),
        ("kl_div [256, 1000]", lambda: loss_variants((256, 1000)), 40),
        ("kl_div [64, 32000]", lambda: loss_variants((64, 32000)), 10),
        ("distill step b128", training_variants, 20),
    ]
    for name, make, number in workloads:
        t = interleaved(make(), max(1, int(number * scale)), 7 if args.quick else 15)
        base = t["unpatched"]
        print(
            f"{name:<22}{base * 1e6:>10.1f}us"
            f"{t['default'] / base:>9.3f}x{t['check_every=1'] / base:>9.3f}x"
            f"{t['detect_anomaly'] / base:>9.3f}x"
        )

    costs = {b: check_cost(b, 1000, max(1, int(30 * scale)), 9) for b in (256, 4096)}
    print(
        f"one check at [b, 1000]: b=256 {costs[256] * 1e6:.0f}us, "
        f"b=4096 {costs[4096] * 1e6:.0f}us, ratio {costs[4096] / costs[256]:.2f}"
    )
    counts = [f.count for f in kl_guard.findings()]
    kl_guard.uninstall()
    if counts:
        print(f"(findings during the benchmark: {counts}; expected none)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

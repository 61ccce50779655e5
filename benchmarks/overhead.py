"""Overhead of kl_guard against the unpatched ``F.kl_div``, measured side by side.

    python benchmarks/overhead.py                 # the full table, CPU, one thread
    python benchmarks/overhead.py --quick         # fewer repeats, rougher figures
    python benchmarks/overhead.py --device cuda   # the same table on a GPU
    python benchmarks/overhead.py --floor         # and what a checked call cannot beat

Every variant runs in the same process, interleaved round by round, so a
drift of the machine hits all of them alike; each figure is the best round
(the least disturbed), and every ratio is against the unpatched call.

Variants:
  unpatched      the original ``F.kl_div``, captured before ``install()``
  default        ``install()`` with the default policy, in steady state
                 (the call site is past its first checks)
  check_every=1  every call checked
  detect_anomaly ``torch.autograd.detect_anomaly()``, for reference
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from kl_guard import _check, _patch
from kl_guard._config import Config

# In a dict, not a module global: install() points the module globals that
# hold F.kl_div at its wrapper.
UNPATCHED: dict[str, Callable[..., torch.Tensor]] = {"kl_div": F.kl_div}
Step = Callable[[], object]
Context = Callable[[], AbstractContextManager[object]]
Variants = dict[str, tuple[Step, Context]]


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def every_call() -> AbstractContextManager[object]:
    return kl_guard.guard(check_every=1)


def anomaly() -> AbstractContextManager[object]:
    return torch.autograd.detect_anomaly(check_nan=True)


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def round(
        self, fn: Step, number: int, context: Callable[[], AbstractContextManager[object]]
    ) -> float:
        """Mean seconds per call over ``number`` calls."""
        with context():
            fn()
            self.sync()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            self.sync()
            return (time.perf_counter() - start) / number

    def interleaved(self, variants: Variants, number: int, rounds: int) -> dict[str, float]:
        """Time each variant one round at a time, in turn; keep each one's best round."""
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, (fn, context) in variants.items():
                best[name] = min(best[name], self.round(fn, number, context))
        return best


def warm_up(fn: Step, calls: int = 5000, seconds: float = 3.0) -> None:
    """Take a call site past the default policy's first checks, into its steady state."""
    deadline = time.perf_counter() + seconds
    for _ in range(calls):
        fn()
        if time.perf_counter() > deadline:
            break


def loss_variants(shape: tuple[int, ...], device: torch.device) -> Variants:
    g = torch.Generator(device=device).manual_seed(0)
    inp = F.log_softmax(torch.randn(*shape, generator=g, device=device), -1)
    tgt = F.softmax(torch.randn(*shape, generator=g, device=device), -1)
    original = UNPATCHED["kl_div"]

    def unpatched() -> object:
        return original(inp, tgt, reduction="batchmean")

    def default() -> object:
        return F.kl_div(inp, tgt, reduction="batchmean")

    def checked() -> object:
        return F.kl_div(inp, tgt, reduction="batchmean")

    warm_up(default)
    return {
        "unpatched": (unpatched, nothing),
        "default": (default, nothing),
        "check_every=1": (checked, every_call),
        "detect_anomaly": (unpatched, anomaly),
    }


def mlp(width: int, device: torch.device) -> nn.Module:
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, 1000)).to(device)


def training_variants(device: torch.device) -> Variants:
    """A distillation step: teacher and student MLPs, batch 128, 1000 classes."""
    torch.manual_seed(0)
    teacher, student = mlp(1024, device).eval(), mlp(512, device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    x = torch.randn(128, 256, device=device)
    temperature = 2.0

    def make_step(kl_div: Callable[..., torch.Tensor]) -> Step:
        def step() -> object:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / temperature, dim=1)
            log_probs = F.log_softmax(student(x) / temperature, dim=1)
            loss = kl_div(log_probs, soft, reduction="batchmean") * temperature**2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            return loss

        return step

    def patched(*args: object, **kwargs: object) -> torch.Tensor:
        return F.kl_div(*args, **kwargs)  # type: ignore[arg-type]

    default = make_step(patched)
    warm_up(default, calls=300)
    return {
        "unpatched": (make_step(UNPATCHED["kl_div"]), nothing),
        "default": (default, nothing),
        "check_every=1": (make_step(patched), every_call),
        "detect_anomaly": (make_step(UNPATCHED["kl_div"]), anomaly),
    }


def check_cost(timer: Timer, batch: int, number: int, rounds: int) -> float:
    """Seconds of one check of a correct [batch, 1000] call, as the wrapper makes it.

    Timed directly: the difference of two timings of a 60 ms call would
    drown a check of a few hundred microseconds in noise.
    """
    g = torch.Generator(device=timer.device).manual_seed(0)
    inp = F.log_softmax(torch.randn(batch, 1000, generator=g, device=timer.device), -1)
    tgt = F.softmax(torch.randn(batch, 1000, generator=g, device=timer.device), -1)
    loss = UNPATCHED["kl_div"](inp, tgt, reduction="batchmean")
    call = _check.describe(inp, tgt, api="function", reduction="batchmean")
    assert call is not None
    rows = Config().sample_rows

    def one_check() -> object:
        return _check.examine(call, inp, tgt, loss, sample_rows=rows)

    return timer.interleaved({"check": (one_check, nothing)}, number, rounds)["check"]


def floor_variants(device: torch.device) -> Variants:
    """What a checked ``[32, 10]`` call cannot cost less than, built up in steps.

    ``bare check`` is the least a check written in Python can do: wrapt's
    call, a signature looked up in a dict, the screen's three kernels and two
    read-backs, and the bounds; no scheduling, call site, tensor tests or
    reporting. Its ratio is the floor of ``check_every=1`` at this size.
    """
    g = torch.Generator(device=device).manual_seed(0)
    inp = F.log_softmax(torch.randn(32, 10, generator=g, device=device), -1)
    tgt = F.softmax(torch.randn(32, 10, generator=g, device=device), -1)
    signatures: dict[tuple[object, ...], tuple[float, float]] = {}
    original = UNPATCHED["kl_div"]

    def passed_on(wrapped: Callable[..., object], _: object, args: Any, kwargs: Any) -> object:
        return wrapped(*args, **kwargs)

    def bare_check(wrapped: Callable[..., Any], _: object, args: Any, kwargs: Any) -> object:
        loss = wrapped(*args, **kwargs)
        i, t = args
        key = (i.shape, i.dtype, i.requires_grad, t.shape, t.dtype, t.requires_grad)
        low, high = signatures.setdefault((*key, kwargs.get("reduction")), (0.995, 1.005))
        value = loss.item()
        input_sums, target_sums = torch.stack((i.detach().exp(), t.detach())).sum(-1).tolist()
        if not (
            low <= min(input_sums)
            and max(input_sums) <= high
            and low <= min(target_sums)
            and max(target_sums) <= high
            and value >= -1e-6
        ):
            raise AssertionError("the bare check failed a correct call")
        return loss

    def wrapped_by(wrapper: Callable[..., object]) -> Step:
        patched = _patch.wrap(F, original, wrapper, [True])
        return lambda: patched(inp, tgt, reduction="batchmean")

    def kernels_alone() -> object:
        loss = original(inp, tgt, reduction="batchmean")
        return loss.item(), torch.stack((inp.exp(), tgt)).sum(-1).tolist()

    def kl_guard_every() -> object:
        return F.kl_div(inp, tgt, reduction="batchmean")

    return {
        "unpatched": (lambda: original(inp, tgt, reduction="batchmean"), nothing),
        "wrapt, passed on": (wrapped_by(passed_on), nothing),
        "+ the screen's kernels": (kernels_alone, nothing),
        "bare check": (wrapped_by(bare_check), nothing),
        "kl_guard, every=1": (kl_guard_every, every_call),
    }


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark here takes."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, rougher figures")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser


def start(args: argparse.Namespace, *, rounds: int) -> tuple[torch.device, Timer, float, int]:
    """The device, its timer, the scale of the repeats and the rounds; kl_guard installed."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    kl_guard.install(mode="log")  # a finding would show, not stop the benchmark
    return device, Timer(device), *((0.3, 5) if args.quick else (1.0, rounds))


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--floor", action="store_true", help="also the floor of a checked call at [32, 10]"
    )
    args = parser.parse_args(argv)
    device, timer, scale, rounds = start(args, rounds=15)

    print(f"kl_guard overhead: torch {torch.__version__}, {device}, {args.threads} thread(s)")
    print(f"{'workload':<20}{'unpatched':>12}{'default':>10}{'every=1':>10}{'anomaly':>10}")
    workloads: list[tuple[str, Callable[[], Variants], int]] = [
        ("kl_div [32, 10]", lambda: loss_variants((32, 10), device), 3000),
        ("kl_div [256, 1000]", lambda: loss_variants((256, 1000), device), 60),
        ("kl_div [64, 32000]", lambda: loss_variants((64, 32000), device), 15),
        ("distill step b128", lambda: training_variants(device), 30),
    ]
    for name, make, number in workloads:
        t = timer.interleaved(make(), max(2, int(number * scale)), rounds)
        base = t["unpatched"]
        print(
            f"{name:<20}{base * 1e6:>10.1f}us"
            f"{t['default'] / base:>9.3f}x{t['check_every=1'] / base:>9.3f}x"
            f"{t['detect_anomaly'] / base:>9.3f}x"
        )
    small, large = (check_cost(timer, b, max(2, int(100 * scale)), rounds) for b in (256, 4096))
    print(
        f"one check of [b, 1000]: {small * 1e6:.0f}us at b=256, {large * 1e6:.0f}us at b=4096 "
        f"(ratio {large / small:.2f})"
    )
    if args.floor:
        t = timer.interleaved(floor_variants(device), max(2, int(3000 * scale)), rounds)
        print("the floor of a checked call at [32, 10], against the unpatched one:")
        for name, seconds in t.items():
            print(f"  {name:<24}{seconds * 1e6:>8.1f}us{seconds / t['unpatched']:>8.2f}x")
    return finish()


def finish() -> int:
    """Uninstall kl_guard: 0, or 1 when it found anything in the benchmark's correct calls."""
    found = kl_guard.findings()
    kl_guard.uninstall()
    if found:
        print(f"unexpected findings: {[(f.code, f.location) for f in found]}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Overhead of kl_guard in code compiled with ``torch.compile``, measured side by side.

    python benchmarks/compiled.py                  # inductor and aot_eager, CPU, one thread
    python benchmarks/compiled.py --quick          # fewer repeats, rougher figures
    python benchmarks/compiled.py --device cuda    # the same table on a GPU

Every variant runs in the same process, interleaved round by round (see
``overhead.py``); each ratio is against the same step compiled without kl_guard.

Workloads: a compiled ``kl_div`` of a ``[32, 10]`` call alone (what one call
costs), and a distillation step, its forward and loss compiled
(``fullgraph=True``), then backward and an SGD step. Variants:
  unpatched      compiled while ``F.kl_div`` is torch's own
  default        kl_guard's default policy, in steady state (1 call in 1024 checked)
  not checked    a schedule that checks no call in the timed rounds
  check_every=1  every call checked, after the graph computed its loss

Then the compile time, caches off, of the step without and with kl_guard.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from overhead import (
    UNPATCHED,
    Step,
    Variants,
    benchmark_parser,
    finish,
    mlp,
    nothing,
    start,
    warm_up,
)

import kl_guard

KlDiv = Callable[..., torch.Tensor]


def patched(*args: object, **kwargs: object) -> torch.Tensor:
    return F.kl_div(*args, **kwargs)  # type: ignore[arg-type]


def every_call() -> AbstractContextManager[object]:
    return kl_guard.guard(check_every=1)


def no_call() -> AbstractContextManager[object]:
    # a fresh schedule checks its first call: the round's untimed warm-up call
    return kl_guard.guard(check_every=1 << 30)


class Loss:
    """The loss alone, ``kl_div`` of a ``[32, 10]`` call, compiled: what a call costs."""

    def __init__(self, device: torch.device) -> None:
        g = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(32, 10, generator=g, device=device)
        self.target = F.softmax(torch.randn(32, 10, generator=g, device=device), -1)

    def step(self, kl_div: KlDiv, backend: str) -> Step:
        target = self.target

        def loss(x: torch.Tensor) -> torch.Tensor:
            return kl_div(F.log_softmax(x, -1), target, reduction="batchmean")

        compiled, x = torch.compile(loss, backend=backend, fullgraph=True), self.x
        return lambda: compiled(x)


class Workload:
    """A distillation step, teacher and student MLPs, ``batch`` rows of 1000 classes."""

    def __init__(self, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.teacher, self.student = mlp(1024, device).eval(), mlp(512, device)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.01)
        self.x = torch.randn(batch, 256, device=device)

    def loss_fn(self, kl_div: KlDiv) -> Callable[[torch.Tensor], torch.Tensor]:
        teacher, student, temperature = self.teacher, self.student, 2.0

        def loss(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / temperature, dim=1)
            log_probs = F.log_softmax(student(x) / temperature, dim=1)
            return kl_div(log_probs, soft, reduction="batchmean") * temperature**2

        return loss

    def step(self, kl_div: KlDiv, backend: str) -> Step:
        loss_fn = torch.compile(self.loss_fn(kl_div), backend=backend, fullgraph=True)
        optimizer, x = self.optimizer, self.x

        def step() -> object:
            loss = loss_fn(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            return loss

        return step


def variants(workload: Loss | Workload, backend: str) -> Variants:
    default = workload.step(patched, backend)
    warm_up(default, calls=300)
    checked = workload.step(patched, backend)
    return {
        "unpatched": (workload.step(UNPATCHED["kl_div"], backend), nothing),
        "default": (default, nothing),
        "not checked": (checked, no_call),
        "check_every=1": (checked, every_call),
    }


@contextlib.contextmanager
def cold_compiler() -> Iterator[None]:
    torch._dynamo.reset()
    with warnings.catch_warnings(), torch._inductor.config.patch(force_disable_caches=True):
        warnings.filterwarnings("ignore", "dynamo_pgo force disabled")
        yield
    torch._dynamo.reset()


def compile_seconds(workload: Workload, kl_div: KlDiv, backend: str, rounds: int) -> float:
    """Best time of the first call (the compilation) of the step's loss, caches off."""
    best = float("inf")
    for _ in range(rounds):
        with cold_compiler():
            loss_fn = torch.compile(workload.loss_fn(kl_div), backend=backend, fullgraph=True)
            start = time.perf_counter()
            loss_fn(workload.x).backward()  # type: ignore[no-untyped-call]
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    args = benchmark_parser(__doc__).parse_args(argv)
    device, timer, scale, rounds = start(args, rounds=9)

    print(
        f"kl_guard in compiled code: torch {torch.__version__}, {device}, {args.threads} thread(s)"
    )
    print(f"{'workload':<24}{'unpatched':>12}{'default':>10}{'unchecked':>10}{'every=1':>10}")
    for backend in ("inductor", "aot_eager"):
        workloads: list[tuple[str, Loss | Workload, int]] = [
            ("kl_div [32, 10]", Loss(device), 2000),
            ("step b8", Workload(8, device), 100),
            ("step b128", Workload(128, device), 15),
        ]
        for name, workload, number in workloads:
            t = timer.interleaved(variants(workload, backend), max(2, int(number * scale)), rounds)
            base = t["unpatched"]
            print(
                f"{f'{backend}, {name}':<24}{base * 1e6:>10.1f}us"
                f"{t['default'] / base:>9.3f}x{t['not checked'] / base:>9.3f}x"
                f"{t['check_every=1'] / base:>9.3f}x"
            )
    workload = Workload(128, device)
    for backend in ("inductor", "aot_eager"):
        plain, guarded = (
            compile_seconds(workload, kl_div, backend, 1 if args.quick else 3)
            for kl_div in (UNPATCHED["kl_div"], patched)
        )
        print(
            f"compile, {backend}: {plain:.2f}s unpatched, {guarded:.2f}s with kl_guard "
            f"({guarded - plain:+.2f}s)"
        )
    return finish()


if __name__ == "__main__":
    raise SystemExit(main())

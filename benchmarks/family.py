"""Overhead of kl_guard on the loss family, measured side by side (issue 21).

    python benchmarks/family.py                 # CPU, one thread; about five minutes
    python benchmarks/family.py --quick         # fewer repeats, rougher figures
    python benchmarks/family.py --device cuda   # the same tables on a GPU

Workloads: F.cross_entropy at ``[256, 1000]`` float32 and at ``[8192, 32000]``
bfloat16 (a language model's flattened logits), F.binary_cross_entropy_with_logits
at ``[64, 80]``, a classification training step (an MLP, nn.CrossEntropyLoss
and an SGD step), and the mixed distillation case: F.kl_div and F.cross_entropy
called from two lines, alone and in a step.

Unlike ``overhead.py``, kl_guard is not installed while the unpatched variant
runs: a patched module's class would route its forward through the wrapper.
Each guarded round enters its own ``kl_guard.guard()`` (the patch, outside the
timing). Variants, interleaved round by round:
  unpatched      torch's own losses, kl_guard off
  not checked    a guard whose schedule checks none of the timed calls: what
                 every call but one in 1024 pays with the default policy
  check_every=1  every call checked

Each ratio is the median over rounds of the variant's time over the unpatched
time of the same round; ``+us``, the median of their differences.

Then one check of a ``[8192, 32000]`` bfloat16 call timed directly, the
family's (``_family_check.examine``) beside kl_div's (``_check.examine``).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from overhead import Step, Timer, Variants, benchmark_parser, mlp, nothing
from torch import nn

import kl_guard
from kl_guard import _check, _checking, _family_check
from kl_guard._config import Config
from kl_guard._contract import CROSS_ENTROPY
from kl_guard._family_rules import FamilyCall

Workload = tuple[str, Callable[[], Step], int]


@contextlib.contextmanager
def guarded(check_every: int) -> Iterator[None]:
    """A guard for one round; a finding in the benchmark's correct calls stops it."""
    with kl_guard.guard(mode="log", check_every=check_every) as g:
        yield
    if g.findings:
        raise AssertionError(f"unexpected findings: {[(f.code, f.location) for f in g.findings]}")


def variants(step: Step) -> Variants:
    return {
        "unpatched": (step, nothing),
        # the round's untimed first call is the fresh schedule's one check
        "not checked": (step, lambda: guarded(1 << 30)),
        "check_every=1": (step, lambda: guarded(1)),
    }


def medians(
    timer: Timer, workload: Variants, number: int, rounds: int
) -> tuple[float, dict[str, tuple[float, float]]]:
    """The unpatched seconds per call, and each variant's (ratio, extra seconds), by median."""
    times: dict[str, list[float]] = {name: [] for name in workload}
    for _ in range(rounds):
        for name, (fn, context) in workload.items():
            times[name].append(timer.round(fn, number, context))
    base = times["unpatched"]
    return statistics.median(base), {
        name: (
            statistics.median(t / b for t, b in zip(ts, base, strict=True)),
            statistics.median(t - b for t, b in zip(ts, base, strict=True)),
        )
        for name, ts in times.items()
    }


def logits_and_labels(
    shape: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(*shape, generator=g, device=device).to(dtype)
    return logits, torch.randint(0, shape[1], shape[:1], generator=g, device=device)


def cross_entropy(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> Step:
    logits, labels = logits_and_labels(shape, dtype, device)
    return lambda: F.cross_entropy(logits, labels)


def bce_with_logits(device: torch.device) -> Step:
    logits, _ = logits_and_labels((64, 80), torch.float32, device)
    multi = torch.randint(0, 2, (64, 80), device=device).float()
    return lambda: F.binary_cross_entropy_with_logits(logits, multi)


def kl_div(device: torch.device) -> Step:
    logits, _ = logits_and_labels((32, 10), torch.float32, device)
    x, t = F.log_softmax(logits, 1), F.softmax(logits.flip(0), 1)
    return lambda: F.kl_div(x, t, reduction="batchmean")


def pair(device: torch.device) -> Step:
    """F.kl_div and F.cross_entropy from two lines, as a distillation loss calls them."""
    logits, labels = logits_and_labels((32, 10), torch.float32, device)
    x, t = F.log_softmax(logits, 1), F.softmax(logits.flip(0), 1)

    def step() -> object:
        soft = F.kl_div(x, t, reduction="batchmean")
        hard = F.cross_entropy(logits, labels)
        return soft, hard

    return step


def classification_step(device: torch.device) -> Step:
    """An MLP on 784 features, batch 64, 10 classes: forward, nn.CrossEntropyLoss, SGD."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, labels = torch.randn(64, 784, device=device), torch.randint(0, 10, (64,), device=device)

    def step() -> object:
        loss = criterion(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def distillation_step(device: torch.device) -> Step:
    """overhead.py's distillation step (teacher and student MLPs, batch 128, 1000
    classes) with a hard-label term: F.kl_div and F.cross_entropy every step."""
    torch.manual_seed(0)
    teacher, student = mlp(1024, device).eval(), mlp(512, device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    x, labels = torch.randn(128, 256, device=device), torch.randint(0, 1000, (128,), device=device)
    temperature = 2.0

    def step() -> object:
        with torch.no_grad():
            soft = F.softmax(teacher(x) / temperature, dim=1)
        logits = student(x)
        log_probs = F.log_softmax(logits / temperature, dim=1)
        distill = F.kl_div(log_probs, soft, reduction="batchmean") * temperature**2
        hard = F.cross_entropy(logits, labels)
        loss = 0.5 * distill + 0.5 * hard
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss

    return step


def check_costs(timer: Timer, shape: tuple[int, int], rounds: int) -> dict[str, float]:
    """Median seconds of one check of a correct bfloat16 call of ``shape``, as the wrapper
    makes it: cross_entropy with labels, with soft targets, and kl_div."""
    logits, labels = logits_and_labels(shape, torch.bfloat16, timer.device)
    probs = F.softmax(logits.flip(0), -1)
    log_probs = F.log_softmax(logits, -1)
    rows = Config().sample_rows
    kl_call = _check.describe(log_probs, probs, api="function", reduction="batchmean")
    kl_loss = F.kl_div(log_probs, probs, reduction="batchmean")
    assert kl_call is not None

    def family_check(target: torch.Tensor) -> Step:
        call, _ = _checking.call_of(CROSS_ENTROPY, (logits, target), {}, None, False)
        assert isinstance(call, FamilyCall)
        return lambda: _family_check.examine(call, logits, target, None, sample_rows=rows)

    checks: dict[str, Step] = {
        "cross_entropy, labels": family_check(labels),
        "cross_entropy, soft target": family_check(probs),
        "kl_div": lambda: _check.examine(kl_call, log_probs, probs, kl_loss, sample_rows=rows),
    }
    for name, check in checks.items():
        if check():
            raise AssertionError(f"the check of a correct {name} call found something")
    times: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(rounds):
        for name, check in checks.items():
            times[name].append(timer.round(check, 20, nothing))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = benchmark_parser(__doc__).parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    timer = Timer(device)
    scale, rounds = (0.3, 5) if args.quick else (1.0, 15)
    big = (8192, 32000)
    workloads: list[Workload] = [
        ("ce [32, 10]", lambda: cross_entropy((32, 10), torch.float32, device), 3000),
        ("kl_div [32, 10]", lambda: kl_div(device), 3000),
        ("kl_div+ce [32, 10]", lambda: pair(device), 1500),
        ("ce [256, 1000]", lambda: cross_entropy((256, 1000), torch.float32, device), 100),
        ("ce [8192, 32000] bf16", lambda: cross_entropy(big, torch.bfloat16, device), 1),
        ("bce_logits [64, 80]", lambda: bce_with_logits(device), 3000),
        ("train step b64", lambda: classification_step(device), 100),
        ("distill+ce step b128", lambda: distillation_step(device), 30),
    ]
    print(
        f"kl_guard on the loss family: torch {torch.__version__}, {device}, "
        f"{args.threads} thread(s), median of {rounds} rounds"
    )
    print(f"{'workload':<23}{'unpatched':>12}{'not checked':>20}{'every=1':>22}")
    for name, make, number in workloads:
        base, t = medians(timer, variants(make()), max(1, int(number * scale)), rounds)
        cells = "".join(
            f"{t[v][0]:>9.3f}x {t[v][1] * 1e6:>+9.1f}us" for v in ("not checked", "check_every=1")
        )
        print(f"{name:<23}{base * 1e6:>10.1f}us {cells}")
    print(f"one check of a correct [{big[0]}, {big[1]}] bf16 call, median of {rounds} rounds:")
    costs = check_costs(timer, big, rounds)
    for name, seconds in costs.items():
        print(f"  {name:<28}{seconds * 1e6:>9.0f}us{seconds / costs['kl_div']:>7.2f}x kl_div's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

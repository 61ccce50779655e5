"""Instructions per call of kl_guard's paths, counted by callgrind: noise-free.

    python benchmarks/instructions.py            # needs valgrind; a few minutes
    python benchmarks/instructions.py orig on ce-orig ce-on mix-orig mix-on

Wall-clock ratios on a small, shared machine drift by tens of percent at the
15 us of a ``[32, 10]`` call; callgrind's instruction counts do not. One
process runs every variant in turn, each past its first calls, between two
calls of ``time.sleep(0)``: callgrind dumps its counts at each
(``--dump-before=time_sleep``), so each variant's loop is counted alone,
without the start-up.

A variant is a call and a state, ``CALL-STATE`` (``STATE`` alone for F.kl_div).
Calls, each at its smallest realistic shape, ``[32, 10]``: F.kl_div
(log-probabilities, probabilities, ``'batchmean'``); ``op``, a direct call of
the op ``torch.kl_div(x, t, 2)``; ``mod``, nn.KLDivLoss; ``ce`` and ``ce-mod``, F.cross_entropy and
nn.CrossEntropyLoss on logits and int64 labels; ``nll``, F.nll_loss on
log-probabilities; ``bce`` and ``bce-mod``, F.binary_cross_entropy_with_logits
and nn.BCEWithLogitsLoss on logits and 0/1 targets; ``mix``, a distillation
step's two lines, F.kl_div then F.cross_entropy, counted per loss call (half
an iteration). States: ``orig`` (unpatched), ``bare`` (the function in a wrapt
``FunctionWrapper`` that only calls through: the least a wrapt patch costs, the
floor of ``on``), ``off`` (patched, mode off:
wrapt's call and the first tests of kl_guard's gate), ``on`` (installed, a
call site past its checks: the path every not-checked call pays), ``every``
(``check_every=1``: the check of a correct call, every call).

Instructions are not time: the checked path's Python and its many small
kernels run at a lower rate than torch's own loop, so its wall-clock ratio
is larger than its ratio here (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

CALLS = ("", "op", "mod", "ce", "ce-mod", "nll", "bce", "bce-mod", "mix")
STATES = ("orig", "bare", "off", "on", "every")
VARIANTS = tuple(f"{call}-{state}".lstrip("-") for call in CALLS for state in STATES)
#: Loss calls per iteration of a variant's loop.
PER_ITERATION = {"mix": 2}

WORKLOAD = """
import sys, time, torch, torch.nn.functional as F, kl_guard, wrapt
from torch import nn
torch.set_num_threads(1)
calls, variants = int(sys.argv[1]), sys.argv[2:]
x = F.log_softmax(torch.randn(32, 10), 1)
t = F.softmax(torch.randn(32, 10), 1)
logits = torch.randn(32, 10)
labels = torch.randint(0, 10, (32,))
multi = torch.randint(0, 2, (32, 10)).float()
def functions():
    return {
        "kl_div": F.kl_div,
        "op": torch.kl_div,
        "ce": F.cross_entropy,
        "nll": F.nll_loss,
        "bce": F.binary_cross_entropy_with_logits,
    }

unpatched = functions()  # not module globals, which install() would rebind

def passthrough(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs)

# the least a wrapt patch costs: a FunctionWrapper whose wrapper only calls through
bare = {name: wrapt.FunctionWrapper(fn, passthrough) for name, fn in unpatched.items()}
setup = {
    "orig": lambda: None,
    "bare": lambda: None,
    "off": lambda: kl_guard.install(mode="off"),
    "on": lambda: kl_guard.install(mode="log", check_every=10**9),
    "every": lambda: kl_guard.install(mode="warn", check_every=1),
}
kl_module = nn.KLDivLoss(reduction="batchmean")
ce_module, bce_module = nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()

def loss(call, state):
    \"\"\"The function a variant calls, its loop and its two tensors; a module's class
    is patched, so the module is the same object in every state.\"\"\"
    now = {"orig": unpatched, "bare": bare}.get(state) or functions()
    return {
        "": (now["kl_div"], loop_kl, x, t),
        "op": (now["op"], loop_op, x, t),
        "mod": (kl_module, loop, x, t),
        "ce": (now["ce"], loop, logits, labels),
        "ce-mod": (ce_module, loop, logits, labels),
        "nll": (now["nll"], loop, x, labels),
        "bce": (now["bce"], loop, logits, multi),
        "bce-mod": (bce_module, loop, logits, multi),
    }[call]

# each call spelled out, as a training loop spells it
def loop_kl(fn, a, b, n):
    for _ in range(n):
        fn(a, b, reduction="batchmean")

def loop_op(fn, a, b, n):
    for _ in range(n):
        fn(a, b, 2)

def loop(fn, a, b, n):
    for _ in range(n):
        fn(a, b)

def loop_mix(kl_div, cross_entropy, n):
    for _ in range(n):
        kl_div(x, t, reduction="batchmean")
        cross_entropy(logits, labels)

for variant in variants:
    call, _, state = variant.rpartition("-")
    kl_guard.uninstall()
    setup[state]()
    if call == "mix":
        run = lambda n: loop_mix(loss("", state)[0], loss("ce", state)[0], n)
    else:
        fn, run_loop, a, b = loss(call, state)
        run = lambda n: run_loop(fn, a, b, n)
    run(50)  # the site's first (checked) calls, and the caches
    time.sleep(0)  # callgrind dumps here: what ran before is left out
    run(calls)
    time.sleep(0)  # and here: this dump is the loop alone
"""


def count(script: str, calls: int, variants: list[str]) -> dict[str, float]:
    """Instructions per loss call of each variant, from one run under callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=time_sleep",
                f"--callgrind-out-file={out}",
                sys.executable,
                script,
                str(calls),
                *variants,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        parts: dict[int, int] = {}
        for path in glob.glob(out + ".*"):
            with open(path) as f:
                head = f.read(4096)
            part = re.search(r"^part: (\d+)", head, re.MULTILINE)
            total = re.search(r"^summary: (\d+)", head, re.MULTILINE)
            if part and total:
                parts[int(part.group(1))] = int(total.group(1))
    # part 1 runs up to the first sleep; then each variant's loop, and what
    # runs up to the next variant's loop, in turn
    loops = [parts.get(2 + 2 * i) for i in range(len(variants))]
    if None in loops:
        raise RuntimeError(f"callgrind dumped parts {sorted(parts)}, not one per loop")
    return {
        v: n / (calls * PER_ITERATION.get(v.rpartition("-")[0], 1))
        for v, n in zip(variants, loops, strict=True)
        if n is not None
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls counted (default 500)")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help="(default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        # A file, as a training script is: code run from a string ("-c") is
        # attributed with one more look at its caller.
        script = os.path.join(folder, "workload.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        per_call = count(script, args.calls, args.variants)
    print("instructions per loss call, [32, 10], counted by callgrind; ratios against CALL-orig")
    for variant, n in per_call.items():
        base = per_call.get(f"{variant.rpartition('-')[0]}-orig".lstrip("-"))
        ratio = f"  ({n / base:.3f}x)" if base else ""
        print(f"{variant:>13}: {n:>9,.0f}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

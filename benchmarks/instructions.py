"""Instructions per call of kl_guard's paths, counted by callgrind: noise-free.

    python benchmarks/instructions.py            # needs valgrind; about two minutes

Wall-clock ratios on a small, shared machine drift by tens of percent at the
15 us of a ``[32, 10]`` call; callgrind's instruction counts do not. One
process runs every variant in turn, each past its first calls, between two
calls of ``time.sleep(0)``: callgrind dumps its counts at each
(``--dump-before=time_sleep``), so each variant's loop is counted alone,
without the start-up.

Variants: ``orig`` (the unpatched F.kl_div), ``off`` (patched, mode off:
wrapt's call and the first tests of kl_guard's gate), ``on`` (installed, a
call site past its checks: the path every not-checked call pays), ``every``
(``check_every=1``: the screen of a correct call, every call); ``op-orig`` and
``op-on``: a direct call of the op ``torch.kl_div(x, t, 2)``, unpatched and
installed past its checks.

Instructions are not time: the checked path's Python and its many small
kernels run at a lower rate than torch's own loop, so its wall-clock ratio
is larger than its ratio here (see the README).
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

VARIANTS = ("orig", "off", "on", "every", "op-orig", "op-on")

WORKLOAD = """
import sys, time, torch, torch.nn.functional as F, kl_guard
torch.set_num_threads(1)
calls, variants = int(sys.argv[1]), sys.argv[2:]
x = F.log_softmax(torch.randn(32, 10), 1)
t = F.softmax(torch.randn(32, 10), 1)
# not module globals, which install() would rebind
unpatched = {"kl_div": F.kl_div, "op": torch.kl_div}
setup = {
    "orig": lambda: None,
    "off": lambda: kl_guard.install(mode="off"),
    "on": lambda: kl_guard.install(mode="log", check_every=10**9),
    "every": lambda: kl_guard.install(mode="warn", check_every=1),
    "op-orig": lambda: None,
    "op-on": lambda: kl_guard.install(mode="log", check_every=10**9),
}

def loop(fn, n):
    for _ in range(n):
        fn(x, t, reduction="batchmean")

def loop_op(fn, n):
    for _ in range(n):
        fn(x, t, 2)

for variant in variants:
    kl_guard.uninstall()
    setup[variant]()
    if variant.startswith("op"):
        fn, run = unpatched["op"] if variant == "op-orig" else torch.kl_div, loop_op
    else:
        fn, run = unpatched["kl_div"] if variant == "orig" else F.kl_div, loop
    run(fn, 50)  # the site's first (checked) call, and the caches
    time.sleep(0)  # callgrind dumps here: what ran before is left out
    run(fn, calls)
    time.sleep(0)  # and here: this dump is the loop alone
"""


def count(script: str, calls: int, variants: list[str]) -> dict[str, float]:
    """Instructions per call of each variant, from one run under callgrind."""
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
    return {v: n / calls for v, n in zip(variants, loops, strict=True) if n is not None}


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
    print("instructions per call, [32, 10], counted by callgrind (op: torch.kl_div)")
    for variant, n in per_call.items():
        base = per_call.get("op-orig" if variant.startswith("op") else "orig")
        ratio = f"  ({n / base:.3f}x)" if base else ""
        print(f"{variant:>7}: {n:>9,.0f}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

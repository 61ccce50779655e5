"""Instructions per call of the not-checked path, counted by callgrind: noise-free.

    python benchmarks/instructions.py            # needs valgrind; a few minutes

Wall-clock ratios on a small, shared machine drift by tens of percent at the
15 us of a ``[32, 10]`` call; callgrind's instruction counts do not. Each
variant runs twice, with N and 3N calls after the same start-up, and the
difference over 2N is the cost of one call, whatever the start-up costs.

Variants: ``orig`` (the unpatched F.kl_div), ``off`` (patched, mode off:
wrapt and the wrapper's entry), ``on`` (installed, a call site past its
checks: the path every call pays), ``every`` (``check_every=1``: the screen
of a correct call, every call).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

WORKLOAD = """
import sys, torch, torch.nn.functional as F, kl_guard
torch.set_num_threads(1)
variant, n = sys.argv[1], int(sys.argv[2])
x = F.log_softmax(torch.randn(32, 10), 1)
t = F.softmax(torch.randn(32, 10), 1)
original = F.kl_div
if variant == "off":
    kl_guard.install(mode="off")
elif variant == "on":
    kl_guard.install(mode="log", warmup=1, max_interval=10**9)
elif variant == "every":
    kl_guard.install(mode="warn", check_every=1)
fn = original if variant == "orig" else F.kl_div
for _ in range(50 + n):
    fn(x, t, reduction="batchmean")
"""


def instructions(script: str, variant: str, calls: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            variant,
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="N (default 2000)")
    parser.add_argument(
        "variants", nargs="*", default=["orig", "off", "on", "every"], help="(default: all)"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    per_call = {}
    with tempfile.TemporaryDirectory() as folder:
        # A file, as a training script is: code run from a string ("-c") is
        # attributed with one more look at its caller.
        script = os.path.join(folder, "workload.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        for variant in args.variants:
            low = instructions(script, variant, args.calls)
            high = instructions(script, variant, 3 * args.calls)
            per_call[variant] = (high - low) / (2 * args.calls)
    base = per_call.get("orig")
    print("instructions per F.kl_div call, [32, 10], counted by callgrind")
    for variant, count in per_call.items():
        ratio = f"  ({count / base:.3f}x)" if base else ""
        print(f"{variant:>5}: {count:>9,.0f}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

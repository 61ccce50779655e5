"""What ``install()`` and ``uninstall()`` cost with thousands of modules imported.

    python benchmarks/install_cost.py [--modules 1000 5000] [--rounds 7]

The patch points the module globals that hold ``F.kl_div`` at its wrapper at
install, and back at uninstall: one search of every loaded module's
namespace. This imports generated modules (60 globals each, one in fifty with
``from torch.nn.functional import kl_div``) in steps and times an
install/uninstall pair at each step (best of ``--rounds``), beside the
number of modules and module globals loaded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time

import torch

import kl_guard
from kl_guard import _patch

GLOBALS = 60


def write_modules(folder: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        lines = [f"value_{j} = {j}" for j in range(GLOBALS - 1)]
        lines.append("from torch.nn.functional import kl_div" if i % 50 == 0 else "kl_div = None")
        with open(os.path.join(folder, f"klg_bench_{i}.py"), "w") as f:
            f.write("\n".join(lines) + "\n")


def loaded_globals() -> int:
    return sum(len(getattr(m, "__dict__", ())) for m in list(sys.modules.values()))


def pair_seconds(rounds: int) -> tuple[float, float]:
    """The best install() and uninstall() times of ``rounds`` pairs."""
    installs, uninstalls = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        kl_guard.install()
        middle = time.perf_counter()
        kl_guard.uninstall()
        installs.append(middle - start)
        uninstalls.append(time.perf_counter() - middle)
    return min(installs), min(uninstalls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--modules", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"install()/uninstall(), torch {torch.__version__}, best of {args.rounds}")
    print(f"{'modules':>8} {'globals':>9} {'install':>10} {'uninstall':>10} {'rebinding':>10}")
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, folder)
        imported = 0
        for target in [0, *sorted(args.modules)]:
            write_modules(folder, imported, target)
            importlib.invalidate_caches()
            for i in range(imported, target):
                importlib.import_module(f"klg_bench_{i}")
            imported = target
            install, uninstall = pair_seconds(args.rounds)
            start = time.perf_counter()
            _patch.rebind(object(), None)  # the search alone, nothing found
            search = time.perf_counter() - start
            print(
                f"{len(sys.modules):>8} {loaded_globals():>9} {install * 1e3:>8.2f}ms "
                f"{uninstall * 1e3:>8.2f}ms {search * 1e3:>8.2f}ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The linter's rate on ~1,000 typical files, beside ruff's on the same files.

    python benchmarks/lint_rate.py                  # 1,000 files of the installed torch
    python benchmarks/lint_rate.py --files 300 DIR  # another corpus

Every variant runs on the same files, interleaved round by round; each figure
is the best of the rounds. The variants:

  lint (in-process)   ``kl_guard._lint`` run over the files, as ``lint`` does:
                      a file that names neither kl_div nor KLDivLoss is not parsed
  lint, every file    every file read, parsed and checked (as if each used kl_div)
  kl-guard lint       the whole command in a fresh interpreter, startup included
                      (the package imports torch lazily: lint never does)
  ruff check          ``ruff check --no-cache --isolated --select E,F``, a fresh process
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kl_guard._lint._command import LintOptions, parse, run
from kl_guard._lint._files import discover, load
from kl_guard._lint._rules import Checker


def _corpus(root: Path, count: int) -> list[str]:
    files = sorted(str(p) for p in discover([str(root)]) if p.suffix == ".py")
    step = max(len(files) // count, 1)
    return files[::step][:count]


def _default_root() -> Path:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise SystemExit("torch is not installed: name a folder to lint")
    return Path(spec.origin).parent


def _in_process(files: Sequence[str]) -> None:
    run(LintOptions(paths=tuple(files)), stdout=io.StringIO(), stderr=io.StringIO())


def _every_file(files: Sequence[str]) -> None:
    gc.disable()  # as run() does
    try:
        for name in files:
            doc = load(Path(name))
            doc.text += "\n# kl_div\n"  # defeat the name screen: parse and check everything
            tree = parse(doc)
            if tree is not None:
                list(Checker(doc, tree).findings())
    finally:
        gc.enable()


def _command(argv: list[str]) -> Callable[[Sequence[str]], None]:
    def step(files: Sequence[str]) -> None:
        subprocess.run([*argv, *files], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return step


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="corpus folder (default: torch)")
    parser.add_argument("--files", type=int, default=1000, help="how many files (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    files = _corpus(args.root or _default_root(), args.files)
    size = sum(os.path.getsize(f) for f in files)
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    variants: dict[str, Callable[[Sequence[str]], None]] = {
        "lint (in-process)": _in_process,
        "lint, every file": _every_file,
        "kl-guard lint": _command([sys.executable, "-m", "kl_guard", "lint"]),
    }
    if ruff:
        variants["ruff check E,F"] = _command(
            [ruff, "check", "--no-cache", "--isolated", "--select", "E,F", "--exit-zero", "-q"]
        )
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            step(files)
            best[name] = min(best[name], time.perf_counter() - start)
    cpus = os.cpu_count()
    print(f"{len(files)} files, {size / 1e6:.1f} MB, {cpus} CPU(s), best of {args.rounds}")
    print(f"{'variant':<20} {'seconds':>8} {'files/s':>9}")
    for name, seconds in best.items():
        print(f"{name:<20} {seconds:8.3f} {len(files) / seconds:9.0f}")
    if not ruff:
        print("ruff: not found beside this interpreter or on PATH")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

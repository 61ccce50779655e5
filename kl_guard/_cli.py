"""Command line: ``python -m kl_guard demo | codes``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kl_guard._findings import CODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kl_guard",
        description="Catch misuse of KL divergence in PyTorch while the program runs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("demo", help="walk through the pitfalls, each diagnosis and its fix")
    commands.add_parser("codes", help="list the finding codes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from kl_guard._demo import run

        return run(sys.stdout)
    for code, meaning in CODES.items():
        print(f"{code}  {meaning}")
    return 0


def entry_point() -> None:
    raise SystemExit(main())

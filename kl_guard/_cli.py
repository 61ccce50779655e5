"""Command line: ``python -m kl_guard demo | codes | run``.

Only argument parsing lives here; each command's work is in its own module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kl_guard import _runner
from kl_guard._config import default_config, parse_codes, parse_mode
from kl_guard._findings import CODES, OPT_IN

_RUN_MODES = ("warn", "raise", "log")


def _codes(option: str) -> Callable[[str], frozenset[str]]:
    def convert(text: str) -> frozenset[str]:
        try:
            return parse_codes(text, option=option)
        except ValueError as exc:  # argparse words a ValueError as "invalid value"
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kl_guard",
        description="Catch misuse of KL divergence in PyTorch while the program runs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("demo", help="walk through the pitfalls, each diagnosis and its fix")
    commands.add_parser("codes", help="list the finding codes, marking the opt-in ones")
    run = commands.add_parser(
        "run",
        help="run a script or module under kl_guard, then print a summary of the findings",
        description="Run a Python script (or -m module) under kl_guard without changing it; "
        "a summary of the findings goes to stderr at exit. The exit status is the program's.",
    )
    run.add_argument(
        "--mode",
        choices=_RUN_MODES,
        help="what to do with a finding (default: $KL_GUARD_MODE, else warn)",
    )
    run.add_argument("--json", metavar="PATH", help="also write the findings to PATH as JSON")
    run.add_argument(
        "--select",
        type=_codes("--select"),
        metavar="CODES",
        help="report only these codes; ALL for every code, the opt-in ones included "
        "(default: every code but the opt-in ones)",
    )
    run.add_argument(
        "--ignore", type=_codes("--ignore"), metavar="CODES", help="never report these codes"
    )
    run.add_argument(
        "--check-every",
        type=_count,
        metavar="N",
        help="check the first call and every N-th after it at each call site "
        "(default: the first calls, then fewer and fewer)",
    )
    run.add_argument(
        "-m",
        dest="module",
        action="store_true",
        help="run a library module as a script, like python -m",
    )
    run.add_argument(
        "target", metavar="script.py | module", help="the script to run, or with -m the module"
    )
    run.add_argument("args", nargs=argparse.REMAINDER, help="the program's own arguments")
    run.set_defaults(error=run.error)
    return parser


def _run(args: argparse.Namespace) -> int:
    error: Callable[[str], NoReturn] = args.error
    try:
        mode = parse_mode(args.mode) if args.mode else default_config().mode
    except ValueError as exc:  # a bad KL_GUARD_MODE
        error(str(exc))
    options: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("select", "ignore", "check_every")
        if getattr(args, name) is not None
    }
    try:
        return _runner.run(
            args.target,
            args.args,
            module=args.module,
            mode=mode,
            options=options,
            json_path=args.json,
        )
    except _runner.NotFound as exc:
        error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from kl_guard._demo import run

        return run(sys.stdout)
    for code, meaning in CODES.items():
        opt_in = f" (opt-in: off unless selected, --select {code})" if code in OPT_IN else ""
        print(f"{code}  {meaning}{opt_in}")
    return 0


def entry_point() -> None:
    raise SystemExit(main())

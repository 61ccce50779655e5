"""Command line: ``python -m kl_guard demo | codes | explain CODE | run | lint``.

Only argument parsing lives here; each command's work is in its own module,
imported when that command runs (``codes``, ``explain`` and ``lint`` need no torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kl_guard import _codes
from kl_guard._config import default_config, parse_codes, parse_mode
from kl_guard._findings import CODES

_RUN_MODES = ("warn", "raise", "log")


def _code_set(option: str) -> Callable[[str], frozenset[str]]:
    def convert(text: str) -> frozenset[str]:
        try:
            return parse_codes(text, option=option)
        except ValueError as exc:  # argparse words a ValueError as "invalid value"
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _code(text: str) -> str:
    code = text.strip().upper()
    if code not in CODES:
        raise argparse.ArgumentTypeError(
            f"unknown code {text!r}; valid codes are {', '.join(CODES)}"
        )
    return code


def _add_codes(parser: argparse.ArgumentParser) -> None:
    for option, meaning in (
        (
            "--select",
            "report only these codes; ALL for every code, the opt-in ones included "
            "(default: every code but the opt-in ones)",
        ),
        ("--ignore", "never report these codes"),
    ):
        parser.add_argument(option, type=_code_set(option), metavar="CODES", help=meaning)


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
    explain = commands.add_parser(
        "explain",
        help="explain a code: what it means, a wrong and a right call, how to silence it",
    )
    explain.add_argument("code", type=_code, metavar="CODE", help="e.g. KLG003")
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
    _add_codes(run)
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
    merge = commands.add_parser(
        "merge",
        help="merge the --json reports of a job's nodes into one summary",
        description="Merge the JSON reports that `python -m kl_guard run --json` wrote on each "
        "node of a multi-node job: one summary (stderr), optionally one JSON report, and the "
        "job's exit status (the first failing node's; 2 when a report cannot be read).",
    )
    merge.add_argument("reports", nargs="+", metavar="REPORT.json", help="the nodes' reports")
    merge.add_argument("--json", metavar="PATH", help="also write the merged report to PATH")
    _lint_parser(commands)
    return parser


def _lint_parser(commands: Any) -> None:
    from kl_guard._lint._output import FORMATS

    lint = commands.add_parser(
        "lint",
        help="find misuse of KL divergence in source files and notebooks, without running them",
        description="Read .py files and the code cells of .ipynb notebooks for the misuses the "
        "runtime guard reports, where the source shows them. Exit status: 0 clean, 1 findings, "
        "2 usage error. '# kl_guard: ignore[KLG001]' on a line silences a code there.",
    )
    lint.add_argument(
        "paths", nargs="*", default=["."], metavar="PATH", help="files or folders (default: .)"
    )
    _add_codes(lint)
    lint.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOBS",
        help="comma-separated globs of files and folders to skip (.git, virtual environments "
        "and caches always are)",
    )
    lint.add_argument(
        "--format", dest="output_format", choices=FORMATS, default="text", help="output format"
    )
    lint.add_argument(
        "--fix", action="store_true", help="rewrite the calls whose right form is certain"
    )
    lint.add_argument(
        "--unsafe-fixes",
        action="store_true",
        help="with --fix, also apply fixes that change the loss's value "
        "(reduction 'mean' -> 'batchmean' rescales it)",
    )


def _lint(args: argparse.Namespace) -> int:
    from kl_guard._lint._command import LintOptions, run

    exclude = tuple(g.strip() for text in args.exclude for g in text.split(",") if g.strip())
    return run(
        LintOptions(
            paths=tuple(args.paths),
            exclude=exclude,
            select=args.select,
            ignore=args.ignore or frozenset(),
            output_format=args.output_format,
            fix=args.fix,
            unsafe_fixes=args.unsafe_fixes,
        )
    )


def _run(args: argparse.Namespace) -> int:
    from kl_guard import _runner

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
    if args.command == "lint":
        return _lint(args)
    if args.command == "merge":
        from kl_guard._merge import merge

        return merge(args.reports, args.json)
    if args.command == "demo":
        from kl_guard._demo import run

        return run(sys.stdout)
    if args.command == "explain":
        sys.stdout.write(_codes.explain(args.code))
        return 0
    sys.stdout.write(_codes.listing())
    return 0


def entry_point() -> None:
    raise SystemExit(main())

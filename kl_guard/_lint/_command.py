"""The lint command: files in, findings filtered (codes, suppressions), fixes written, output out.

Exit status as ruff's: 0 when no finding is left, 1 when some are, 2 on a
usage error (a path that does not exist; argparse handles the rest). A file
that cannot be read or parsed is reported on stderr and skipped.
"""

from __future__ import annotations

import ast
import dataclasses
import gc
import sys
import warnings
from pathlib import Path
from typing import TextIO

from kl_guard._contract import CONTRACTS
from kl_guard._findings import CODES, OPT_IN
from kl_guard._lint import _output
from kl_guard._lint._files import Document, UnreadableError, discover, load
from kl_guard._lint._fixes import chosen
from kl_guard._lint._model import LintFinding, Located
from kl_guard._lint._rules import Checker
from kl_guard._suppression import suppressed_codes

# Like the runtime, the linter leaves the opt-in codes off unless selected
# (KLG008 is about requires_grad, which only a run shows).
DEFAULT_CODES = frozenset(CODES) - OPT_IN
# A file names one of these wherever it can reach a loss the linter reads; a
# file that names none has nothing to find and is not parsed.
_NEEDLES = tuple(name for c in CONTRACTS for name in (c.name, c.module))
_FIX_ROUNDS = 8


@dataclasses.dataclass(frozen=True)
class LintOptions:
    paths: tuple[str, ...] = (".",)
    exclude: tuple[str, ...] = ()
    select: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    output_format: str = "text"
    fix: bool = False
    unsafe_fixes: bool = False

    @property
    def codes(self) -> frozenset[str]:
        selected = DEFAULT_CODES if self.select is None else self.select
        return selected - self.ignore


def parse(doc: Document) -> ast.Module | None:
    """The document's tree; None when it cannot hold a finding. SyntaxError when unparsable."""
    if not any(needle in doc.text for needle in _NEEDLES):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes and the like are not ours to report
        try:
            return ast.parse(doc.text, filename=str(doc.path))
        except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting
            raise SyntaxError(str(exc)) from exc


def lint_document(doc: Document, codes: frozenset[str] = DEFAULT_CODES) -> list[LintFinding]:
    """The findings of one document, suppressions applied, in source order."""
    tree = parse(doc)
    if tree is None:
        return []
    out = [
        finding
        for finding in Checker(doc, tree).findings()
        if finding.code in codes
        and not any(finding.code in suppressed_codes(doc.line(n)) for n in finding.lines)
    ]
    return sorted(out, key=lambda f: (f.line, f.column, f.code))


def fix_document(
    doc: Document, codes: frozenset[str], *, unsafe: bool
) -> tuple[Document, list[LintFinding], int]:
    """Apply fixes round by round, re-linting each result; (document, findings left, fixed)."""
    fixed = 0
    findings = lint_document(doc, codes)
    for _ in range(_FIX_ROUNDS):
        edits = chosen(findings, unsafe=unsafe)
        if not edits:
            break
        candidate = load(doc.path, doc.encode(doc.rewritten(edits)))
        try:
            left = lint_document(candidate, codes)
        except SyntaxError:  # a fix must never break a file: keep the last good text
            break
        fixed += max(len(findings) - len(left), 0)
        doc, findings = candidate, left
    return doc, findings, fixed


def run(options: LintOptions, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    missing = [p for p in options.paths if not Path(p).exists()]
    if missing:
        err.write(f"kl_guard lint: error: no such file or directory: {missing[0]}\n")
        return 2
    # Trees are freed by reference counting; the cyclic collector would only
    # rescan them while they are built (a third of the parse time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        results, fixed = _lint_files(options, err)
    finally:
        if collecting:
            gc.enable()
    _output.write(results, options.output_format, out, fixed=fixed)
    return 1 if results else 0


def _lint_files(options: LintOptions, err: TextIO) -> tuple[list[Located], int]:
    codes = options.codes
    results: list[Located] = []
    fixed = 0
    for path in discover(options.paths, options.exclude):
        try:
            doc = load(path)
            if options.fix:
                new, findings, count = fix_document(doc, codes, unsafe=options.unsafe_fixes)
                if new is not doc:
                    path.write_bytes(new.data)
                fixed += count
                doc = new
            else:
                findings = lint_document(doc, codes)
        except UnreadableError as exc:
            err.write(f"kl_guard lint: {path}: cannot read, skipped: {exc}\n")
            continue
        except SyntaxError as exc:
            where = f"{path}:{exc.lineno}" if exc.lineno else str(path)
            err.write(f"kl_guard lint: {where}: cannot parse, skipped: {exc.msg}\n")
            continue
        for finding in findings:
            cell, line = doc.position(finding.line)
            results.append(Located(str(path), cell, dataclasses.replace(finding, line=line)))
    return results, fixed

"""Output: findings as text lines, JSON, SARIF 2.1.0 or GitHub workflow annotations."""

from __future__ import annotations

import importlib.metadata
import json
import urllib.parse
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any, TextIO

from kl_guard._findings import CODES
from kl_guard._lint._model import Applicability, Located

FORMATS = ("text", "json", "sarif", "github")
JSON_VERSION = 1
_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_HINT = {
    Applicability.SAFE: " [--fix]",
    Applicability.UNSAFE: " [--fix --unsafe-fixes]",
    Applicability.NONE: "",
}


def write(
    results: Sequence[Located], output_format: str, stream: TextIO, *, fixed: int = 0
) -> None:
    {"text": _text, "json": _json, "sarif": _sarif, "github": _github}[output_format](
        results, stream, fixed
    )


def _text(results: Sequence[Located], stream: TextIO, fixed: int) -> None:
    for result in results:
        f = result.finding
        stream.write(f"{result.where}: {f.code} {f.message}\n")
        stream.write(f"  fix: {f.fix}{_HINT[f.applicability]}\n")
    if fixed:
        stream.write(f"Fixed {fixed} finding{'s' * (fixed != 1)}.\n")
    if not results:
        stream.write("All checks passed.\n")
        return
    counts = {a: sum(r.finding.applicability is a for r in results) for a in Applicability}
    fixable = []
    if counts[Applicability.SAFE]:
        fixable.append(f"{counts[Applicability.SAFE]} fixable with --fix")
    if counts[Applicability.UNSAFE]:
        fixable.append(f"{counts[Applicability.UNSAFE]} with --fix --unsafe-fixes")
    tail = f" ({', '.join(fixable)})" if fixable else ""
    stream.write(f"Found {len(results)} finding{'s' * (len(results) != 1)}{tail}.\n")


def _record(result: Located) -> dict[str, Any]:
    f = result.finding
    return {
        "code": f.code,
        "path": result.path,
        "cell": result.cell,
        "line": f.line,
        "column": f.column,
        "message": f.message,
        "fix": f.fix,
        "fixable": None if f.applicability is Applicability.NONE else str(f.applicability),
    }


def _json(results: Sequence[Located], stream: TextIO, fixed: int) -> None:
    json.dump(
        {"version": JSON_VERSION, "findings": [_record(r) for r in results]}, stream, indent=2
    )
    stream.write("\n")


def _version() -> str:
    try:
        return importlib.metadata.version("kl_guard")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def _uri(path: str) -> str:
    pure = PurePath(path)
    if pure.is_absolute():
        return "file://" + urllib.parse.quote(pure.as_posix())
    return urllib.parse.quote(pure.as_posix())


def _sarif(results: Sequence[Located], stream: TextIO, fixed: int) -> None:
    rules = sorted(CODES)
    records = []
    for result in results:
        f = result.finding
        cell = "" if result.cell is None else f"cell {result.cell}: "
        records.append(
            {
                "ruleId": f.code,
                "ruleIndex": rules.index(f.code),
                "level": "warning",
                "message": {"text": f"{cell}{f.message}\nfix: {f.fix}"},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(result.path)},
                            "region": {"startLine": f.line, "startColumn": f.column},
                        }
                    }
                ],
            }
        )
    driver = {
        "name": "kl_guard",
        "version": _version(),
        "rules": [
            {"id": code, "name": code, "shortDescription": {"text": CODES[code]}} for code in rules
        ],
    }
    log = {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": records}],
    }
    json.dump(log, stream, indent=2)
    stream.write("\n")


def _escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _github(results: Sequence[Located], stream: TextIO, fixed: int) -> None:
    for result in results:
        f = result.finding
        cell = "" if result.cell is None else f"cell {result.cell}: "
        stream.write(
            f"::warning file={_escape(result.path, prop=True)},line={f.line},col={f.column},"
            f"title={f.code}::{_escape(f'{cell}{f.message} (fix: {f.fix})')}\n"
        )

"""Fixes: the edits that correct a call, by exact source offsets, and which of them to apply.

Every edit replaces the characters of one node (or inserts at one point), so
the rest of the file, its formatting and its comments, is untouched.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

from kl_guard._lint._files import Document, apply
from kl_guard._lint._model import Applicability, Edit, LintFinding

_PREVIEW_WIDTH = 100


def span(doc: Document, node: ast.expr | ast.keyword) -> tuple[int, int]:
    """The character offsets of ``node`` in the document's text."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    start = doc.offset(node.lineno, node.col_offset)
    return start, doc.offset(node.end_lineno, node.end_col_offset)


def text(doc: Document, node: ast.expr) -> str:
    start, end = span(doc, node)
    return doc.text[start:end]


def string(doc: Document, like: ast.expr | None, value: str) -> str:
    """``value`` as a string literal, quoted like ``like`` when it is one."""
    quote = "'" if like is not None and text(doc, like).lstrip("rRuU")[:1] == "'" else '"'
    return f"{quote}{value}{quote}"


def replace(doc: Document, node: ast.expr, new: str) -> Edit:
    start, end = span(doc, node)
    return Edit(start, end, new)


def set_argument(doc: Document, call: ast.Call, node: ast.expr | None, keyword: str) -> Edit:
    """Replace the argument ``node`` by ``keyword``'s value, or add ``keyword`` (``name=value``).

    The keyword goes after the last argument, before any trailing comma or
    comment; in a call without arguments, right before the closing parenthesis.
    """
    if node is not None:
        return replace(doc, node, keyword.partition("=")[2])
    arguments = [*call.args, *(k.value for k in call.keywords)]
    if not arguments:
        _, end = span(doc, call)
        return Edit(end - 1, end - 1, keyword)
    _, end = max(span(doc, a) for a in arguments)
    return Edit(end, end, ", " + keyword)


def remove_keywords(doc: Document, call: ast.Call, names: Sequence[str]) -> tuple[Edit, ...]:
    """Remove the keyword arguments ``names`` of ``call``, with their separators;
    no edit when one is passed by position or every argument would go."""
    arguments: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
    arguments.sort(key=lambda a: span(doc, a))
    gone = [isinstance(a, ast.keyword) and a.arg in names for a in arguments]
    if sum(gone) != len(names) or all(gone):
        return ()
    edits: list[Edit] = []
    i = 0
    while i < len(arguments):
        if not gone[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(arguments) and gone[j + 1]:
            j += 1
        if j + 1 < len(arguments):  # up to the next argument kept
            edits.append(Edit(span(doc, arguments[i])[0], span(doc, arguments[j + 1])[0], ""))
        else:  # from the end of the argument kept before
            edits.append(Edit(span(doc, arguments[i - 1])[1], span(doc, arguments[j])[1], ""))
        i = j + 1
    return tuple(edits)


def rename_softmax(doc: Document, func: ast.expr) -> Edit | None:
    """``F.softmax`` -> ``F.log_softmax``, ``x.softmax`` -> ``x.log_softmax``,
    ``nn.Softmax`` -> ``nn.LogSoftmax``: the attribute name only."""
    if not isinstance(func, ast.Attribute):
        return None  # a bare imported name: log_softmax may not be imported
    new = {"softmax": "log_softmax", "Softmax": "LogSoftmax"}.get(func.attr)
    if new is None:
        return None
    _, end = span(doc, func)
    if doc.text[end - len(func.attr) : end] != func.attr:
        return None
    return Edit(end - len(func.attr), end, new)


def swap(doc: Document, a: ast.expr, b: ast.expr) -> tuple[Edit, Edit]:
    first, second = sorted((a, b), key=lambda n: span(doc, n))
    return replace(doc, first, text(doc, second)), replace(doc, second, text(doc, first))


def preview(doc: Document, call: ast.Call, edits: Sequence[Edit]) -> str | None:
    """The call as ``edits`` rewrite it, when they all fall inside it and it fits one line."""
    start, end = span(doc, call)
    if not edits or any(e.start < start or e.end > end for e in edits):
        return None
    shifted = [Edit(e.start - start, e.end - start, e.text) for e in sorted(edits)]
    new = apply(doc.text[start:end], shifted)
    return new if "\n" not in new and len(new) <= _PREVIEW_WIDTH else None


def chosen(findings: Iterable[LintFinding], *, unsafe: bool) -> list[Edit]:
    """The edits to apply: safe ones (and unsafe ones with ``unsafe``), sorted.

    A finding's edits go in together or not at all; one whose edits overlap an
    edit already taken waits for the next round, on the re-linted text.
    """
    allowed = {Applicability.SAFE} | ({Applicability.UNSAFE} if unsafe else set())
    taken: list[Edit] = []
    for finding in findings:
        if finding.applicability not in allowed or not finding.edits:
            continue
        if not any(_overlap(e, t) for e in finding.edits for t in taken):
            taken.extend(finding.edits)
    return sorted(taken)


def _overlap(a: Edit, b: Edit) -> bool:
    if a.start == a.end == b.start == b.end:
        return True  # two insertions at one point: their order would be a guess
    return a.start < b.end and b.start < a.end

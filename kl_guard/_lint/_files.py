"""Files: which paths are linted, and each file (``.py`` or notebook) as one Python text.

A notebook's code cells are joined into one text, so that an import in the
first cell resolves a call in the fifth, as Jupyter runs them; IPython magics
(``%time``, ``!pip``, ``%%bash`` cells) are masked into comments of the same
length, so every offset in the text is an offset in its cell. Findings are
mapped back to (cell, line in the cell), and fixes are written into the cells.
"""

from __future__ import annotations

import bisect
import dataclasses
import fnmatch
import functools
import io
import json
import os
import re
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kl_guard._lint._model import Edit

SUFFIXES = (".py", ".pyi", ".ipynb")
# Never walked into, as ruff's defaults; a folder holding pyvenv.cfg (a
# virtual environment of any name) is skipped too. A path named on the
# command line is linted even when it matches.
SKIP_DIRS = frozenset(
    {
        ".bzr",
        ".eggs",
        ".git",
        ".hg",
        ".ipynb_checkpoints",
        ".mypy_cache",
        ".nox",
        ".pytest_cache",
        ".ruff_cache",
        ".svn",
        ".tox",
        ".venv",
        "__pycache__",
        "__pypackages__",
        "node_modules",
        "site-packages",
        "venv",
    }
)
_NEWLINE = re.compile(r"\r\n|\r|\n")
_MAGIC = re.compile(r"\s*(?:[%!]|[\w.]+(?:\s*,\s*[\w.]+)*\s*=\s*[%!])")


class UnreadableError(Exception):
    """A file that cannot be read or decoded (reported, then skipped)."""


def discover(paths: Sequence[str], exclude: Sequence[str] = ()) -> Iterator[Path]:
    """The files to lint under ``paths``, each once, in a stable order."""
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        candidates = [root] if root.is_file() else _walk(root, exclude)
        for path in candidates:
            if path not in seen:
                seen.add(path)
                yield path


def _excluded(name: str, relative: str, exclude: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p) for p in exclude)


def _walk(root: Path, exclude: Sequence[str]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        rel = here.relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIP_DIRS
            and not _excluded(d, prefix + d, exclude)
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            if name.endswith(SUFFIXES) and not _excluded(name, prefix + name, exclude):
                yield here / name


@dataclasses.dataclass(frozen=True)
class Cell:
    number: int  # 1-based, counting every cell of the notebook
    first_line: int  # where the cell starts in the joined text (1-based)
    start: int  # character offset of the cell in the joined text
    source: str


class Document:
    """One file's Python text, with the line and offset arithmetic the rules need."""

    def __init__(
        self,
        path: Path,
        text: str,
        *,
        encoding: str = "utf-8",
        data: bytes = b"",
        cells: Sequence[Cell] = (),
        notebook: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.text = text
        self.encoding = encoding
        self.data = data  # the file's bytes as read
        self.cells = tuple(cells)
        self.notebook = notebook

    @functools.cached_property
    def _starts(self) -> list[int]:
        """Where each line starts: computed for the few files that are parsed."""
        return [0, *(m.end() for m in _NEWLINE.finditer(self.text))]

    def line(self, lineno: int) -> str:
        """The text of line ``lineno`` (1-based), without its newline."""
        if not 1 <= lineno <= len(self._starts):
            return ""
        start = self._starts[lineno - 1]
        end = self._starts[lineno] if lineno < len(self._starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n")

    def column(self, lineno: int, col_offset: int) -> int:
        """``ast``'s UTF-8 byte column as a character column (0-based)."""
        line = self.line(lineno)
        if line.isascii():
            return col_offset
        return len(line.encode("utf-8")[:col_offset].decode("utf-8", "replace"))

    def offset(self, lineno: int, col_offset: int) -> int:
        """The character offset in the text of an ``ast`` position."""
        return self._starts[lineno - 1] + self.column(lineno, col_offset)

    def position(self, lineno: int) -> tuple[int | None, int]:
        """(cell number, line in the cell) of a line of the text; the cell is None in a .py."""
        if not self.cells:
            return None, lineno
        index = bisect.bisect_right([c.first_line for c in self.cells], lineno) - 1
        cell = self.cells[max(index, 0)]
        return cell.number, lineno - cell.first_line + 1

    def rewritten(self, edits: Sequence[Edit]) -> str:
        """The file's new content with ``edits`` (sorted, not overlapping) applied."""
        if self.notebook is None:
            return apply(self.text, edits)
        notebook = json.loads(json.dumps(self.notebook))
        for cell in self.cells:
            end = cell.start + len(cell.source)
            mine = [
                Edit(e.start - cell.start, e.end - cell.start, e.text)
                for e in edits
                if cell.start <= e.start and e.end <= end
            ]
            if mine:
                new = apply(cell.source, mine)
                notebook["cells"][cell.number - 1]["source"] = new.splitlines(keepends=True)
        return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def encode(self, content: str) -> bytes:
        return content.encode(self.encoding)


def apply(text: str, edits: Sequence[Edit]) -> str:
    """``text`` with ``edits`` (sorted, not overlapping) applied."""
    parts: list[str] = []
    at = 0
    for edit in edits:
        parts += [text[at : edit.start], edit.text]
        at = edit.end
    parts.append(text[at:])
    return "".join(parts)


def load(path: Path, data: bytes | None = None) -> Document:
    """Read ``path`` (or decode ``data`` as its content) into a Document."""
    try:
        raw = path.read_bytes() if data is None else data
        if path.suffix == ".ipynb":
            return _notebook(path, json.loads(raw.decode("utf-8")), raw)
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return Document(path, raw.decode(encoding), encoding=encoding, data=raw)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise UnreadableError(str(exc)) from exc


def _mask(source: str) -> str:
    """The cell with every IPython magic line turned into a comment of the same length."""
    lines = source.splitlines(keepends=True)
    cell_magic = source.lstrip().startswith("%%")
    return "".join(
        "#" + line[1:] if line.strip() and (cell_magic or _MAGIC.match(line)) else line
        for line in lines
    )


def _notebook(path: Path, notebook: dict[str, Any], data: bytes) -> Document:
    cells: list[Cell] = []
    parts: list[str] = []
    line, start = 1, 0
    for number, cell in enumerate(notebook.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        cells.append(Cell(number, line, start, source))
        # a newline joins a cell without one to the next; the cell keeps its text
        masked = _mask(source if source.endswith("\n") else source + "\n")
        parts.append(masked)
        line += len(_NEWLINE.findall(masked))
        start += len(masked)
    return Document(path, "".join(parts), data=data, cells=cells, notebook=notebook)

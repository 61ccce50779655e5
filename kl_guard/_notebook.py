"""Notebook cells named as IPython names them: ``Cell In[3], line 2``, not a temporary file.

A kernel compiles each cell under a file name of its own
(``.../ipykernel_<pid>/<hash>.py``) and keeps, in its compiler, which
execution count each name belongs to; IPython's tracebacks ask that
compiler for the label, and so does kl_guard. IPython is never imported
here: a program that has not imported it runs no cell.
"""

from __future__ import annotations

import sys


def cell_label(filename: str, lineno: int) -> str | None:
    """``Cell In[3], line 2`` when ``filename`` is a cell of the running IPython, else None."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    # IPython's own traceback formatting asks the same question. Any failure
    # (no shell running, an IPython without format_code_name) means "no label".
    try:
        named = ipython.get_ipython().compile.format_code_name(filename)
        if named is None:
            return None
        label, name = named
        return f"{label} {name}, line {lineno}"
    except Exception:
        return None

"""kl_guard's start-up hook for the Python processes that ``python -m kl_guard run`` starts.

The runner puts this folder first on the children's ``PYTHONPATH``, so
Python's ``site`` imports this file at start-up, as coverage.py's
``process_startup`` is reached from its ``.pth`` file. It takes its folder
off ``sys.path`` again, imports the ``sitecustomize`` it hides (if any), and
starts kl_guard only when ``KL_GUARD_RUN`` is set: standard library only,
nothing imported without the variable, never an error at start-up.
"""

import importlib
import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    this = sys.modules.pop("sitecustomize")
    try:
        importlib.import_module("sitecustomize")  # the one this file hides
    except ImportError as exc:
        # None to chain to: the import of this file must find it when done.
        sys.modules["sitecustomize"] = this
        if exc.name != "sitecustomize":
            raise


def _start() -> None:
    if not os.environ.get("KL_GUARD_RUN"):
        return
    try:
        from kl_guard import _child
    except ImportError:  # another interpreter, without kl_guard: run unguarded
        return
    _child.start()


_chain()
_start()

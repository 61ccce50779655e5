"""The compatibility module: on the pinned torch, every primary path is the one in use.

A private torch, CPython or wrapt detail that changes upstream makes kl_guard
fall back to a slower or coarser path; this test makes that loud.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from kl_guard import _compat


def test_every_primary_path_is_in_use() -> None:
    kl_guard.install()  # some are decided when the patch is made, some when torch compiles
    log_p, q = F.log_softmax(torch.zeros(2, 3), 1), F.softmax(torch.zeros(2, 3), 1)
    torch.compile(F.kl_div, backend="eager", fullgraph=True)(log_p, q, reduction="sum")
    assert {name: used for name, used in _compat.PRIMARY.items() if not used} == {}
    assert set(_compat.PRIMARY) == {
        "is_dynamo_compiling",
        "compiling_flag",
        "compile_context",
        "functorch_wrapped",
        "filters_mutated",
        "wrapt_builtin_binding",
        "dynamo_inline",
        "traced_stack",
        "is_exporting",
        "side_effect_op",
    }


def test_the_patch_uses_wrapts_builtin_binding() -> None:
    kl_guard.install()
    # the "builtin" binding: wrapt does not look up __self__ on every call
    assert F.kl_div._self_binding == "builtin"  # type: ignore[attr-defined]


def test_the_filters_fallback_drops_warning_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``warnings._filters_mutated``, an edit of the filters in place
    still takes effect for a warning already seen once."""
    monkeypatch.setattr(_compat, "_filters_mutated", None)

    def warn() -> None:
        warnings.warn("kl_guard compat probe", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("ignore")
        warn()  # cached as ignored
        warnings.filters[:] = [("always", None, Warning, None, 0)]  # type: ignore[index]
        _compat.filters_changed()
        warn()
    assert [str(w.message) for w in record] == ["kl_guard compat probe"]

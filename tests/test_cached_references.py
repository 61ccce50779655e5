"""References to ``F.kl_div`` taken before ``install()``: module globals are rebound, and back."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
import torch.nn.functional as F
import wrapt

import kl_guard
from helpers import ORIGINAL, marked_line, probs_input
from kl_guard import _patch

SOURCE = """\
from torch.nn.functional import kl_div
import torch.nn.functional as F

loss = F.kl_div  # an alias
not_a_loss = 3


def distill(inp, tgt):
    return kl_div(inp, tgt, reduction="batchmean")  # through the cached reference
"""


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module of the user's, imported before kl_guard starts."""
    module = types.ModuleType("klg_user_losses")
    module.__file__ = "klg_user_losses.py"
    exec(compile(SOURCE, module.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_a_module_level_import_taken_before_install_is_checked(
    user_module: types.ModuleType,
) -> None:
    assert user_module.kl_div is ORIGINAL.kl_div
    kl_guard.install(mode="log", check_every=1)
    assert user_module.kl_div is F.kl_div and user_module.loss is F.kl_div
    user_module.distill(*probs_input())
    assert [f.code for f in kl_guard.findings()] == ["KLG003", "KLG004"]
    kl_guard.uninstall()
    assert user_module.kl_div is ORIGINAL.kl_div and user_module.loss is ORIGINAL.kl_div
    assert user_module.not_a_loss == 3


def test_a_module_imported_while_installed_gets_the_original_back(
    user_module: types.ModuleType,
) -> None:
    with kl_guard.guard():
        vars(user_module)["late"] = F.kl_div  # bound to the wrapper
    assert user_module.late is ORIGINAL.kl_div


def test_a_global_rebound_by_someone_else_is_left_alone(user_module: types.ModuleType) -> None:
    kl_guard.install()
    theirs = wrapt.FunctionWrapper(F.kl_div, lambda w, i, a, k: w(*a, **k))
    vars(user_module)["kl_div"] = theirs  # another tool's layer over ours
    kl_guard.uninstall()
    assert user_module.kl_div is theirs
    assert user_module.loss is ORIGINAL.kl_div


def test_torch_and_kl_guard_keep_the_original() -> None:
    holder = sys.modules["torch.nn.modules.loss"]
    vars(holder)["_klg_test_reference"] = ORIGINAL.kl_div
    try:
        with kl_guard.guard():
            assert vars(holder)["_klg_test_reference"] is ORIGINAL.kl_div
    finally:
        del vars(holder)["_klg_test_reference"]


def test_a_local_reference_is_not_rebound_but_its_op_is_checked() -> None:
    """Locals, closures, containers and default arguments keep what they hold
    (README, Limits); torch's F.kl_div they call then calls the patched
    ``torch.kl_div``, checked at the user's line."""
    cached = F.kl_div
    kl_guard.install(mode="log", check_every=1)
    assert cached is ORIGINAL.kl_div
    cached(*probs_input(), reduction="batchmean")  # a cached reference's call
    line = marked_line(__file__, "a cached reference's call")
    location = f"tests/test_cached_references.py:{line}"
    assert [(f.code, f.location) for f in kl_guard.findings()] == [
        ("KLG003", location),
        ("KLG004", location),
    ]


def test_rebind_counts_what_it_changed(user_module: types.ModuleType) -> None:
    marker = object()
    vars(user_module).update(a=marker, b=marker)
    assert _patch.rebind(marker, 1) == 2
    assert (user_module.a, user_module.b) == (1, 1)

"""The public API as a type checker sees it: misspelled options are errors.

``mypy --strict`` (run by CI over this file) has ``warn_unused_ignores``: each
``# type: ignore[...]`` below must silence a real error, so the file fails
type checking the day ``install()`` or ``guard()`` accepts anything again.
"""

from __future__ import annotations

import asyncio

import pytest
import torch.nn.functional as F

import kl_guard
from helpers import probs_input


def test_misspelled_options_are_type_errors_and_runtime_errors() -> None:
    with pytest.raises(TypeError, match="unknown option 'check_evry'"):
        kl_guard.install(check_evry=4)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown option 'sample_row'"):
        kl_guard.guard(sample_row=4)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown option 'warmup_calls'"):
        kl_guard.Guard(warmup_calls=4)  # type: ignore[call-arg]


def test_wrongly_typed_options_are_type_errors() -> None:
    with pytest.raises(TypeError, match="check_every must be a positive int"):
        kl_guard.install(check_every="4")  # type: ignore[arg-type]


def test_a_whole_config_is_accepted_and_options_apply_on_top() -> None:
    config = kl_guard.Config(mode=kl_guard.Mode.LOG, check_every=1)
    with kl_guard.guard(config=config, select="KLG003") as g:
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [f.code for f in g.findings] == ["KLG003"]


def test_is_installed_counts_install_only_and_is_active_any_layer() -> None:
    with kl_guard.guard():
        assert kl_guard.is_active()
        assert not kl_guard.is_installed()
    kl_guard.install()
    assert kl_guard.is_installed() and kl_guard.is_active()


def test_guard_decorates_a_coroutine_function() -> None:
    @kl_guard.guard(mode="raise", check_every=1)
    async def step() -> object:
        await asyncio.sleep(0)
        assert kl_guard.is_active()
        return F.kl_div(*probs_input(), reduction="batchmean")

    assert not kl_guard.is_active()
    with pytest.raises(kl_guard.KLGuardError):
        asyncio.run(step())
    assert not kl_guard.is_active()

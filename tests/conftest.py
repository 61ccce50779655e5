from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import kl_guard
from kl_guard import _check, _lifecycle, _reporting

pytest_plugins = ["pytester"]


def _profile(name: str, examples: int, *, derandomize: bool) -> None:
    settings.register_profile(
        name,
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        suppress_health_check=[HealthCheck.too_slow],
    )


_profile("default", 40, derandomize=False)
_profile("ci", 80, derandomize=True)
# The oldest and newest torch (.ci/versions): what differs between releases is torch's
# behaviour, which a few derandomized examples reach; the main job searches deeper.
_profile("versions", 12, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with kl_guard fully removed, and with no
    call described yet: a test that breaks a stage must reach it."""
    monkeypatch.delenv("KL_GUARD_MODE", raising=False)
    _check._CALLS.clear()
    _check._KNOWN.clear()
    yield
    _lifecycle.reset()
    _reporting.reset_internal_error()
    assert not kl_guard.is_active()

"""The modes and code selection: warn, raise, log, off; select and ignore."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch.nn.functional as F

import kl_guard
from helpers import good, probs_input


def test_warn_mode_deduplicates_per_site_and_code() -> None:
    kl_guard.install(check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            F.kl_div(*probs_input(), reduction="batchmean")
    assert sorted(w.category.__name__ for w in record) == ["KLG003Warning", "KLG004Warning"]
    assert [(f.code, f.count) for f in kl_guard.findings()] == [("KLG003", 5), ("KLG004", 5)]


def test_raise_mode_raises_from_the_users_call_every_time() -> None:
    kl_guard.install(mode="raise")
    for _ in range(2):
        with pytest.raises(kl_guard.KLGuardError) as info:
            F.kl_div(*probs_input(), reduction="batchmean")
        assert [f.code for f in info.value.findings] == ["KLG003", "KLG004"]
        assert "KLG003: input to kl_div looks like probabilities" in str(info.value)


def test_log_mode_uses_the_kl_guard_logger(caplog: pytest.LogCaptureFixture) -> None:
    kl_guard.install(mode="log")
    with caplog.at_level(logging.WARNING, logger="kl_guard"):
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [r.name for r in caplog.records] == ["kl_guard", "kl_guard"]
    assert caplog.records[0].getMessage().startswith("KLG003: ")


def test_off_mode_checks_nothing() -> None:
    kl_guard.install(mode="off")
    F.kl_div(*probs_input(), reduction="batchmean")
    assert kl_guard.findings() == []


def test_env_var_sets_the_default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "raise")
    kl_guard.install()
    with pytest.raises(kl_guard.KLGuardError):
        F.kl_div(*probs_input(), reduction="batchmean")


def test_select_and_ignore() -> None:
    kl_guard.install(mode="raise", ignore=["KLG004"])
    with pytest.raises(kl_guard.KLGuardError) as info:
        F.kl_div(*probs_input(), reduction="batchmean")
    assert [f.code for f in info.value.findings] == ["KLG003"]
    kl_guard.install(select="KLG001")
    F.kl_div(*probs_input(), reduction="batchmean")  # KLG003 is not selected
    with pytest.raises(kl_guard.KLGuardError, match="KLG001"):
        F.kl_div(*good())

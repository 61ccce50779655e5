"""Configuration errors are raised at configuration time, listing what is valid."""

from __future__ import annotations

import pytest

import kl_guard
from kl_guard._config import Config, Mode, configure, default_config, parse_codes


def test_bad_mode_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="must be one of 'warn', 'raise', 'log', 'off', not 'loud'"
    ):
        kl_guard.install(mode="loud")
    assert not kl_guard.is_installed()


def test_bad_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "strict")
    with pytest.raises(ValueError, match="environment variable KL_GUARD_MODE must be one of"):
        kl_guard.install()


def test_env_var_is_case_insensitive() -> None:
    assert default_config({"KL_GUARD_MODE": " RAISE "}).mode is Mode.RAISE
    assert default_config({}).mode is Mode.WARN


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"check_evry": 2}, TypeError, "unknown option 'check_evry'; valid options are 'mode', "),
        ({"check_every": 0}, ValueError, "check_every must be >= 1, not 0"),
        ({"check_every": 2.5}, TypeError, "check_every must be a positive int or None"),
        ({"check_every": True}, TypeError, "check_every must be a positive int or None"),
        ({"sample_rows": "16"}, TypeError, "sample_rows must be a positive int"),
        ({"select": ["KLG009"]}, ValueError, "unknown code 'KLG009' in select; valid codes are"),
        ({"ignore": "KLG001,nope"}, ValueError, "unknown code 'nope' in ignore"),
        ({"ignore": 3}, TypeError, "ignore must be a comma-separated string or an iterable"),
    ],
)
def test_bad_options_fail_at_once(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        kl_guard.install(**options)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        kl_guard.guard(**options)  # type: ignore[arg-type]
    assert not kl_guard.is_installed()


def test_codes_are_normalized() -> None:
    assert parse_codes(" klg001, KLG003 ", option="select") == {"KLG001", "KLG003"}


def test_configure_is_functional() -> None:
    base = Config()
    changed = configure(base, "raise", check_every=3, ignore="KLG001")
    assert base == Config()
    assert changed.mode is Mode.RAISE
    assert changed.check_every == 3
    assert not changed.enabled("KLG001")
    assert changed.enabled("KLG002")
    assert configure(changed, check_every=None).check_every is None

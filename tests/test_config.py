"""Configuration errors are raised at configuration time, listing what is valid."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

import kl_guard
from helpers import logits
from kl_guard._config import Config, Mode, configure, default_config, parse_codes
from kl_guard._findings import CODES, OPT_IN


def test_bad_mode_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="must be one of 'warn', 'raise', 'log', 'off', not 'loud'"
    ):
        kl_guard.install(mode="loud")
    assert not kl_guard.is_active()


def test_bad_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "strict")
    with pytest.raises(ValueError, match="environment variable KL_GUARD_MODE must be one of"):
        kl_guard.install()


def test_bad_env_var_fails_at_install_not_at_the_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "strict")
    with pytest.raises(
        ValueError, match="KL_GUARD_MODE must be one of 'warn', 'raise', 'log', 'off', not 'strict'"
    ):
        kl_guard.install()
    assert not kl_guard.is_active()


def test_env_var_is_read_at_configuration_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kl_guard.install(check_every=1)
    monkeypatch.setenv("KL_GUARD_MODE", "strict")  # too late to matter, and never fatal
    with pytest.warns(kl_guard.KLG001Warning):
        F.kl_div(F.log_softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1))


def test_guard_fails_at_construction_on_a_bad_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "loud")
    with pytest.raises(ValueError, match="environment variable KL_GUARD_MODE must be one of"):
        kl_guard.guard()
    with pytest.raises(ValueError, match="environment variable KL_GUARD_MODE must be one of"):

        @kl_guard.guard(check_every=1)
        def step() -> None:
            pass  # never decorated


def test_decorator_with_bad_options_fails_when_decorating() -> None:
    with pytest.raises(ValueError, match="check_every must be >= 1, not 0"):

        @kl_guard.guard(check_every=0)
        def step() -> None:
            pass  # never decorated


@pytest.mark.parametrize("mode", [3, "", ["warn"]])
def test_mode_of_a_wrong_type_lists_the_valid_ones(mode: object) -> None:
    with pytest.raises(ValueError, match="mode must be one of 'warn', 'raise', 'log', 'off', not "):
        kl_guard.install(mode=mode)  # type: ignore[arg-type]


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
        ({"select": ["KLG099"]}, ValueError, "unknown code 'KLG099' in select; valid codes are"),
        ({"ignore": "KLG001,nope"}, ValueError, "unknown code 'nope' in ignore"),
        ({"ignore": 3}, TypeError, "ignore must be a comma-separated string or an iterable"),
        ({"select": [3]}, ValueError, "unknown code 3 in select; valid codes are 'KLG001', "),
        ({"warmup": 0}, ValueError, "warmup must be >= 1, not 0"),
        ({"max_interval": None}, TypeError, "max_interval must be a positive int, not NoneType"),
        ({"all_ranks": 1}, TypeError, "all_ranks must be True or False, not int 1"),
        ({"all_ranks": "yes"}, TypeError, "all_ranks must be True or False, not str 'yes'"),
    ],
)
def test_bad_options_fail_at_once(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        kl_guard.install(**options)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        kl_guard.guard(**options)  # type: ignore[arg-type]
    assert not kl_guard.is_active()


def test_codes_are_normalized() -> None:
    assert parse_codes(" klg001, KLG003 ", option="select") == {"KLG001", "KLG003"}
    assert parse_codes("all", option="select") == set(CODES)


def test_opt_in_codes_are_off_unless_selected() -> None:
    assert OPT_IN.issubset(CODES)
    assert not Config().enabled("KLG008")
    assert Config().enabled("KLG001")
    only = configure(Config(), select="KLG008")
    assert only.enabled("KLG008")
    assert not only.enabled("KLG001")  # select is the exact set reported
    every = configure(Config(), select="ALL")
    assert all(every.enabled(code) for code in CODES)
    assert not configure(every, ignore="KLG008").enabled("KLG008")


def test_unknown_option_lists_every_valid_one() -> None:
    with pytest.raises(TypeError) as info:
        kl_guard.install(all_rank=True)  # type: ignore[call-arg]
    assert str(info.value) == (
        "kl_guard: unknown option 'all_rank'; valid options are 'mode', 'check_every', "
        "'warmup', 'max_interval', 'sample_rows', 'select', 'ignore', 'all_ranks'."
    )


def test_reports_on_rank_zero_only_unless_all_ranks() -> None:
    assert [Config().reports_on(rank) for rank in (None, 0, 1)] == [True, True, False]
    assert configure(Config(), all_ranks=True).reports_on(1)


def test_configure_is_functional() -> None:
    base = Config()
    changed = configure(base, "raise", check_every=3, ignore="KLG001")
    assert base == Config()
    assert changed.mode is Mode.RAISE
    assert changed.check_every == 3
    assert not changed.enabled("KLG001")
    assert changed.enabled("KLG002")
    assert configure(changed, check_every=None).check_every is None

from __future__ import annotations

import subprocess
import sys

import pytest

from kl_guard import CODES
from kl_guard._cli import main
from kl_guard._codes import BY_CODE


def test_demo_walks_through_every_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for code in CODES:
        if BY_CODE[code].runtime and (code != "KLG004" or "KLG004" in out):
            assert f"{code}: " in out, code
    assert "18 of 19 calls were misuses, and kl_guard caught each one." in out
    assert out.count("corrected: ") == 18


def test_codes_lists_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(CODES)
    assert [line for line in out if "opt-in" in line] == [
        "KLG008  the target requires grad while the input does not "
        "(opt-in: off unless selected, --select KLG008)"
    ]


@pytest.mark.parametrize("typed", ["KLG003", "klg003", " KLG003 "])
def test_explain_takes_a_code_in_any_case(typed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", typed]) == 0
    assert capsys.readouterr().out.startswith("KLG003: input is not log-probabilities\n\n")


def test_explain_of_an_unknown_code_lists_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["explain", "KLG099"])
    assert info.value.code == 2
    assert (
        "error: argument CODE: unknown code 'KLG099'; valid codes are "
        "KLG001, KLG002, KLG003, KLG004, KLG005, KLG006, KLG007, KLG008"
    ) in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: python -m kl_guard" in capsys.readouterr().err


def test_python_dash_m_demo_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kl_guard", "demo"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "KLG003: input to kl_div looks like probabilities" in done.stdout

"""The pytest plugin, run on small suites with pytester.

Runs are in-process (fast) except under xdist; the outer autouse fixture then
checks that nothing of an inner session is left patched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kl_guard
from helpers import ORIGINAL

# An in-process session starts from this test's warning filters; give it
# Python's defaults, as a fresh process would have, not this suite's "error".
pytestmark = pytest.mark.filterwarnings("default")


# One correct test and one with the default reduction='mean' (KLG001 only,
# whatever the random numbers).
SUITE = """
import torch
import torch.nn.functional as F


def logits(seed):
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(seed))


def test_correct():
    F.kl_div(F.log_softmax(logits(0), 1), F.softmax(logits(1), 1), reduction="batchmean")


def test_misuse():
    F.kl_div(F.log_softmax(logits(0), 1), F.softmax(logits(1), 1))  # misuse
"""

MISUSE = "F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1))"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # -p names the plugin, so the tests hold where plugin autoloading is off.
    return pytester.runpytest("-p", "kl_guard", *args)


def run_configured(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    ini: str | None,
    env: str | None,
) -> pytest.RunResult:
    """A run given a mode on the command line, in the ini file and/or in the environment."""
    if ini is not None:
        pytester.makeini(f"[pytest]\nkl_guard = {ini}\n")
    if env is not None:
        monkeypatch.setenv("KL_GUARD_MODE", env)
    return run(pytester, *args)


def line_of(path: Path, marker: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    return pytester.makepyfile(test_suite=SUITE)


def test_misuse_passes_without_the_plugin_and_fails_in_raise_mode(
    pytester: pytest.Pytester, suite: Path
) -> None:
    run(pytester).assert_outcomes(passed=2)

    result = run(pytester, "--kl-guard=raise")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "kl_guard: mode=raise (from --kl-guard)",
            "E * kl_guard.KLGuardError: KLG001: *",
            f"E *   at: test_suite.py:{line_of(suite, '# misuse')}",
            # kl_guard's own frames are hidden: the test's line is the last one
            f"test_suite.py:{line_of(suite, '# misuse')}: KLGuardError",
        ]
    )
    assert torch.nn.functional.kl_div is ORIGINAL.kl_div
    assert not kl_guard.is_active()


def test_off_it_imports_no_torch(pytester: pytest.Pytester) -> None:
    # A process of its own: this one has torch already.
    pytester.makepyfile(
        test_cost="""
        import sys

        def test_torch_is_not_imported():
            assert "torch" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "kl_guard")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["kl_guard: mode=off (default)"])


def test_reference_taken_by_a_conftest_import_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(losses="from torch.nn.functional import kl_div\n")
    pytester.makeconftest("import losses\n")
    pytester.makepyfile(
        test_cached=f"""
        import torch
        import torch.nn.functional as F
        from losses import kl_div

        def test_misuse():
            {MISUSE.replace("F.kl_div", "kl_div")}
        """
    )
    run(pytester, "--kl-guard=raise").assert_outcomes(failed=1)


def test_marker_guards_one_test_or_a_module(pytester: pytest.Pytester) -> None:
    header = (
        "import pytest\nimport torch\nimport torch.nn.functional as F\n\n"
        "from kl_guard import KLG001Warning\n"
    )
    pytester.makepyfile(
        test_marked=header
        + f"""
@pytest.mark.kl_guard(mode="raise")
def test_marked():
    {MISUSE}


@pytest.mark.kl_guard(mode="raise", ignore="KLG001")
def test_marked_ignoring_the_code():
    {MISUSE}


def test_unmarked():
    {MISUSE}


@pytest.mark.kl_guard(mode="raise", bogus=1)
def test_bad_option():
    pass
""",
        test_module_marked=header
        + f"""
pytestmark = pytest.mark.kl_guard(mode="raise")


def test_module_marked():
    {MISUSE}


@pytest.mark.kl_guard(mode="warn")
def test_closest_marker_wins():
    with pytest.warns(KLG001Warning):
        {MISUSE}
""",
    )
    result = run(pytester)
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines(["*TypeError: kl_guard: unknown option 'bogus'*"])


def test_fixture_yields_the_guard_of_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        import torch
        import torch.nn.functional as F

        from kl_guard import KLG001Warning, KLGuardError

        def test_own_guard_warns(kl_guard):
            with pytest.warns(KLG001Warning):
                {MISUSE}
            assert [f.code for f in kl_guard.findings] == ["KLG001"]

        @pytest.mark.kl_guard(mode="raise")
        def test_marker_guard(kl_guard):
            assert kl_guard.active
            with pytest.raises(KLGuardError):
                {MISUSE}
            assert [f.code for f in kl_guard.findings] == ["KLG001"]
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_guard_ends_when_a_fixture_teardown_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def broken():
            yield
            raise RuntimeError("teardown fails")

        @pytest.mark.kl_guard(mode="raise")
        def test_passes(broken):
            pass
        """
    )
    run(pytester).assert_outcomes(passed=1, errors=1)
    assert not kl_guard.is_active()


@pytest.mark.parametrize(
    ("args", "ini", "env", "header", "failed"),
    [
        ((), None, None, "kl_guard: mode=off (default)", 0),
        ((), None, "raise", "kl_guard: mode=raise (from KL_GUARD_MODE)", 1),
        ((), "raise", "warn", "kl_guard: mode=raise (from ini option kl_guard)", 1),
        (("--kl-guard=warn",), "raise", "raise", "kl_guard: mode=warn (from --kl-guard)", 0),
        # shared with training runs, the variable may say "log"
        ((), None, "log", "kl_guard: mode=log (from KL_GUARD_MODE)", 0),
    ],
)
def test_mode_from_command_line_then_ini_then_environment(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    suite: Path,
    args: tuple[str, ...],
    ini: str | None,
    env: str | None,
    header: str,
    failed: int,
) -> None:
    result = run_configured(pytester, monkeypatch, args, ini, env)
    result.stdout.fnmatch_lines([header])
    result.assert_outcomes(passed=2 - failed, failed=failed)


@pytest.mark.parametrize(
    ("args", "ini", "env", "message"),
    [
        (
            ("--kl-guard=loud",),
            None,
            None,
            "*argument --kl-guard: invalid choice: 'loud' (choose from *off*warn*raise*)",
        ),
        (
            (),
            "loud",
            None,
            "ERROR: kl_guard: ini option kl_guard must be one of 'off', 'warn', 'raise', "
            "not 'loud'.",
        ),
        (
            (),
            None,
            "loud",
            "ERROR: kl_guard: KL_GUARD_MODE must be one of 'warn', 'raise', 'log', 'off', "
            "not 'loud'.",
        ),
    ],
)
def test_bad_mode_fails_at_startup_listing_the_valid_ones(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    suite: Path,
    args: tuple[str, ...],
    ini: str | None,
    env: str | None,
    message: str,
) -> None:
    result = run_configured(pytester, monkeypatch, args, ini, env)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_patch_is_removed_when_the_command_line_fails_late(pytester: pytest.Pytester) -> None:
    # The unknown option fails the full parse, after the early hook installed.
    result = run(pytester, "--kl-guard=raise", "--no-such-option")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not kl_guard.is_active()


def test_warn_mode_lists_the_findings_in_the_summary(
    pytester: pytest.Pytester, suite: Path
) -> None:
    result = run(pytester, "--kl-guard=warn")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= kl_guard findings =*",
            "1 finding in 2 loss calls (2 checked from their tensors)",
            "code    location * count  cause",
            f"KLG001  test_suite.py:{line_of(suite, '# misuse')}  * 1  kl_div reduction 'mean' *",
        ]
    )
    assert "= kl_guard" not in run(pytester).stdout.str()
    pytester.makepyfile(test_suite="def test_nothing():\n    pass\n")
    result = run(pytester, "--kl-guard=warn")
    result.stdout.fnmatch_lines(["*= kl_guard =*", "no loss call seen: *"])


@pytest.mark.slow
def test_under_xdist_workers_fail_the_test_and_send_their_findings(
    pytester: pytest.Pytester, suite: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "kl_guard", "-p", "xdist", "-n", "2", "--kl-guard=raise"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * kl_guard.KLGuardError: KLG001: *",
            "*= kl_guard findings =*",
            "1 finding in 2 loss calls (2 checked from their tensors)",
            "code *",
            f"KLG001  test_suite.py:{line_of(suite, '# misuse')}  * 1  *",
        ]
    )

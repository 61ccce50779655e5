"""``python -m kl_guard run``: end to end in a subprocess, the rest through ``_cli.main``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

import kl_guard
from helpers import run_subprocess
from kl_guard import _cli, _runner, _summary

# Two misuses, each at its own line, repeated as a training loop would.
TRAIN = """\
import sys

import torch
import torch.nn.functional as F
from torch import nn

g = torch.Generator().manual_seed(0)
student = torch.randn(8, 5, generator=g, requires_grad=True)
teacher = torch.randn(8, 5, generator=g)
criterion = nn.KLDivLoss(reduction="batchmean")
for step in range(500):
    kd = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1))  # KLG001
    wrong_dim = criterion(F.log_softmax(student, 1), F.softmax(teacher, 0))  # KLG006
    (kd + wrong_dim).backward()
print("trained", sys.argv[1:])
"""


def line_of(source: str, marker: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if marker in line)


KLG001_AT = f"train.py:{line_of(TRAIN, '# KLG001')}"
KLG006_AT = f"train.py:{line_of(TRAIN, '# KLG006')}"


def script(tmp_path: Path, source: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def test_training_script_runs_to_the_end_with_a_summary_and_json(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    done = run_subprocess(tmp_path, "--json", "report.json", "train.py", "--epochs", "3")

    assert done.returncode == 0, done.stderr
    assert "trained ['--epochs', '3']" in done.stdout
    summary = done.stderr[done.stderr.index("kl_guard summary") :].splitlines()
    assert summary[0] == (
        "kl_guard summary (mode=warn): 2 findings in 1000 loss calls "
        "(26 checked from their tensors)"
    )
    assert summary[1].split() == ["code", "location", "count", "cause"]
    rows = sorted(line.split()[:2] for line in summary[2:])
    assert rows == [["KLG001", KLG001_AT], ["KLG006", KLG006_AT]]

    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["version"], report["mode"], report["exit_status"]) == (1, "warn", 0)
    assert report["calls"] == {"seen": 1000, "checked": 26, "traced": 0}
    found = {(f["code"], f["location"]): f for f in report["findings"]}
    assert set(found) == {("KLG001", KLG001_AT), ("KLG006", KLG006_AT)}
    for finding in found.values():
        assert set(finding) == {"code", "location", "message", "summary", "count", "rank"}
        # 500 calls a site, 13 checked (1-8, 16, ..., 256): counts, not copies.
        assert 8 < finding["count"] < 50
        assert finding["message"].startswith(f"{finding['code']}: {finding['summary']}")


def test_raise_mode_stops_the_script_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    done = run_subprocess(tmp_path, "--mode", "raise", "--json", "report.json", "train.py")

    assert done.returncode == 1
    assert "trained" not in done.stdout
    traceback = done.stderr[done.stderr.index("Traceback") :]
    # The script's own frame and the diagnosis; no frame of runpy or kl_guard.
    assert f'train.py", line {line_of(TRAIN, "# KLG001")}, in <module>' in traceback
    assert "kl_guard.KLGuardError: KLG001: " in traceback
    assert "runpy" not in traceback
    assert "kl_guard/" not in traceback
    assert done.stderr.splitlines()[-3] == (
        "kl_guard summary (mode=raise): 1 finding in 1 loss call (1 checked from their tensors)"
    )
    assert json.loads((tmp_path / "report.json").read_text())["exit_status"] == 1


@pytest.mark.parametrize(
    ("source", "status", "stderr"),
    [
        ("pass", 0, ""),
        ("import sys\nsys.exit(3)", 3, ""),
        ("import sys\nsys.exit('bye')", 1, "bye\n"),
        ("raise RuntimeError('boom')", 1, "RuntimeError: boom\n"),
        ("raise KeyboardInterrupt", 130, "KeyboardInterrupt\n"),
    ],
)
def test_exit_status_is_the_scripts_and_the_summary_always_comes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], source: str, status: int, stderr: str
) -> None:
    assert _cli.main(["run", script(tmp_path, source)]) == status
    err = capfd.readouterr().err
    assert err.endswith(f"{stderr}kl_guard summary (mode=warn): {_summary.NOTHING_SEEN}\n")
    if status == 1 and "Error" in stderr:
        assert 'script.py", line 1, in <module>' in err


def test_script_gets_its_own_argv_and_path(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = script(tmp_path, "import sys\nprint(sys.argv, sys.path[0], __name__)")
    argv, path0 = sys.argv[:], sys.path[0]

    assert _cli.main(["run", path, "a", "--mode", "raise"]) == 0
    assert capfd.readouterr().out == f"{[path, 'a', '--mode', 'raise']} {tmp_path} __main__\n"
    assert (sys.argv, sys.path[0]) == (argv, path0)


def test_module_runs_as_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    script(tmp_path, "import sys\nprint(sys.argv[1:], __name__)\nsys.exit(4)", "klg_demo_mod.py")
    monkeypatch.chdir(tmp_path)

    assert _cli.main(["run", "-m", "klg_demo_mod", "x"]) == 4
    assert capfd.readouterr().out == "['x'] __main__\n"


MISUSE = """\
import torch
import torch.nn.functional as F
F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1))
"""


@pytest.mark.parametrize(
    ("options", "codes"),
    [
        (["--mode", "log"], ["KLG001"]),
        (["--mode", "log", "--ignore", "KLG001"], []),
        (["--mode", "log", "--select", "klg001, KLG003", "--check-every", "2"], ["KLG001"]),
    ],
)
def test_options_reach_the_guard(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    options: list[str],
    codes: list[str],
) -> None:
    json_path = tmp_path / "report.json"
    argv = ["run", *options, "--json", str(json_path), script(tmp_path, MISUSE)]
    assert _cli.main(argv) == 0
    report: dict[str, Any] = json.loads(json_path.read_text())
    assert [f["code"] for f in report["findings"]] == codes
    assert report["mode"] == "log"


REVERSE_KL = """\
import torch
import torch.nn.functional as F
student = torch.randn(8, 5, requires_grad=True)
F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(student, 1), reduction="batchmean")
"""


@pytest.mark.parametrize(
    ("options", "codes"),
    [([], []), (["--select", "KLG008"], ["KLG008"]), (["--select", "ALL"], ["KLG008"])],
)
def test_opt_in_codes_only_when_selected(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], options: list[str], codes: list[str]
) -> None:
    json_path = tmp_path / "report.json"
    argv = ["run", "--mode", "log", *options, "--json", str(json_path)]
    assert _cli.main([*argv, script(tmp_path, REVERSE_KL)]) == 0
    assert [f["code"] for f in json.loads(json_path.read_text())["findings"]] == codes


def test_raise_mode_in_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["run", "--mode", "raise", script(tmp_path, MISUSE)]) == 1
    err = capfd.readouterr().err
    assert "kl_guard.KLGuardError: KLG001: " in err
    assert err.splitlines()[-3] == (
        "kl_guard summary (mode=raise): 1 finding in 1 loss call (1 checked from their tensors)"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["run", "missing.py"], "can't open file 'missing.py': no such file or directory"),
        (["run", "-m", "klg_missing_mod"], "no module named 'klg_missing_mod'"),
        (["run", "-m", "klg_missing_pkg.mod"], "no module named 'klg_missing_pkg.mod'"),
        (
            ["run", "--select", "KLG001,KLG999", "x.py"],
            "argument --select: kl_guard: unknown code 'KLG999' in --select; valid codes are "
            "'KLG001', 'KLG002', 'KLG003', 'KLG004', 'KLG005', 'KLG006', 'KLG007', 'KLG008', "
            "'KLG009', 'KLG010', 'KLG011', 'KLG012', 'KLG013', 'KLG014', 'KLG015', or 'ALL', "
            "or a loss's name: 'kl_div', 'cross_entropy', 'nll_loss', "
            "'binary_cross_entropy_with_logits'.",
        ),
        (
            ["run", "--check-every", "0", "x.py"],
            "argument --check-every: must be a positive integer, not '0'",
        ),
        (["run", "--mode", "loud", "x.py"], "argument --mode: invalid choice: 'loud' *"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    argv: list[str],
    error: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc_info:
        _cli.main(argv)
    assert exc_info.value.code == 2
    last = capfd.readouterr().err.splitlines()[-1]
    prefix = "python -m kl_guard run: error: "
    assert last.startswith(prefix)
    assert fnmatch(last[len(prefix) :], error)


def test_bad_environment_mode_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KL_GUARD_MODE", "loud")
    with pytest.raises(SystemExit) as exc_info:
        _cli.main(["run", script(tmp_path, "pass")])
    assert exc_info.value.code == 2
    assert "KL_GUARD_MODE must be one of 'warn', 'raise', 'log', 'off'" in capfd.readouterr().err


def test_unwritable_json_report_is_an_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--json", str(tmp_path / "no" / "report.json"), script(tmp_path, "pass")]
    assert _cli.main(argv) == 2
    assert "kl_guard: could not write the JSON report: " in capfd.readouterr().err


SWALLOWED = """\
import torch
import torch.nn.functional as F
try:
    F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1))
except ValueError:  # a framework that catches everything and goes on
    pass
F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1), reduction="sum")
"""


@pytest.mark.parametrize(("mode", "status"), [("raise", 1), ("warn", 0)])
def test_a_finding_caught_by_the_program_still_fails_raise_mode(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], mode: str, status: int
) -> None:
    json_path = tmp_path / "report.json"
    argv = ["run", "--mode", mode, "--json", str(json_path), script(tmp_path, SWALLOWED)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kl_guard.KLGuardWarning)
        assert _cli.main(argv) == status
    err = capfd.readouterr().err.splitlines()
    report = json.loads(json_path.read_text())
    assert (report["exit_status"], report["calls"]) == (
        status,
        {"seen": 2, "checked": 2, "traced": 0},
    )
    assert [f["code"] for f in report["findings"]] == ["KLG001"]
    said = "a finding was recorded in raise mode but the program went on"
    assert any(said in line for line in err) == (mode == "raise")


def test_a_run_that_saw_no_kl_call_says_so(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cached = "import torch\nfrom kl_guard._patch import PATCH\n"  # stands for code kl_guard missed
    json_path = tmp_path / "report.json"
    assert _cli.main(["run", "--json", str(json_path), script(tmp_path, cached)]) == 0
    last = capfd.readouterr().err.splitlines()[-1]
    assert last.startswith("kl_guard summary (mode=warn): no loss call seen: ")
    assert "a process kl_guard did not follow" in last and "compiled code" in last
    assert json.loads(json_path.read_text())["calls"] == {"seen": 0, "checked": 0, "traced": 0}


ENDED_HARD = """\
import os, signal, sys
import torch
import torch.nn.functional as F
import kl_guard
try:
    F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1))
except kl_guard.KLGuardError:
    pass  # swallowed, then the process ends with no exit handler run
if sys.argv[1] == "_exit":
    os._exit(0)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("end", "status"), [("_exit", 1), ("kill", 128 + signal.SIGKILL)])
def test_a_program_that_ends_without_exit_handlers_still_gets_its_summary(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], end: str, status: int
) -> None:
    json_path = tmp_path / "report.json"
    argv = ["run", "--mode", "raise", "--json", str(json_path), script(tmp_path, ENDED_HARD), end]
    assert _cli.main(argv) == status
    report = json.loads(json_path.read_text())
    assert [f["code"] for f in report["findings"]] == ["KLG001"]
    [program] = report["processes"]
    assert not program["complete"] and program["findings"] == 1
    said = "kl_guard summary (mode=raise): 1 finding in at least 1 loss call"
    assert said in capfd.readouterr().err


STOPPED = """\
import time
import torch
import torch.nn.functional as F
F.kl_div(F.log_softmax(torch.randn(8, 5), 1), F.softmax(torch.randn(8, 5), 1))
open("started", "w").close()
time.sleep(60)
"""


def test_a_sigterm_to_the_runner_is_passed_on_to_the_program(tmp_path: Path) -> None:
    (tmp_path / "stopped.py").write_text(STOPPED)
    runner = subprocess.Popen(
        [sys.executable, "-m", "kl_guard", "run", "--json", "r.json", "stopped.py"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.send_signal(signal.SIGTERM)  # a scheduler stopping the job
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    [program] = json.loads((tmp_path / "r.json").read_text())["processes"]
    # the program's SIGTERM handler wrote its whole record before it ended
    assert program["complete"] and program["calls"]["seen"] == 1 and program["findings"] == 1


def test_the_program_shares_the_interpreters_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "warnoptions", ["error::UserWarning"])
    monkeypatch.setattr(sys, "_xoptions", {"dev": True, "frozen_modules": "off"})
    flags = _runner._interpreter_flags()
    assert flags[:3] == ["-Werror::UserWarning", "-Xdev", "-Xfrozen_modules=off"]
    assert not {"-E", "-I", "-s"} & set(flags)  # they would drop the run's hook

"""The pre-commit hook, as a user adds it: ``pre-commit try-repo`` against this repository
on a scratch project with one misusing and one correct file.

pre-commit builds the hook's own environment from this repository (``pip install .``);
a user's gets kl_guard's dependencies too (torch), this one kl_guard alone (lint needs
neither torch nor wrapt), which saves most of the test's time.
``.ci/frameworks`` installs pre-commit; without it this module is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pre_commit")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent

MISUSE = """\
import torch.nn.functional as F


def distill(student, teacher):
    return F.kl_div(F.softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="batchmean")
"""

CORRECT = MISUSE.replace("F.kl_div(F.softmax(student", "F.kl_div(F.log_softmax(student")


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def test_the_hook_reports_the_misuse_and_passes_the_correct_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "distill.py").write_text(MISUSE)
    (project / "correct.py").write_text(CORRECT)
    git(project, "init", "-q")
    git(project, "add", ".")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        # kl_guard alone: lint imports neither torch nor wrapt (tests/test_layers.py), and
        # copying torch into the hook's environment would be most of this test's time
        "PIP_NO_DEPS": "1",
    }

    def hook(*files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "kl-guard-lint"]
            + (["--files", *files] if files else ["--all-files"]),
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    everything = hook()
    assert everything.returncode == 1, everything.stdout + everything.stderr
    assert "distill.py:5:" in everything.stdout and "KLG003" in everything.stdout
    assert "correct.py" not in everything.stdout
    correct = hook("correct.py")  # the environment is built once, then reused
    assert correct.returncode == 0, correct.stdout + correct.stderr
    assert "Passed" in correct.stdout

"""The pre-commit hook, as a user adds it: ``pre-commit try-repo`` against this repository
on a scratch project with one misusing and one correct file.

pre-commit builds the hook's own environment from this repository (``pip install .``),
torch included: here the machine's CPU build, pinned by ``PIP_CONSTRAINT``.
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
    (tmp_path / "constraints.txt").write_text(f"torch=={_torch_version()}\n")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        "PIP_CONSTRAINT": str(tmp_path / "constraints.txt"),
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


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]

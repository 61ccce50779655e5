"""The framework launchers under ``python -m kl_guard run``, as a user runs them.

Lightning (``ddp``, ``ddp_spawn``), ``accelerate launch`` and the Hugging Face
Trainer (one process, and two ranks under torchrun) each train a tiny random
teacher and student on CPU (gloo), once with a correct KL loss and once with a
planted misuse (correct in warn mode, misuse in raise mode). The loss family has tries of its own:
a GPT-2 fine-tuned by the Trainer (cross_entropy inside transformers), a
Lightning classifier with mixup (soft targets, label smoothing) and a focal
loss in plain PyTorch (binary cross-entropy with logits). Each run must end
within its timeout with one summary and one JSON that name every rank, the
misuse found once per rank, and the exit status of the mode. The frameworks
are no dependency of kl_guard: ``.ci/frameworks`` installs pinned releases in
a scratch environment and runs this module; without them it is skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import misuse_line, run_training

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TIMEOUT = 240

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
# Two CPU processes: on a machine without GPUs, --multi_gpu gives two gloo ranks through
# torch.distributed.run; --cpu --num_processes 2 gives one process (no mpirun).
ACCELERATE = ("--multi_gpu", "--num_processes", "2")

# Each launcher runs correct in warn mode and with its misuse in raise mode: the other two
# combinations add no launcher behaviour (tests/test_runner.py has the modes' exit status),
# and the frameworks job must stay within a few minutes.
RUNS = ((False, "warn"), (True, "raise"))


@dataclasses.dataclass(frozen=True)
class Launcher:
    framework: str
    script: str
    #: the command line after ``python -m kl_guard run``; ``{out}`` is a scratch folder
    program: tuple[str, ...]
    ranks: tuple[int, ...]
    #: the codes the planted misuse gets on each rank
    codes: frozenset[str]


LAUNCHERS = {
    "lightning-ddp": Launcher(
        "lightning",
        "lightning_distill.py",
        ("lightning_distill.py", "ddp"),
        (0, 1),
        frozenset({"KLG007", "KLG004"}),
    ),
    "lightning-ddp_spawn": Launcher(
        "lightning",
        "lightning_distill.py",
        ("lightning_distill.py", "ddp_spawn"),
        (0, 1),
        frozenset({"KLG007", "KLG004"}),
    ),
    "accelerate-launch": Launcher(
        "accelerate",
        "accelerate_distill.py",
        ("accelerate", "launch", *ACCELERATE, "accelerate_distill.py"),
        (0, 1),
        frozenset({"KLG001"}),
    ),
    "accelerate-module": Launcher(
        "accelerate",
        "accelerate_distill.py",
        ("-m", "accelerate.commands.launch", *ACCELERATE, "accelerate_distill.py"),
        (0, 1),
        frozenset({"KLG001"}),
    ),
    "trainer": Launcher(
        "transformers",
        "trainer_distill.py",
        ("trainer_distill.py", "{out}"),
        (),
        frozenset({"KLG003", "KLG004"}),
    ),
    "trainer-torchrun": Launcher(
        "transformers",
        "trainer_distill.py",
        (*TORCHRUN, "trainer_distill.py", "{out}"),
        (0, 1),
        frozenset({"KLG003", "KLG004"}),
    ),
    # under torchrun only: the one-process Trainer is the KL row's ("trainer"), and CI's
    # time is short
    "trainer-causal-lm-torchrun": Launcher(
        "transformers",
        "trainer_causal_lm.py",
        (*TORCHRUN, "trainer_causal_lm.py", "{out}"),
        (0, 1),
        frozenset({"KLG010"}),
    ),
    "lightning-mixup-ddp": Launcher(
        "lightning",
        "lightning_mixup.py",
        ("lightning_mixup.py",),
        (0, 1),
        frozenset({"KLG015"}),
    ),
    "torch-focal-loss": Launcher(
        "torch",
        "focal_loss.py",
        ("focal_loss.py",),
        (),
        frozenset({"KLG014"}),
    ),
}


def _params() -> list[Any]:
    params = []
    for name, launcher in LAUNCHERS.items():
        marks = []
        if importlib.util.find_spec(launcher.framework) is None:
            marks.append(
                pytest.mark.skip(
                    reason=f"{launcher.framework} is not installed (bash .ci/frameworks runs these)"
                )
            )
        for misuse, mode in RUNS:
            variant = "misuse" if misuse else "correct"
            params.append(
                pytest.param(launcher, misuse, mode, marks=marks, id=f"{name}-{variant}-{mode}")
            )
    return params


@dataclasses.dataclass(frozen=True)
class Job:
    status: int
    stderr: str
    report: dict[str, Any]

    @property
    def summary(self) -> list[str]:
        return self.stderr[self.stderr.rindex("kl_guard summary") :].splitlines()


def run_job(tmp_path: Path, launcher: Launcher, misuse: bool, mode: str) -> Job:
    shutil.copy(HERE / launcher.script, tmp_path)
    program = [arg.format(out=tmp_path / "out") for arg in launcher.program]
    if misuse:
        program.append("--misuse")
    command = [sys.executable, "-m", "kl_guard", "run", "--mode", mode, "--json", "r.json"]
    done = run_training(tmp_path, [*command, *program], TIMEOUT)
    assert "kl_guard summary" in done.stderr, done.stderr[-4000:]
    report = json.loads((tmp_path / "r.json").read_text())
    return Job(done.returncode, done.stderr, report)


@pytest.mark.parametrize(("launcher", "misuse", "mode"), _params())
def test_a_launcher_gives_one_summary_json_and_status(
    tmp_path: Path, launcher: Launcher, misuse: bool, mode: str
) -> None:
    job = run_job(tmp_path, launcher, misuse, mode)
    context = "\n".join(job.stderr.splitlines()[-60:])
    expected = 1 if misuse and mode == "raise" else 0
    assert job.status == expected, context
    assert job.report["exit_status"] == expected

    # Every rank is there, labelled, and saw (and checked) its loss calls.
    processes = job.report["processes"]
    ranked = [p for p in processes if p["rank"] is not None]
    assert sorted(p["rank"] for p in ranked) == list(launcher.ranks), context
    assert all(p["calls"]["checked"] > 0 for p in ranked), processes
    for rank in launcher.ranks:
        assert any(line.strip().startswith(f"rank {rank}: ") for line in job.summary), context
    unranked = [p for p in processes if p["rank"] is None]
    # the launcher's own process, or the single process of a run without ranks
    assert len(unranked) <= 1, processes
    checked = job.report["calls"]["checked"]
    assert checked > 0

    found = {(f["location"], f["code"], f["rank"]) for f in job.report["findings"]}
    assert len(found) == len(job.report["findings"]), "a finding repeated for one rank"
    if not misuse:
        assert found == set(), context
        assert job.summary[0].startswith(f"kl_guard summary (mode={mode}): no findings in "), (
            context
        )
        assert f"({checked} checked from their tensors)" in job.summary[0]
        return
    line = misuse_line(HERE / launcher.script)
    ranks: tuple[int | None, ...] = launcher.ranks or (None,)
    assert found == {(line, code, rank) for code in launcher.codes for rank in ranks}, context
    for rank in launcher.ranks:
        labelled = f"{line} (rank {rank})"
        assert sum(labelled in text for text in job.summary) == len(launcher.codes), context

"""The framework callbacks, as a user trains with them: findings read back from the loggers'
own files.

``kl_guard.lightning.KLGuardCallback`` under ``ddp``, ``ddp_spawn`` and a
``torch.compile``d module, with Lightning's CSV and TensorBoard loggers;
``kl_guard.transformers.KLGuardCallback`` in a Trainer under torchrun with
``report_to=["tensorboard"]``. Each run is a plain ``python`` (or torchrun) command:
no runner, no ``install()``. The misuse is on every rank, so each rank's finding must
reach rank zero's loggers: the count per code rises to one per rank.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import misuse_line, run_training

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TIMEOUT = 240
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


def needs(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"{', '.join(missing)} not installed (bash .ci/frameworks runs these)"
    )


@dataclasses.dataclass(frozen=True)
class Run:
    status: int
    stderr: str
    out: Path

    @property
    def summary(self) -> list[str]:
        return self.stderr[self.stderr.rindex("kl_guard summary") :].splitlines()


def train(tmp_path: Path, script: str, *args: str) -> Run:
    shutil.copy(HERE / script, tmp_path)
    launcher = [*TORCHRUN, script] if script.startswith("trainer") else [script]
    done = run_training(tmp_path, [sys.executable, *launcher, *args], TIMEOUT)
    return Run(done.returncode, done.stderr, tmp_path / "out")


def tensorboard(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[str]]]:
    """The scalars (step, value) and texts of every TensorBoard event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-not-found]
        EventAccumulator,
    )

    (run,) = {path.parent for path in folder.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }
    texts = {
        tag.removesuffix("/text_summary"): [
            e.tensor_proto.string_val[0].decode() for e in events.Tensors(tag)
        ]
        for tag in events.Tags()["tensors"]
    }
    return scalars, texts


def csv_metrics(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSVLogger's metrics.csv: each column's (step, value) where it has one."""
    (path,) = folder.rglob("metrics.csv")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    columns = [name for name in rows[0] if name != "step"]
    return {
        name: [(int(row["step"]), float(row[name])) for row in rows if row[name]]
        for name in columns
    }


def kl_guard_only(metrics: dict[str, Any], prefix: str = "kl_guard/") -> dict[str, Any]:
    return {name[name.index(prefix) :]: v for name, v in metrics.items() if prefix in name}


# -- Lightning -----------------------------------------------------------------------

LIGHTNING = "lightning_distill.py"


def lightning(tmp_path: Path, strategy: str, *args: str) -> Run:
    return train(tmp_path, LIGHTNING, strategy, "--logs", "out", *args)


@needs("lightning", "tensorboard")
def test_lightning_correct_fit_logs_a_clean_summary(tmp_path: Path) -> None:
    run = lightning(tmp_path, "ddp", "--callback", "warn")
    assert run.status == 0, run.stderr[-4000:]
    assert run.summary[0] == (
        "kl_guard summary (mode=warn, fit): no findings in 8 loss calls "
        "(8 checked from their tensors), in 2 processes"
    )
    ends = {"kl_guard/loss_calls": [(4, 8.0)], "kl_guard/checked": [(4, 8.0)]}
    ends["kl_guard/findings"] = [(4, 0.0)]
    assert kl_guard_only(csv_metrics(run.out)) == ends
    scalars, texts = tensorboard(run.out)
    assert kl_guard_only(scalars) == ends
    assert list(kl_guard_only(texts)) == ["kl_guard/summary"]


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
@needs("lightning", "tensorboard")
def test_lightning_logs_each_ranks_finding_once(tmp_path: Path, strategy: str) -> None:
    run = lightning(tmp_path, strategy, "--callback", "warn", "--misuse")
    assert run.status == 0, run.stderr[-4000:]
    line = misuse_line(HERE / LIGHTNING)
    for rank in (0, 1):
        for code in ("KLG007", "KLG004"):
            assert sum(code in s and f"{line} (rank {rank})" in s for s in run.summary) == 1
    # rank 0's at its first step; rank 1's once the ranks meet, at the epoch's end (step 4)
    per_code = {"kl_guard/KLG007": [(1, 1.0), (4, 2.0)], "kl_guard/KLG004": [(1, 1.0), (4, 2.0)]}
    ends = {"kl_guard/loss_calls": [(4, 8.0)], "kl_guard/checked": [(4, 8.0)]}
    ends["kl_guard/findings"] = [(4, 4.0)]
    assert kl_guard_only(csv_metrics(run.out)) == {**per_code, **ends}
    scalars, texts = tensorboard(run.out)
    assert kl_guard_only(scalars) == {**per_code, **ends}
    first, then = texts["kl_guard/text"]
    assert "KLG007" in first and f"at: {line} (rank 0)" in first
    assert f"at: {line} (rank 1)" in then
    assert "kl_guard summary (mode=warn, fit): 4 findings" in texts["kl_guard/summary"][0]


@needs("lightning")
def test_lightning_raise_mode_stops_the_fit(tmp_path: Path) -> None:
    run = lightning(tmp_path, "ddp", "--callback", "raise", "--misuse")
    assert run.status != 0
    assert "kl_guard.KLGuardError: KLG007" in run.stderr, run.stderr[-4000:]
    assert "kl_guard summary" not in run.stderr


@needs("lightning")
def test_lightning_guards_a_compiled_module_then_its_validation(tmp_path: Path) -> None:
    run = lightning(tmp_path, "single", "--callback", "warn", "--misuse", "--compile", "--validate")
    assert run.status == 0, run.stderr[-4000:]
    fit = run.stderr[: run.stderr.rindex("kl_guard summary")]
    assert "kl_guard summary (mode=warn, fit): 2 findings in 4 loss calls" in fit
    # the validation's 8 batches, checked by a guard of its own; the same line's finding
    # is not logged again
    assert run.summary[0].startswith("kl_guard summary (mode=warn, validate): 2 findings in 8")
    metrics = kl_guard_only(csv_metrics(run.out))
    assert metrics["kl_guard/KLG007"] == [(1, 1.0)]
    assert metrics["kl_guard/loss_calls"] == [(4, 4.0), (4, 8.0)]


# -- the Hugging Face Trainer ---------------------------------------------------------

TRAINER = "trainer_distill.py"


@pytest.mark.parametrize("misuse", [False, True])
@needs("transformers", "tensorboard")
def test_the_trainer_reports_to_tensorboard(tmp_path: Path, misuse: bool) -> None:
    run = train(tmp_path, TRAINER, "out", "--callback", "warn", *(["--misuse"] if misuse else []))
    assert run.status == 0, run.stderr[-4000:]
    scalars, texts = tensorboard(run.out)
    # The Trainer's own logs are there as before, every other step.
    assert [step for step, _ in scalars["train/loss"]] == [2, 4]
    found = 4 if misuse else 0
    assert run.summary[0] == (
        f"kl_guard summary (mode=warn, train): {'4 findings' if misuse else 'no findings'} "
        "in 16 loss calls (16 checked from their tensors), in 2 processes"
    )
    ends = {"kl_guard/loss_calls": [(4, 16.0)], "kl_guard/checked": [(4, 16.0)]}
    ends["kl_guard/findings"] = [(4, float(found))]
    if not misuse:
        assert kl_guard_only(scalars) == ends
        assert list(kl_guard_only(texts)) == ["kl_guard/summary"]
        return
    per_code = {"kl_guard/KLG003": [(1, 1.0), (4, 2.0)], "kl_guard/KLG004": [(1, 1.0), (4, 2.0)]}
    assert kl_guard_only(scalars) == {**per_code, **ends}
    line = misuse_line(HERE / TRAINER)
    first, then = kl_guard_only(texts)["kl_guard/text"]
    assert "KLG003" in first and f"at: {line} (rank 0)" in first
    assert f"at: {line} (rank 1)" in then


@needs("transformers")
def test_the_trainer_stops_in_raise_mode(tmp_path: Path) -> None:
    run = train(tmp_path, TRAINER, "out", "--callback", "raise", "--misuse")
    assert run.status != 0
    assert "kl_guard.KLGuardError: KLG003" in run.stderr, run.stderr[-4000:]


@needs("lightning", "transformers")
def test_kl_guard_imports_neither_framework() -> None:
    script = (
        "import sys, kl_guard; kl_guard.install(); kl_guard.uninstall(); "
        "print(sorted({'lightning', 'pytorch_lightning', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


@needs("transformers")
def test_without_the_trainers_handler_the_callback_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kl_guard.transformers import UNREACHED, KLGuardCallback

    callback = KLGuardCallback()
    callback.on_train_begin(None, None, None)  # called by no CallbackHandler
    try:
        assert [r.getMessage() for r in caplog.records] == [UNREACHED]
    finally:
        callback._watch.stop()

"""Child processes under ``python -m kl_guard run``: one summary, one JSON, one exit status.

Each launcher runs for real, on CPU (gloo), in a subprocess; the parts
(combining records, the start-up hook's chaining) are tested alone first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import run_subprocess
from kl_guard import _processes
from kl_guard._findings import Counts, Finding


def finding(location: str, rank: int | None, count: int = 1) -> Finding:
    return Finding("KLG001", "s", "m", location=location, count=count, rank=rank)


def test_records_combine_per_location_code_and_rank(tmp_path: Path) -> None:
    for pid, rank in ((11, 0), (12, 1), (13, None)):
        found = [finding("a.py:1", None, 2), finding("b.py:2", 5)]
        process = _processes.Process(pid, rank, ("a.py",), Counts(10, 3, 1), tuple(found))
        _processes.write(str(tmp_path), process)
    processes = _processes.collect(str(tmp_path))  # the folder goes with followed()
    assert [p.label() for p in processes] == ["rank 0", "rank 1", "pid 13"]
    found, counts = _processes.combined(processes)
    assert counts == Counts(30, 9, 3)
    # a finding without a rank of its own takes its process's; the same rank adds up
    assert [(f.location, f.rank, f.count) for f in found] == [
        ("a.py:1", 0, 2),
        ("b.py:2", 5, 3),
        ("a.py:1", 1, 2),
        ("a.py:1", None, 2),
    ]


def test_the_environment_is_set_while_the_program_runs_then_restored() -> None:
    before = dict(os.environ)
    with _processes.followed("raise", {"select": frozenset({"KLG001"})}) as folder:
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == _processes.HOOK
        assert _processes.settings() == {
            "mode": "raise",
            "options": {"select": ["KLG001"]},
            "folder": folder,
        }
    assert dict(os.environ) == before and not os.path.exists(folder)


def python(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_hook_chains_to_the_sitecustomize_it_hides_and_leaves_no_trace(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['KLG_OTHER'] = 'ran'\n")
    probe = (
        "import os, sys\n"
        "print(os.environ.get('KLG_OTHER'), 'torch' in sys.modules,\n"
        "      any(p.endswith('_hook') for p in sys.path))\n"
    )
    settings = json.dumps({"mode": "warn", "options": {}, "folder": str(tmp_path)})
    path = os.pathsep.join([_processes.HOOK, str(other)])
    out = python(tmp_path, "-c", probe, env={"PYTHONPATH": path, _processes.ENV: settings})
    # the other hook ran; no torch imported; the hook's folder is off sys.path
    assert out.split() == ["ran", "False", "False"]
    assert os.listdir(tmp_path) == ["other"]  # no record from a process without torch


CHILD = """\
import torch
import torch.nn.functional as F
s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
"""

LAUNCHERS = {
    "subprocess": """\
import subprocess, sys
subprocess.run([sys.executable, "child.py"], check=True)
subprocess.run([sys.executable, "-c", "import sys; assert 'torch' not in sys.modules"], check=True)
""",
    "pool": """\
import multiprocessing as mp
import torch.nn.functional as F
import torch

def loss(seed):
    s = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed))
    return F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1)).item()  # misuse

if __name__ == "__main__":
    pool = mp.get_context("spawn").Pool(2)
    pool.map(loss, range(4))
    pool.close()
    pool.join()
""",
    "torch.multiprocessing.spawn": """\
import sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

def worker(rank, folder):
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2
    )
    s = torch.randn(8, 5)
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
""",
    "torchrun": """\
import torch
import torch.distributed as dist
import torch.nn.functional as F
dist.init_process_group("gloo")
s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
dist.destroy_process_group()
""",
}


def run_job(tmp_path: Path, mode: str, *program: str) -> tuple[int, str, dict[str, Any]]:
    done = run_subprocess(tmp_path, "--mode", mode, "--json", "r.json", *program)
    report = json.loads((tmp_path / "r.json").read_text())
    return done.returncode, done.stderr, report


def summary(stderr: str) -> list[str]:
    return stderr[stderr.index("kl_guard summary") :].splitlines()


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "status"), [("warn", 0), ("raise", 1)])
def test_a_subprocess_child_is_guarded(tmp_path: Path, mode: str, status: int) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "main.py").write_text(LAUNCHERS["subprocess"])
    code, stderr, report = run_job(tmp_path, mode, "main.py")
    assert code == status, stderr
    assert report["exit_status"] == status
    assert [(f["code"], f["location"]) for f in report["findings"]] == [("KLG001", "child.py:4")]
    assert [p["argv"] for p in report["processes"]] == [["main.py"], ["child.py"]]
    assert summary(stderr)[0].endswith(", in 2 processes")


@pytest.mark.slow
def test_a_spawned_pool_is_guarded(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(LAUNCHERS["pool"])
    code, stderr, report = run_job(tmp_path, "warn", "main.py")
    assert code == 0, stderr
    assert report["calls"]["seen"] == 4
    assert {(f["code"], f["location"]) for f in report["findings"]} == {("KLG001", "main.py:7")}


SPAWN = ["main.py", "{tmp}"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
CONSOLE_SCRIPT = ["torchrun", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "program", "mode", "status"),
    [
        ("torch.multiprocessing.spawn", SPAWN, "warn", 0),
        ("torch.multiprocessing.spawn", SPAWN, "raise", 1),
        ("torchrun", TORCHRUN, "warn", 0),
        ("torchrun", TORCHRUN, "raise", 1),
        ("torchrun", CONSOLE_SCRIPT, "raise", 1),
    ],
)
def test_ranks_are_guarded_and_labelled(
    tmp_path: Path, launcher: str, program: list[str], mode: str, status: int
) -> None:
    (tmp_path / "main.py").write_text(LAUNCHERS[launcher])
    argv = [arg.format(tmp=tmp_path) for arg in program]
    if launcher == "torchrun":
        argv.append("main.py")
    code, stderr, report = run_job(tmp_path, mode, *argv)
    assert code == status, stderr
    assert report["exit_status"] == status
    line = next(
        i for i, text in enumerate(LAUNCHERS[launcher].splitlines(), 1) if "# misuse" in text
    )
    assert sorted((f["location"], f["rank"]) for f in report["findings"]) == [
        (f"main.py:{line}", 0),
        (f"main.py:{line}", 1),
    ]
    assert sorted(p["rank"] for p in report["processes"] if p["rank"] is not None) == [0, 1]
    lines = summary(stderr)
    assert lines[0].endswith(", in 3 processes")
    for rank in (0, 1):
        assert any(
            text.strip().startswith(f"KLG001  main.py:{line} (rank {rank})") for text in lines
        )

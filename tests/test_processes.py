"""Child processes under ``python -m kl_guard run``: one summary, one JSON, one exit status.

Each launcher runs for real, on CPU (gloo), in a subprocess; the parts
(combining records, the start-up hook's chaining) are tested alone first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import run_subprocess
from kl_guard import _processes
from kl_guard._findings import Counts, Finding
from kl_guard._summary import process_lines


def finding(location: str, rank: int | None, count: int = 1) -> Finding:
    return Finding("KLG001", "s", "m", location=location, count=count, rank=rank)


def test_records_combine_per_location_code_and_rank(tmp_path: Path) -> None:
    for pid, rank in ((11, 0), (12, 1), (13, None)):
        found = [finding("a.py:1", None, 2), finding("b.py:2", 5)]
        process = _processes.Process(
            pid, rank, ("a.py",), Counts(10, 3, 1), tuple(found), name=str(pid)
        )
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
import sys
import torch.nn.functional as F
import torch

def loss(seed):
    s = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed))
    return F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1)).item()  # misuse

if __name__ == "__main__":
    with mp.get_context(sys.argv[1]).Pool(2) as pool:  # ends with terminate()
        pool.map(loss, range(4))
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
    dist.barrier()  # no rank leaves while the other still connects
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
dist.barrier()  # no rank leaves while the other still connects
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
    # main.py never imports torch: no record of its own, nothing it could have missed
    assert [p["argv"] for p in report["processes"]] == [["child.py"]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_pool_is_guarded_however_it_starts_its_workers(tmp_path: Path, method: str) -> None:
    (tmp_path / "main.py").write_text(LAUNCHERS["pool"])
    code, stderr, report = run_job(tmp_path, "warn", "main.py", method)
    assert code == 0, stderr
    # every call of every worker, though the with-block terminates them
    assert report["calls"]["seen"] == 4, stderr
    assert {(f["code"], f["location"]) for f in report["findings"]} == {("KLG001", "main.py:8")}
    assert all(p["complete"] for p in report["processes"]), report["processes"]
    workers = [p for p in report["processes"] if p["calls"]["seen"]]
    assert 1 <= len(workers) <= 2 and workers[0]["pid"] != report["processes"][0]["pid"]


FORK = """\
import os, sys
import torch
import torch.nn.functional as F
s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1), reduction="batchmean")
pid = os.fork()
if pid == 0:
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
    if sys.argv[1] == "_exit":
        os._exit(0)
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1), reduction="batchmean")
else:
    os.waitpid(pid, 0)
print("done", os.getpid())
"""


@pytest.mark.slow
@pytest.mark.parametrize(("end", "mode", "status"), [("end", "warn", 0), ("end", "raise", 1)])
def test_a_forked_child_counts_only_what_it_did_after_the_fork(
    tmp_path: Path, end: str, mode: str, status: int
) -> None:
    (tmp_path / "main.py").write_text(FORK)
    code, stderr, report = run_job(tmp_path, mode, "main.py", end)
    assert code == status, stderr
    # one summary: the child ran on to the program's end, then stopped without one
    assert stderr.count("kl_guard summary") == 1, stderr
    parent, child = report["processes"]
    assert parent["calls"]["seen"] == 1 and parent["findings"] == 0
    assert child["calls"]["seen"] == (1 if mode == "raise" else 2) and child["findings"] == 1
    assert child["complete"] and child["argv"] == ["main.py", end]
    assert [(f["location"], f["count"]) for f in report["findings"]] == [("main.py:8", 1)]


@pytest.mark.slow
def test_a_child_that_ends_by_os_exit_keeps_its_findings_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "main.py").write_text(FORK)
    code, stderr, report = run_job(tmp_path, "warn", "main.py", "_exit")
    assert code == 0, stderr
    child = report["processes"][1]
    assert not child["complete"] and child["findings"] == 1
    assert [f["location"] for f in report["findings"]] == ["main.py:8"]
    lines = summary(stderr)
    assert lines[0].endswith("in 2 processes (1 ended before writing its whole record)")
    assert "os._exit" in lines[2] and lines[2].startswith(f"  pid {child['pid']}: 1 finding")


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


TERMINATED = """\
import multiprocessing as mp, os, signal
import torch
import torch.nn.functional as F
from kl_guard import _processes, _runner

def work():
    s = torch.randn(8, 5)
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
    write = _processes.write

    def write_while_terminated(folder, process):
        if process.complete:  # Pool.terminate() while the worker writes its record
            os.kill(os.getpid(), signal.SIGTERM)
        write(folder, process)

    _processes.write = write_while_terminated

if __name__ == "__main__":
    child = mp.get_context("fork").Process(target=work)
    child.start()
    child.join()
    print("exit code", child.exitcode)
"""


@pytest.mark.slow
def test_a_sigterm_while_the_record_is_written_ends_the_process_after_it(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(TERMINATED)
    done = run_subprocess(tmp_path, "--json", "r.json", "main.py")
    report = json.loads((tmp_path / "r.json").read_text())
    assert f"exit code -{signal.SIGTERM.value}" in done.stdout, done.stderr
    child = report["processes"][1]
    assert child["complete"] and child["calls"]["seen"] == 1 and child["findings"] == 1


LOCKED = """\
import os, signal, threading
import torch
import torch.nn.functional as F
import kl_guard
from kl_guard import _lifecycle

kl_guard.install()
s = torch.randn(8, 5)
held, release = threading.Event(), threading.Event()

def hold():  # a thread in the middle of recording a finding when the process forks
    with _lifecycle._LAYERS.base.record._lock:
        held.set()
        release.wait()

threading.Thread(target=hold).start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a hung child ends
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse: recorded, no deadlock
    os._exit(0 if kl_guard.findings() else 3)
release.set()
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_a_lock_held_by_another_thread_at_a_fork_does_not_hang_the_child(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(LOCKED)
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "main.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "child 0", done.stderr


def process(pid: int, rank: int | None, seen: int, found: int = 0) -> _processes.Process:
    findings = tuple(finding("a.py:1", rank) for _ in range(found))
    return _processes.Process(pid, rank, ("a.py",), Counts(seen, seen), findings)


def test_the_summary_names_each_busy_process_and_counts_the_quiet_ones() -> None:
    processes = [
        process(10, 0, 5, 1),
        process(11, 0, 2),  # rank 0's DataLoader worker that made loss calls
        process(12, 1, 5),
        *(process(20 + i, 0, 0) for i in range(10)),  # other workers, no loss call
        dataclasses.replace(process(40, None, 0), complete=False),
        dataclasses.replace(process(41, None, 0), complete=False, running=True),  # a server
    ]
    lines = process_lines(processes)
    assert lines[:3] == [
        "rank 0 pid 10: 1 finding in 5 loss calls (5 checked from their tensors)",
        "rank 0 pid 11: no findings in 2 loss calls (2 checked from their tensors)",
        "rank 1: no findings in 5 loss calls (5 checked from their tensors)",
    ]
    assert lines[3].startswith("pid 40: ended before writing its whole record")
    assert lines[4].startswith("pid 41: still running when the program ended")
    quiet = ", ".join(f"rank 0 pid {20 + i}" for i in range(8))
    assert lines[5] == f"10 processes saw no loss call: {quiet}, ..."


@pytest.mark.slow
def test_a_runner_per_rank_labels_its_summary_and_writes_its_own_report(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(LAUNCHERS["torchrun"])
    done = subprocess.run(
        [sys.executable, *TORCHRUN, "-m", "kl_guard", "run", "--json", "r.json", "main.py"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        assert f"kl_guard summary (mode=warn, rank {rank} of 2): 1 finding" in done.stderr
        report = json.loads((tmp_path / f"r.rank{rank}.json").read_text())
        assert [(f["location"], f["rank"]) for f in report["findings"]] == [("main.py:6", rank)]
    assert done.stderr.count("sums up the whole job in one") == 1


UNWAITED = """\
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "child.py"])  # as Lightning's ddp starts rank 1: no wait
while not os.path.exists("trained"):  # the ranks train together; this one ends first
    time.sleep(0.05)
"""

SLOW_CHILD = """\
import time
import torch
import torch.nn.functional as F
s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
open("trained", "w").close()
time.sleep(3)  # still at work when the program that started it has ended
"""


@pytest.mark.slow
def test_the_runner_waits_for_a_child_its_program_did_not_wait_for(tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(SLOW_CHILD)
    (tmp_path / "main.py").write_text(UNWAITED)
    code, stderr, report = run_job(tmp_path, "warn", "main.py")
    assert code == 0, stderr
    [child] = report["processes"]
    assert child["complete"] and child["calls"]["seen"] == 1 and child["findings"] == 1
    assert "kl_guard: waiting up to 30 s for process" in stderr


def test_a_process_holds_its_lock_until_it_ends_however_it_ends(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kl_guard import _processes\n"
            "_processes.hold(sys.argv[1], 'r'); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert _processes.running(str(tmp_path), "r")
    holder.kill()  # SIGKILL: no exit handler runs, the system lets go of the lock
    holder.wait()
    holder.stdout.close()
    assert not _processes.running(str(tmp_path), "r")
    assert not _processes.running(str(tmp_path), "other")  # no lock file at all


def test_a_child_that_cannot_be_guarded_says_so_and_imports_torch(tmp_path: Path) -> None:
    settings = json.dumps({"mode": "warn", "options": {"check_every": 0}, "folder": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import torch; print(torch.ones(1).item())"],
        env={**os.environ, "PYTHONPATH": _processes.HOOK, _processes.ENV: settings},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "1.0\n", done.stderr
    assert re.search(r"^kl_guard: process \d+ is not guarded: .*check_every", done.stderr, re.M)


INHERITED = """\
import os
import torch
import torch.nn.functional as F

def misuse():
    s = torch.randn(8, 5)
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse

misuse()  # the parent first, then the child at the same line
pid = os.fork()
if pid == 0:
    misuse()
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.slow
def test_a_forked_child_keeps_a_finding_its_parent_had_before_the_fork(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(INHERITED)
    code, stderr, report = run_job(tmp_path, "warn", "main.py")
    assert code == 0, stderr
    parent, child = sorted(report["processes"], key=lambda p: p["complete"], reverse=True)
    assert parent["findings"] == 1 and child["findings"] == 1 and not child["complete"]
    assert [(f["location"], f["count"]) for f in report["findings"]] == [("main.py:7", 2)]


EXECS = """\
import os, sys
import torch
import torch.nn.functional as F
s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
os.execv(sys.executable, [sys.executable, "-c", "import torch"])  # the same pid
"""


@pytest.mark.slow
def test_a_program_that_execs_keeps_its_record(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(EXECS)
    code, stderr, report = run_job(tmp_path, "warn", "main.py")
    assert code == 0, stderr
    assert [(f["location"], f["count"]) for f in report["findings"]] == [("main.py:5", 1)]
    assert len({p["pid"] for p in report["processes"]}) == 1 < len(report["processes"])


HELD = """\
import os, signal, time
import torch
import torch.nn.functional as F
from kl_guard import _lifecycle

s = torch.randn(8, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse
record = _lifecycle._LAYERS.guards[0].record
with record._lock:  # the SIGTERM comes while this thread records a finding
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_sigterm_while_a_lock_is_held_still_ends_the_process_with_its_record(
    tmp_path: Path,
) -> None:
    (tmp_path / "main.py").write_text(HELD)
    code, stderr, report = run_job(tmp_path, "warn", "main.py")
    assert code == 128 + signal.SIGTERM, stderr
    [program] = report["processes"]
    assert program["complete"] and program["findings"] == 1


def test_records_written_at_once_by_two_threads_stay_whole(tmp_path: Path) -> None:
    process = _processes.Process(1, None, ("a.py",), Counts(1, 1), (), name="1-a")

    def write_often() -> None:
        for _ in range(200):
            _processes.write(str(tmp_path), process)

    threads = [threading.Thread(target=write_often) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _processes.collect(str(tmp_path)) == [process]
    assert os.listdir(tmp_path) == ["1-a.json"]  # no temporary file left


def test_a_process_keeps_its_rank_past_destroy_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch asks a program to end its group; the record still names the rank it had
    import socket

    import torch.distributed as dist

    from kl_guard import _child, _lifecycle

    monkeypatch.delenv("RANK", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    part = _child.Part(_lifecycle.Guard(), str(tmp_path))
    assert part.rank_now([]) is None
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        assert part.rank_now([]) == 0
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized() and part.rank_now([]) == 0
    if part.lock is not None:
        os.close(part.lock)


SIGTERM_AT_BIRTH = """\
import os, signal, sys, time
import torch  # the run guards a process once it imports torch

lived = 0
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        time.sleep(0.5)
        os._exit(7)
    os.kill(pid, signal.SIGTERM)  # at once: the child may not run Python yet
    _, status = os.waitpid(pid, 0)
    lived += os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
sys.exit(lived)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_sigterm_sent_right_after_a_fork_ends_the_child(tmp_path: Path) -> None:
    """kl_guard's SIGTERM handler is Python's, and a child's Python drops the signals
    that arrive before it has reset their state: without SIGTERM held over the fork,
    195 of 200 such children lived on (a Pool.terminate() then hangs on its join)."""
    (tmp_path / "main.py").write_text(SIGTERM_AT_BIRTH)
    code, stderr, _ = run_job(tmp_path, "warn", "main.py")
    assert code == 0, stderr  # how many children outlived their SIGTERM

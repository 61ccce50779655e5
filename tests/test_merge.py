"""``python -m kl_guard merge``: a multi-node job's reports as one summary, JSON and status.

The parts first, on reports written by hand; then a real job: two ``torchrun --nnodes 2``
on this machine (a localhost rendezvous, one rank each), each under its own runner, merged,
against the same job run on one node.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kl_guard._cli import main
from kl_guard._merge import merge as merge_reports
from kl_guard._runner import JSON_VERSION


def process(pid: int, rank: int | None, seen: int, findings: int = 0) -> dict[str, Any]:
    return {
        "pid": pid,
        "rank": rank,
        "argv": ["train.py"],
        "calls": {"seen": seen, "checked": seen, "traced": 0},
        "findings": findings,
        "complete": True,
        "running": False,
    }


def finding(rank: int | None, location: str = "train.py:9", count: int = 3) -> dict[str, Any]:
    return {
        "code": "KLG001",
        "summary": "kl_div reduction 'mean' is not the KL divergence per sample",
        "message": "KLG001: ...",
        "location": location,
        "count": count,
        "rank": rank,
    }


def report(path: Path, *ranks: int, status: int = 0, mode: str = "warn") -> str:
    """A node's report: a launcher, and one process per rank; odd ranks found KLG001."""
    processes = [process(100, None, 0)] + [
        process(200 + rank, rank, 10 + rank, rank % 2) for rank in ranks
    ]
    seen = sum(p["calls"]["seen"] for p in processes)
    data = {
        "version": JSON_VERSION,
        "mode": mode,
        "findings": [finding(rank) for rank in ranks if rank % 2],
        "calls": {"seen": seen, "checked": seen, "traced": 0},
        "processes": processes,
        "exit_status": status,
    }
    path.write_text(json.dumps(data))
    return str(path)


def merge(*paths: str, json_path: Path | None = None) -> tuple[int, str]:
    """``merge``'s exit status and what it said."""
    stream = io.StringIO()
    status = merge_reports(paths, None if json_path is None else str(json_path), stream)
    return status, stream.getvalue()


def test_two_nodes_make_one_summary_by_global_rank(tmp_path: Path) -> None:
    a, b = report(tmp_path / "a.json", 0, 1), report(tmp_path / "b.json", 2, 3)
    status, said = merge(a, b, json_path=tmp_path / "job.json")
    assert status == 0
    lines = said.splitlines()
    assert lines[0] == (
        "kl_guard summary (mode=warn, 2 reports merged): 2 findings in 46 loss calls "
        "(46 checked from their tensors), in 6 processes"
    )
    assert lines[1:5] == [
        "  rank 0: no findings in 10 loss calls (10 checked from their tensors)",
        "  rank 1: 1 finding in 11 loss calls (11 checked from their tensors)",
        "  rank 2: no findings in 12 loss calls (12 checked from their tensors)",
        "  rank 3: 1 finding in 13 loss calls (13 checked from their tensors)",
    ]
    assert "train.py:9 (rank 1)" in said and "train.py:9 (rank 3)" in said
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["calls"] == {"seen": 46, "checked": 46, "traced": 0}
    assert [(f["rank"], f["count"]) for f in job["findings"]] == [(1, 3), (3, 3)]
    assert [p["rank"] for p in job["processes"]] == [0, 1, 2, 3, None, None]
    assert job["exit_status"] == 0 and job["mode"] == "warn"


def test_the_job_fails_with_the_first_failing_node(tmp_path: Path) -> None:
    a = report(tmp_path / "a.json", 0, status=0)
    b = report(tmp_path / "b.json", 1, status=1, mode="raise")
    c = report(tmp_path / "c.json", 2, status=137)
    status, said = merge(a, b, c)
    assert status == 1
    assert said.startswith("kl_guard summary (mode=mixed, 3 reports merged)")
    assert f"note: {b} ended with exit status 1" in said
    assert f"note: {c} ended with exit status 137" in said
    assert "note: the nodes ran in different modes (raise, warn)" in said


def test_a_rank_in_two_reports_is_said(tmp_path: Path) -> None:
    a, b = report(tmp_path / "a.json", 0, 1), report(tmp_path / "b.json", 1)
    status, said = merge(a, b)
    assert status == 0
    assert f"rank 1 is in {a} and in {b}" in said


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "Expecting"),
        ("[]", "not a report of `python -m kl_guard run --json`"),
        ('{"version": 99}', "report version 99; this kl_guard reads version 1"),
        ('{"version": 1, "mode": "warn"}', "a field is missing or malformed"),
    ],
)
def test_a_report_that_cannot_be_read_is_exit_status_2(
    tmp_path: Path, text: str, reason: str
) -> None:
    good, bad = report(tmp_path / "a.json", 0), tmp_path / "b.json"
    bad.write_text(text)
    status, said = merge(good, str(bad))
    assert status == 2 and said.startswith(f"kl_guard merge: {bad}: ") and reason in said


def test_a_missing_report_or_one_named_twice_is_exit_status_2(tmp_path: Path) -> None:
    a = report(tmp_path / "a.json", 0)
    assert merge(a, str(tmp_path / "none.json"))[0] == 2
    status, said = merge(a, str(tmp_path / "." / "a.json"))
    assert status == 2 and "named twice" in said
    b = report(tmp_path / "b.json", 1)
    status, said = merge(a, b, json_path=Path(b))
    assert status == 2 and "would overwrite a report" in said


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = report(tmp_path / "a.json", 0), report(tmp_path / "b.json", 1, status=3)
    assert main(["merge", "--json", str(tmp_path / "job.json"), a, b]) == 3
    assert "2 reports merged" in capsys.readouterr().err
    assert json.loads((tmp_path / "job.json").read_text())["exit_status"] == 3


JOB = """\
import os
import torch
import torch.distributed as dist
import torch.nn.functional as F

dist.init_process_group("gloo")
rank = dist.get_rank()
s = torch.randn(8, 5)
for _ in range(rank + 1):  # each rank its own number of calls
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1), reduction="batchmean")
if rank % 2:
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # misuse, on the second node's rank
dist.barrier()
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runner(cwd: Path, report: str, *torchrun: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kl_guard", "run", "--check-every", "1", "--json", report]
        + ["-m", "torch.distributed.run", *torchrun]
        + ["job.py"],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(program: subprocess.Popen[str]) -> str:
    _, stderr = program.communicate(timeout=180)
    assert program.returncode == 0, stderr
    return stderr


def by_rank(job: dict[str, Any]) -> dict[int, Any]:
    return {p["rank"]: p["calls"] for p in job["processes"] if p["rank"] is not None}


def findings(job: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    return sorted((f["location"], f["code"], f["rank"], f["count"]) for f in job["findings"])


@pytest.mark.slow
def test_two_torchrun_nodes_merge_as_one_node_ran_the_job(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(JOB)
    port = str(free_port())
    nodes = [
        runner(
            tmp_path,
            f"node{n}.json",
            *("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(n)),
            *("--master_addr", "127.0.0.1", "--master_port", port),
        )
        for n in (0, 1)
    ]
    try:
        said_by_node = [finished(node) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
            node.communicate()
    assert "kl_guard summary (mode=warn): no findings in 1 loss call " in said_by_node[0]
    assert "kl_guard summary (mode=warn): 1 finding in 3 loss calls " in said_by_node[1]
    reports = [str(tmp_path / f"node{n}.json") for n in (0, 1)]
    status, said = merge(*reports, json_path=tmp_path / "job.json")
    assert status == 0, said
    assert "rank 1: 1 finding in 3 loss calls" in said and "note:" not in said
    finished(runner(tmp_path, "one.json", "--standalone", "--nproc_per_node", "2"))
    one = json.loads((tmp_path / "one.json").read_text())
    job = json.loads((tmp_path / "job.json").read_text())
    assert (
        by_rank(job)
        == by_rank(one)
        == {r: {"seen": r + 1 + r % 2, "checked": r + 1 + r % 2, "traced": 0} for r in range(2)}
    )
    assert findings(job) == findings(one)
    assert [f[2] for f in findings(job)] == [1]
    assert job["calls"] == one["calls"]

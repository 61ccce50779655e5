"""Reporting: suppression comments, merging records and the summary table."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import kl_guard
from kl_guard import Finding
from kl_guard._reporting import Record
from kl_guard._summary import summary_lines

TRAIN = """\
import torch
import torch.nn.functional as F

s, t = torch.randn(4, 5), torch.randn(4, 5)
F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1)){comment}
"""


@pytest.mark.parametrize(
    ("comment", "codes"),
    [
        ("", ["KLG001"]),
        ("  # kl_guard: ignore[KLG001]", []),
        ("  # kl_guard: ignore", []),
        ("  # kl_guard: ignore[KLG003]", ["KLG001"]),
    ],
)
def test_a_comment_on_the_calling_line_silences_its_codes(
    tmp_path: Path, comment: str, codes: list[str]
) -> None:
    path = tmp_path / "train.py"
    path.write_text(TRAIN.format(comment=comment))
    kl_guard.install(mode="log", check_every=1)
    runpy.run_path(str(path))
    assert [f.code for f in kl_guard.findings()] == codes


def finding(code: str, location: str, count: int = 1) -> Finding:
    return Finding(code, f"{code} cause", f"{code}: message", location, count)


def test_record_counts_fresh_findings_and_merges_aggregated_ones() -> None:
    record = Record()
    assert record.add(finding("KLG001", "a.py:1"))
    assert not record.add(finding("KLG001", "a.py:1"))
    # Another process's record, already aggregated, adds its whole count.
    assert not record.add(finding("KLG001", "a.py:1", count=5))
    assert record.add(finding("KLG003", "a.py:1", count=2))
    assert [(f.code, f.count) for f in record.findings()] == [("KLG001", 7), ("KLG003", 2)]


def test_summary_lines_align_the_columns() -> None:
    lines = summary_lines([finding("KLG001", "train.py:13", 14), finding("KLG003", "x.py:2")])
    assert lines == [
        "code    location     count  cause",
        "KLG001  train.py:13     14  KLG001 cause",
        "KLG003  x.py:2           1  KLG003 cause",
    ]

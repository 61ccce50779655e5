"""Findings and counts as plain data and back, and findings merged per (location, code, rank)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kl_guard import _processes
from kl_guard._findings import (
    Counts,
    Finding,
    counts_from_dict,
    finding_from_dict,
    merged,
    tally,
    to_dict,
)

FINDING = Finding("KLG003", "input looks like probabilities", "KLG003: ...", "a.py:3", 4, 1)


def finding(
    location: str, code: str = "KLG001", count: int = 1, rank: int | None = None
) -> Finding:
    return Finding(code, f"{code} cause", f"{code} at {location}", location, count, rank)


@pytest.mark.parametrize("value", [FINDING, Finding("KLG001", "s", "m"), Counts(10, 3, 1)])
def test_a_finding_or_counts_come_back_from_json_as_they_were(value: Finding | Counts) -> None:
    back = json.loads(json.dumps(to_dict(value)))
    assert (finding_from_dict if isinstance(value, Finding) else counts_from_dict)(back) == value


def test_the_fields_keep_their_names_and_order() -> None:
    # the runner's JSON report is a public format (README): its keys are these
    assert list(to_dict(FINDING)) == ["code", "summary", "message", "location", "count", "rank"]
    assert to_dict(Counts(10, 3, 1)) == {"seen": 10, "checked": 3, "traced": 1}


def test_a_field_left_out_takes_its_default() -> None:
    # a record written before ``location``, ``count`` or ``rank`` existed
    assert finding_from_dict({"code": "KLG001", "summary": "s", "message": "m"}) == Finding(
        "KLG001", "s", "m", location="", count=1, rank=None
    )
    assert counts_from_dict({"seen": 2}) == Counts(2, 0, 0)


@pytest.mark.parametrize(
    ("fields", "read"),
    [
        ({**to_dict(FINDING), "severity": "high"}, finding_from_dict),
        ({"code": "KLG001", "summary": "s"}, finding_from_dict),  # no message
        ({"seen": 1, "skipped": 2}, counts_from_dict),
    ],
)
def test_an_unknown_or_missing_field_is_a_type_error(fields: dict[str, Any], read: Any) -> None:
    with pytest.raises(TypeError):
        read(fields)


def test_a_record_of_an_unknown_shape_is_left_out_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _processes.Process(1, None, ("a.py",), Counts(1, 1), (FINDING,), name="1-a")
    _processes.write(str(tmp_path), good)
    record = json.loads((tmp_path / "1-a.json").read_text())
    record["findings"][0]["severity"] = "high"
    (tmp_path / "2-b.json").write_text(json.dumps(record))
    assert _processes.collect(str(tmp_path)) == [good]
    assert "the record 2-b.json could not be read: TypeError" in capsys.readouterr().err


def test_merged_adds_the_counts_of_the_same_location_code_and_rank() -> None:
    first = finding("a.py:1", count=2)
    found = merged(
        [
            first,
            finding("b.py:2"),
            finding("a.py:1", count=3),
            finding("a.py:1", "KLG003"),
            finding("a.py:1", rank=0),
            finding("b.py:2", count=4),
        ]
    )
    assert [(f.location, f.code, f.rank, f.count) for f in found] == [
        ("a.py:1", "KLG001", None, 5),
        ("b.py:2", "KLG001", None, 5),
        ("a.py:1", "KLG003", None, 1),
        ("a.py:1", "KLG001", 0, 1),
    ]
    assert found[0].message == first.message  # the first one's text stays
    assert merged([]) == []


def test_tally_says_which_finding_is_the_first_at_its_key() -> None:
    table: dict[str, Finding] = {}
    assert tally(table, "k", finding("a.py:1"))
    assert not tally(table, "k", finding("a.py:9", count=6))  # the key decides, not the finding
    assert table == {"k": finding("a.py:1", count=7)}

"""The linter's output formats: text lines, JSON, SARIF 2.1.0 (schema-checked), annotations."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import kl_guard
from kl_guard._lint._command import LintOptions, run

SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
SOURCE = """\
import torch.nn as nn
import torch.nn.functional as F

crit = nn.KLDivLoss()
loss = F.kl_div(F.softmax(s, dim=1), t, reduction="sum")
"""


def _lint(tmp_path: Path, output_format: str, source: str = SOURCE) -> tuple[int, str]:
    (tmp_path / "train.py").write_text(source)
    out = io.StringIO()
    options = LintOptions(paths=("train.py",), output_format=output_format)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        status = run(options, stdout=out, stderr=io.StringIO())
    return status, out.getvalue()


def test_text(tmp_path: Path) -> None:
    status, text = _lint(tmp_path, "text")
    assert status == 1
    assert text.splitlines() == [
        "train.py:4:8: KLG001 kl_div reduction 'mean' is not the KL divergence per sample: "
        "the module's reduction is 'mean' (nn.KLDivLoss's default)",
        '  fix: nn.KLDivLoss(reduction="batchmean"); drop any * num_classes that made up for '
        "'mean' [--fix --unsafe-fixes]",
        "train.py:5:8: KLG003 input to kl_div looks like probabilities (softmax output?), "
        "not log-probabilities",
        '  fix: F.kl_div(F.log_softmax(s, dim=1), t, reduction="sum") [--fix]',
        "Found 2 findings (1 fixable with --fix, 1 with --fix --unsafe-fixes).",
    ]


def test_text_when_clean(tmp_path: Path) -> None:
    assert _lint(tmp_path, "text", "x = 1\n") == (0, "All checks passed.\n")


def test_json(tmp_path: Path) -> None:
    _, text = _lint(tmp_path, "json")
    log = json.loads(text)
    assert log["version"] == 1
    first, second = log["findings"]
    assert first == {
        "code": "KLG001",
        "path": "train.py",
        "cell": None,
        "line": 4,
        "column": 8,
        "message": "kl_div reduction 'mean' is not the KL divergence per sample: "
        "the module's reduction is 'mean' (nn.KLDivLoss's default)",
        "fix": 'nn.KLDivLoss(reduction="batchmean"); drop any * num_classes that made up for '
        "'mean'",
        "fixable": "unsafe",
    }
    assert (second["code"], second["fixable"]) == ("KLG003", "safe")


def _sarif(tmp_path: Path, source: str = SOURCE) -> dict[str, Any]:
    _, text = _lint(tmp_path, "sarif", source)
    log: dict[str, Any] = json.loads(text)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema).validate(log)
    return log


def test_sarif_is_valid_sarif_2_1_0(tmp_path: Path) -> None:
    log = _sarif(tmp_path)
    (run_,) = log["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(kl_guard.CODES)
    first = run_["results"][0]
    assert first["ruleId"] == "KLG001"
    assert rules[first["ruleIndex"]]["id"] == "KLG001"
    location = first["locations"][0]["physicalLocation"]
    assert location == {
        "artifactLocation": {"uri": "train.py"},
        "region": {"startLine": 4, "startColumn": 8},
    }


def test_sarif_without_findings_is_valid(tmp_path: Path) -> None:
    assert _sarif(tmp_path, "x = 1\n")["runs"][0]["results"] == []


def test_github_annotations(tmp_path: Path) -> None:
    _, text = _lint(tmp_path, "github")
    first, second = text.splitlines()
    assert first == (
        "::warning file=train.py,line=4,col=8,title=KLG001::kl_div reduction 'mean' is not "
        "the KL divergence per sample: the module's reduction is 'mean' (nn.KLDivLoss's "
        'default) (fix: nn.KLDivLoss(reduction="batchmean"); drop any * num_classes that made '
        "up for 'mean')"
    )
    assert second.startswith("::warning file=train.py,line=5,col=8,title=KLG003::")


def test_github_escapes_what_would_end_a_field(tmp_path: Path) -> None:
    (tmp_path / "a,b:c%.py").write_text(SOURCE)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        run(LintOptions(paths=("a,b:c%.py",), output_format="github"), stdout=out)
    assert out.getvalue().startswith("::warning file=a%2Cb%3Ac%25.py,line=4,")

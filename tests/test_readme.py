"""The README's examples run, in order, as a reader would paste them, and say what they show."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import kl_guard

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    """The README's code blocks in ``language``; Python's without those that need a framework
    (tests/frameworks/test_trainer_callbacks.py runs the callbacks)."""
    found = re.findall(rf"^```{language}\n(.*?)^```$", README, flags=re.MULTILINE | re.DOTALL)
    return [b for b in found if not re.match(r"from kl_guard\.(lightning|transformers) ", b)]


def test_the_python_examples_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for source in blocks("python"):
            exec(compile(source, "README.md", "exec"), namespace)
            kl_guard.uninstall()
    warned = {w.category for w in record if issubclass(w.category, kl_guard.KLGuardWarning)}
    assert warned == {kl_guard.KLG001Warning}  # the training loop's 'mean'; the rest logs
    # each print's comment says what it prints
    printed = capsys.readouterr().out.splitlines()
    said = [m for b in blocks("python") for m in re.findall(r"print\(.*\)  # (.*)", b)]
    assert printed == said


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    [commands] = [b for b in blocks("bash") if "kl_guard demo" in b]
    demo, tests = commands.strip().splitlines()
    assert demo.endswith("&& .venv/bin/python -m kl_guard demo")
    assert tests.endswith("&& .venv/bin/python -m pytest -n auto")
    ci = (ROOT / ".ci" / "run").read_text()
    assert '"$venv/bin/python" -m kl_guard demo' in ci
    assert '"$venv/bin/python" -m pytest -n auto' in ci

"""Suppression comments: which codes a line silences."""

from __future__ import annotations

from pathlib import Path

import pytest

from kl_guard._suppression import ALL_CODES, is_suppressed, suppressed_codes


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("loss = F.kl_div(a, b)", frozenset()),
        ("loss = F.kl_div(a, b)  # kl_guard: ignore[KLG001]", frozenset({"KLG001"})),
        ("x  # kl_guard: ignore[klg001, KLG008]", frozenset({"KLG001", "KLG008"})),
        ("x  # kl_guard: ignore", ALL_CODES),
        ("x  # noqa: E501  # kl_guard: ignore[KLG003]", frozenset({"KLG003"})),
        ("x  # kl_guard: ignore[KLG999]", frozenset()),
        ("x  # kl_guard is great", frozenset()),
        ("kl_guard: ignore[KLG001]", frozenset()),  # not a comment
    ],
)
def test_suppressed_codes(line: str, expected: frozenset[str]) -> None:
    assert suppressed_codes(line) == expected


def test_is_suppressed_reads_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("a = 1\nb = 2  # kl_guard: ignore[KLG002]\n")
    assert is_suppressed(str(path), 2, "KLG002")
    assert not is_suppressed(str(path), 2, "KLG001")
    assert not is_suppressed(str(path), 1, "KLG002")
    assert not is_suppressed(str(path), 99, "KLG002")

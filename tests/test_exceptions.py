"""kl_guard's warning categories and error: one category per code under
``KLGuardWarning``, and a ``KLGuardError`` that holds its findings and pickles
with them."""

from __future__ import annotations

import pickle

import kl_guard
from kl_guard._codes import ALL
from kl_guard._exceptions import WARNING_CATEGORIES


def finding(code: str = "KLG003") -> kl_guard.Finding:
    return kl_guard.Finding(code, "headline", f"{code}: headline\n  at: x.py:3", "x.py:3", count=2)


def test_error_pickles_with_its_findings() -> None:
    error = kl_guard.KLGuardError([finding(), finding("KLG004")])
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is kl_guard.KLGuardError
    assert clone.findings == error.findings
    assert str(clone) == str(error)
    assert isinstance(clone, ValueError)


def test_error_message_holds_every_diagnosis() -> None:
    error = kl_guard.KLGuardError([finding(), finding("KLG004")])
    assert str(error) == "KLG003: headline\n  at: x.py:3\n\nKLG004: headline\n  at: x.py:3"


def test_one_warning_category_per_code() -> None:
    # the runtime's codes: the lint-only ones are never warned
    assert set(WARNING_CATEGORIES) == {c.code for c in ALL if c.runtime}
    for code, category in WARNING_CATEGORIES.items():
        assert issubclass(category, kl_guard.KLGuardWarning)
        assert issubclass(category, UserWarning)
        assert category.__name__ == f"{code}Warning"
        assert getattr(kl_guard, category.__name__) is category

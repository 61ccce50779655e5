from __future__ import annotations

import pickle
import warnings

import kl_guard
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
    assert set(WARNING_CATEGORIES) == set(kl_guard.CODES)
    for code, category in WARNING_CATEGORIES.items():
        assert issubclass(category, kl_guard.KLGuardWarning)
        assert issubclass(category, UserWarning)
        assert category.__name__ == f"{code}Warning"
        assert getattr(kl_guard, category.__name__) is category


def test_warning_categories_are_filterable_by_name() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=kl_guard.KLG001Warning)
        warnings.warn("a", kl_guard.KLG001Warning, stacklevel=1)
        warnings.warn("b", kl_guard.KLG002Warning, stacklevel=1)
    assert [str(w.message) for w in record] == ["b"]


def test_public_names_claim_the_package() -> None:
    for name in kl_guard.__all__:
        obj = getattr(kl_guard, name)
        if hasattr(obj, "__module__") and not isinstance(obj, dict):
            assert obj.__module__ == "kl_guard", name

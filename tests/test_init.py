"""The package's front: public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kl_guard


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, where nothing is imported yet; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_version_and_the_torch_free_names_import_no_torch() -> None:
    out = run_python(
        "import sys, kl_guard\n"
        "from kl_guard import CODES, Config, KLGuardError, Mode\n"
        "print(kl_guard.__version__)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert out == f"{kl_guard.__version__}\n"


def test_a_name_that_needs_torch_is_imported_on_first_use() -> None:
    run_python(
        "import sys, kl_guard\n"
        "install = kl_guard.install\n"
        "assert 'torch' in sys.modules\n"
        "assert install.__module__ == 'kl_guard', install.__module__\n"
        "assert vars(kl_guard)['install'] is install\n"
    )


def test_dir_lists_every_public_name_before_it_is_imported() -> None:
    """The names that need torch are listed (tab completion) before first use,
    and listing them imports nothing."""
    run_python(
        "import sys, kl_guard\n"
        "missing = set(kl_guard.__all__) - set(dir(kl_guard))\n"
        "assert not missing, missing\n"
        "assert 'install' not in vars(kl_guard), 'install was imported'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )


def test_public_names_claim_the_package() -> None:
    for name in kl_guard.__all__:
        obj = getattr(kl_guard, name)
        if hasattr(obj, "__module__") and not isinstance(obj, dict):
            assert obj.__module__ == "kl_guard", name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'kl_guard' has no attribute 'instal'"):
        kl_guard.instal  # type: ignore[attr-defined]  # noqa: B018

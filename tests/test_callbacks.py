"""The framework callbacks' shared part (``_callbacks.Watch``), without a framework; the
callbacks themselves run in tests/frameworks/test_trainer_callbacks.py.
"""

from __future__ import annotations

import importlib
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from kl_guard import _compat
from kl_guard._callbacks import Watch, as_markdown, summary_metrics
from kl_guard._findings import Counts, Finding


def misuse() -> None:
    s = torch.randn(8, 5)
    F.kl_div(F.log_softmax(s, 1), F.softmax(s, 1))  # KLG001


def test_a_bad_option_fails_where_the_callback_is_built() -> None:
    with pytest.raises(ValueError, match="check_every"):
        Watch("warn", None, {"check_every": 0})


def test_each_finding_is_new_once_and_the_loggers_are_told_once() -> None:
    watch = Watch("log", None, {"check_every": 1})
    watch.start()
    try:
        for _ in range(3):
            misuse()
        first = watch.new_here()
        assert [f.code for f in first] == ["KLG001"]
        misuse()
        assert watch.new_here() == []  # the same call site again: nothing new
    finally:
        watch.stop()
    metrics, fresh = watch.tell(first)
    assert metrics == {"kl_guard/KLG001": 1.0} and fresh == first
    # a rank's finding at the same line is another call site; one already told is not
    other = Finding("KLG001", "s", "m", location=first[0].location, rank=1)
    metrics, fresh = watch.tell([*first, other])
    assert metrics == {"kl_guard/KLG001": 2.0} and fresh == [other]
    assert watch.tell([other]) == ({}, [])


def test_finish_sums_up_this_process_alone_without_a_process_group() -> None:
    watch = Watch("log", None, {"check_every": 1})
    watch.start()
    misuse()
    found, counts, lines = watch.finish("fit", 1)
    assert not kl_guard.is_active()
    assert [f.code for f in found] == ["KLG001"] and counts == Counts(1, 1, 0)
    assert lines[0] == (
        "kl_guard summary (mode=log, fit): 1 finding in 1 loss call (1 checked from their tensors)"
    )
    assert "KLG001" in lines[2]
    assert summary_metrics(found, counts) == {
        "kl_guard/loss_calls": 1.0,
        "kl_guard/checked": 1.0,
        "kl_guard/findings": 1.0,
    }
    assert watch.share(found, 1) == found  # one rank: its own


def test_codes_given_as_an_iterator_hold_for_every_start() -> None:
    watch = Watch("log", None, {"select": (c for c in ["KLG001"]), "check_every": 1})
    for _ in range(2):  # a fit, then a validate
        watch.start()
        misuse()
        assert [f.code for f in watch.finish("fit", 1)[0]] == ["KLG001"]


def test_a_guard_left_running_by_a_failed_fit_is_stopped_at_the_next_start() -> None:
    watch = Watch("raise", None, {})
    watch.start()
    with pytest.raises(kl_guard.KLGuardError):
        misuse()  # the fit ends here; no stop
    watch.start()
    watch.stop()
    assert not kl_guard.is_active()


def test_a_watch_pickles_its_settings_only() -> None:
    # Lightning's ddp_spawn pickles the callbacks into each rank, also after a fit
    watch = Watch("warn", None, {"check_every": 1})
    watch.start()
    watch.stop()
    copy = pickle.loads(pickle.dumps(watch))
    assert copy.guard is None and copy._settings == watch._settings


def test_text_is_a_code_block_for_tensorboard() -> None:
    assert as_markdown(["a\n  b", "c"]) == "    a\n      b\n    c"


class Handler:
    def __init__(self) -> None:
        self.found: object = None

    def call(self) -> None:
        self.found = event()


def event() -> Handler | None:
    return _compat.calling_instance(Handler)  # called by the handler's method: depth 2


def test_a_callback_finds_the_object_that_calls_it() -> None:
    handler = Handler()
    handler.call()
    assert handler.found is handler
    assert event() is None  # called by no Handler


@pytest.mark.parametrize(
    ("module", "framework"), [("lightning", "Lightning"), ("transformers", "transformers")]
)
def test_without_its_framework_a_callback_module_says_what_to_install(
    module: str, framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (module, "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, installed or not
    monkeypatch.delitem(sys.modules, f"kl_guard.{module}", raising=False)
    with pytest.raises(ImportError, match=f"kl_guard.{module} needs {framework}: pip install"):
        importlib.import_module(f"kl_guard.{module}")

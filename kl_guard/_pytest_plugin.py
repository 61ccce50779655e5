"""pytest plugin: every test under ``kl_guard.guard()`` with ``--kl-guard=raise``.

Registered through the ``pytest11`` entry point, so installing kl_guard is
enough; it does nothing unless asked. The mode comes from ``--kl-guard``, else
the ini option ``kl_guard``, else ``KL_GUARD_MODE``, else ``off``. Whatever
the mode, ``@pytest.mark.kl_guard(mode=..., **options)`` guards one test (or a
module, through ``pytestmark``) and the ``kl_guard`` fixture hands a test the
guard it runs under.

Off, it costs a pytest run nothing: this module imports only the standard
library, pytest and the torch-free part of kl_guard; torch comes with the
first ``kl_guard.Guard``, when the plugin is on, a test is marked or the
fixture is used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import kl_guard
from kl_guard._config import ENV_MODE, Mode, parse_mode
from kl_guard._findings import Counts, Finding, counts_from_dict, finding_from_dict, merged, to_dict

if TYPE_CHECKING:
    from kl_guard import Guard

_CHOICES = (Mode.OFF, Mode.WARN, Mode.RAISE)
_INI = "kl_guard"
_WORKER_OUTPUT = "kl_guard_findings"
_WORKER_COUNTS = "kl_guard_counts"


@dataclasses.dataclass
class _Session:
    mode: Mode
    source: str | None  # where the mode came from; None: the default
    # While the plugin is on, a layer that reports nothing keeps the patch in
    # place from before the first conftest is imported until the end, so a
    # ``from torch.nn.functional import kl_div`` at import time binds the
    # wrapper; its record gathers the findings of every test for the summary.
    layer: Guard | None
    # Findings sent back by pytest-xdist workers; None with the layer: workers
    # of a session that is off send none.
    workers: list[Finding] | None
    worker_counts: Counts = Counts()


_SESSION = pytest.StashKey[_Session]()
_ITEM_GUARD = pytest.StashKey["Guard"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kl_guard", "kl_guard: catch misuse of KL divergence")
    group.addoption(
        "--kl-guard",
        dest="kl_guard",
        choices=[mode.value for mode in _CHOICES],
        metavar="MODE",
        help="run every test under kl_guard.guard(mode=MODE): off, warn or raise "
        f"(default: the ini option {_INI}, else ${ENV_MODE}, else off)",
    )
    parser.addini(_INI, "kl_guard mode for every test: off, warn or raise (--kl-guard wins)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before any conftest is imported; the full command line is not parsed yet.
    _begin(early_config, early_config.known_args_namespace.kl_guard)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kl_guard(mode=None, **options): run the test under kl_guard.guard(mode, **options)",
    )
    if _SESSION not in config.stash:  # registered too late for the early hook
        _begin(config, config.getoption("kl_guard"))


def _begin(config: pytest.Config, option: str | None) -> None:
    mode, source = _resolve(config, option)
    layer: Guard | None = None
    workers: list[Finding] | None = None
    if mode is not Mode.OFF:
        layer = kl_guard.Guard(Mode.OFF)
        layer.start()
        # A cleanup, unlike pytest_unconfigure, also runs when the command
        # line fails to parse after this point.
        config.add_cleanup(layer.stop)
        workers = []
    config.stash[_SESSION] = _Session(mode, source, layer, workers)


def _resolve(config: pytest.Config, option: str | None) -> tuple[Mode, str | None]:
    """The mode and its source: the command line, then the ini file, then the environment."""
    if option:
        return Mode(option), "--kl-guard"
    # The environment variable is shared with training runs, where "log" is a
    # fine mode: the plugin takes it too (findings go to the kl_guard logger).
    sources = (
        (config.getini(_INI), f"ini option {_INI}", _CHOICES),
        (os.environ.get(ENV_MODE), ENV_MODE, tuple(Mode)),
    )
    for value, source, choices in sources:
        if value and value.strip():
            try:
                return parse_mode(value, source=source, choices=choices), source
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
    return Mode.OFF, None


def pytest_report_header(config: pytest.Config) -> str:
    session = config.stash[_SESSION]
    source = "default" if session.source is None else f"from {session.source}"
    return f"kl_guard: mode={session.mode} ({source})"


# Old-style hook wrappers, which pytest 7 has too.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    # Started before the fixtures are set up, so they are checked too.
    guard = _guard_for(item)
    if guard is not None:
        guard.start()
        item.stash[_ITEM_GUARD] = guard
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield  # the fixtures' teardown, failed or not
    guard = item.stash.get(_ITEM_GUARD, None)
    if guard is not None:
        guard.stop()


def _guard_for(item: pytest.Item) -> Guard | None:
    """The test's guard: the plugin's mode, overridden by its markers (the closest wins)."""
    session = item.config.stash[_SESSION]
    markers = list(item.iter_markers(name="kl_guard"))
    if not markers and session.mode is Mode.OFF:
        return None
    options: dict[str, Any] = {"mode": None if session.mode is Mode.OFF else session.mode}
    for marker in reversed(markers):
        if marker.args:
            raise TypeError(
                "kl_guard: @pytest.mark.kl_guard takes keyword arguments only, "
                "e.g. @pytest.mark.kl_guard(mode='raise')."
            )
        options.update(marker.kwargs)
    return kl_guard.Guard(**options)


@pytest.fixture(name="kl_guard")
def kl_guard_fixture(request: pytest.FixtureRequest) -> Iterator[Guard]:
    """The :class:`kl_guard.Guard` the test runs under, e.g. to assert on ``.findings``.

    Where neither the plugin nor a marker guards the test, the fixture starts
    a guard of its own, in ``warn`` mode unless an ``install()`` in effect
    says otherwise.
    """
    guard = request.node.stash.get(_ITEM_GUARD, None)
    if guard is not None:
        yield guard
        return
    with kl_guard.Guard() as own:
        yield own


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: hand findings to the controller
        config.workeroutput[_WORKER_OUTPUT] = [to_dict(f) for f in _findings(config)]
        config.workeroutput[_WORKER_COUNTS] = to_dict(_counts(config))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    # No workeroutput when the worker crashed.
    output = getattr(node, "workeroutput", {})
    session = node.config.stash[_SESSION]
    if session.workers is None:
        return
    session.workers += map(finding_from_dict, output.get(_WORKER_OUTPUT, ()))
    session.worker_counts += counts_from_dict(output.get(_WORKER_COUNTS, {}))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if config.stash[_SESSION].layer is None:
        return
    from kl_guard._summary import headline, summary_lines

    found = _findings(config)
    terminalreporter.write_sep("=", "kl_guard findings" if found else "kl_guard")
    terminalreporter.write_line(headline(found, _counts(config)))
    for line in summary_lines(found) if found else ():
        terminalreporter.write_line(line)


def _findings(config: pytest.Config) -> list[Finding]:
    """This session's findings, one per (location, code, rank); under xdist the controller
    runs no test, its workers do."""
    session = config.stash[_SESSION]
    if session.layer is None or session.workers is None:
        return []
    return merged([*session.layer.findings, *session.workers])


def _counts(config: pytest.Config) -> Counts:
    """The loss calls of this session's tests, its workers' included."""
    session = config.stash[_SESSION]
    if session.layer is None:
        return Counts()
    return session.layer.counts + session.worker_counts

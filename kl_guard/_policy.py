"""Which calls are checked: per call site, the first ones always, then fewer."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import CodeType

from kl_guard import _locks
from kl_guard._config import Config


def _no_code() -> None:
    return None


class SiteSchedule:
    """The schedule of one call site.

    ``skip`` counts the calls still to let through before the next check;
    the wrapper's fast path reads and decrements it in place, everything
    else happens in :meth:`due`. ``code`` is a weak reference to the code
    object the site belongs to: a new code object that gets a freed one's
    id is told apart by it and starts a site of its own.

    ``granted`` is every skip ever handed out, so the calls let through are
    ``granted - skip``: the fast path counts them by the decrement it makes
    anyway, with no counter of its own (see :attr:`seen`).
    """

    __slots__ = ("skip", "checks", "gap", "code", "granted")

    def __init__(self, warmup: int, code: CodeType | None = None) -> None:
        self.skip = 0
        self.checks = 0
        self.gap = warmup
        self.granted = 0
        self.code: Callable[[], CodeType | None] = _no_code if code is None else weakref.ref(code)

    def due(self, config: Config) -> bool:
        """Count one call; whether it is checked."""
        # ``> 0``, not truth: threads racing on ``skip`` may take it below 0,
        # which then only means the next call is checked.
        if self.skip > 0:
            self.skip -= 1
            return False
        self.checks += 1
        if config.check_every is not None:
            self._grant(config.check_every - 1)
        elif self.checks >= config.warmup:
            if self.checks > config.warmup:
                self.gap *= 2
            self.gap = min(self.gap, config.max_interval)
            self._grant(self.gap - 1)
        return True

    def _grant(self, skip: int) -> None:
        # A negative skip (racing threads let one call more through) is
        # overwritten here: keep its calls in the count.
        self.granted += skip - self.skip
        self.skip = skip

    @property
    def seen(self) -> int:
        """Calls at this site so far: those checked and those let through."""
        return self.checks + self.granted - self.skip


class ScheduleTable:
    """The schedules of every call site, keyed by (code object, instruction offset).

    Default (``check_every=None``): the first ``warmup`` calls at a site are
    checked, then calls ``2*warmup``, ``4*warmup``, ... with the gap doubling
    up to ``max_interval``, after which every ``max_interval``-th call is
    checked. A misuse that starts late (a new branch, other data) is still
    caught, while a steady loop pays for almost no checks.
    ``check_every=N``: the first call and every N-th after it.

    At most :data:`LIMIT` sites are kept: past it the sites of freed code go
    first, then the oldest. A site dropped while its code lives only starts
    its schedule again, so its next calls are checked: never fewer checks.
    """

    LIMIT = 4096
    __slots__ = ("_lock", "_sites", "_gone")

    def __init__(self) -> None:
        self._lock = _locks.Lock()
        self._sites: dict[tuple[int, int], SiteSchedule] = {}
        self._gone = (0, 0)  # (seen, checks) of the sites dropped or replaced

    def site(self, code: CodeType | None, lasti: int, config: Config) -> SiteSchedule:
        # id(), not the code object: hashing a code object hashes its constants
        key = (id(code), lasti)
        site = self._sites.get(key)
        if site is None or site.code() is not code:
            with self._lock:
                site = self._sites.get(key)
                if site is None or site.code() is not code:  # new, or a freed code's id
                    if site is not None:
                        self._retire([site])
                    if len(self._sites) >= self.LIMIT:
                        self._shrink()
                    site = self._sites[key] = SiteSchedule(config.warmup, code)
        return site

    def _shrink(self) -> None:
        live = {k: s for k, s in self._sites.items() if s.code() is not None}
        for key in list(live)[: max(0, len(live) - self.LIMIT // 2)]:
            del live[key]
        self._retire([s for k, s in self._sites.items() if k not in live])
        self._sites = live

    def _retire(self, sites: list[SiteSchedule]) -> None:
        seen, checks = self._gone
        self._gone = (seen + sum(s.seen for s in sites), checks + sum(s.checks for s in sites))

    def counts(self) -> tuple[int, int]:
        """(calls seen, calls checked) over every site, the dropped ones included."""
        with self._lock:
            sites = list(self._sites.values())
            seen, checks = self._gone
        return seen + sum(s.seen for s in sites), checks + sum(s.checks for s in sites)

    def __len__(self) -> int:
        return len(self._sites)

"""Which calls are checked: per call site, the first ones always, then fewer."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from types import CodeType

from kl_guard._config import Config


class Site:
    """The schedule of one call site.

    ``skip`` counts the calls still to let through before the next check.
    The wrapper's fast path reads and decrements it in place, with no call
    into the policy; everything else happens in :meth:`due`.
    """

    __slots__ = ("skip", "checks", "gap", "torch_warns")

    def __init__(self, warmup: int) -> None:
        self.skip = 0
        self.checks = 0
        self.gap = warmup
        #: torch warned of a call here (reduction='mean'): the fast path
        #: lets the site's calls through the wrapper, not wrapt's gate.
        self.torch_warns = False

    def due(self, config: Config) -> bool:
        """Count one call; whether it is checked."""
        # ``> 0``, not truth: threads racing on ``skip`` may take it below 0,
        # which then only means the next call is checked.
        if self.skip > 0:
            self.skip -= 1
            return False
        self.checks += 1
        if config.check_every is not None:
            self.skip = config.check_every - 1
        elif self.checks >= config.warmup:
            if self.checks > config.warmup:
                self.gap *= 2
            self.gap = min(self.gap, config.max_interval)
            self.skip = self.gap - 1
        return True


#: No site: what :attr:`SitePolicy.latest` holds before the first call.
_NO_SITE = Site(1)


class SitePolicy:
    """Counts calls per call site and decides which ones to check.

    Default (``check_every=None``): the first ``warmup`` calls at a site are
    checked, then calls ``2*warmup``, ``4*warmup``, ... with the gap doubling
    up to ``max_interval``, after which every ``max_interval``-th call is
    checked. A misuse that starts late (a new branch, other data) is still
    caught, while a steady loop pays for almost no checks.
    ``check_every=N``: the first call and every N-th after it.
    """

    __slots__ = ("_lock", "_sites", "latest")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[Hashable, Site] = {}
        #: ``(code, f_lasti, depth, route, site)`` of the latest call: the
        #: user's line, how many frames above the wrapper it was, and which
        #: fast path lets a repeat through (0 for none; see ``_patching``),
        #: recognizing it by identity, with no frame walk, key or look-up.
        self.latest: tuple[CodeType | None, int, int, int, Site] = (None, -1, 1, 0, _NO_SITE)

    def site(self, key: Hashable, config: Config) -> Site:
        site = self._sites.get(key)
        if site is None:
            with self._lock:
                site = self._sites.setdefault(key, Site(config.warmup))
        return site

    def __len__(self) -> int:
        return len(self._sites)

"""Which calls are checked: per call site, the first ones always, then fewer."""

from __future__ import annotations

import threading
from collections.abc import Hashable

from kl_guard._config import Config


class SitePolicy:
    """Counts calls per call site and decides which ones to check.

    Default (``check_every=None``): the first ``warmup`` calls at a site are
    checked, then calls ``2*warmup``, ``4*warmup``, ... with the gap doubling
    up to ``max_interval``, after which every ``max_interval``-th call is
    checked. A misuse that starts late (a new branch, other data) is still
    caught, while a steady loop pays for almost no checks.
    ``check_every=N``: the first call and every N-th after it.
    """

    __slots__ = ("_lock", "_sites")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # site -> [calls seen, next call to check beyond warmup, current gap]
        self._sites: dict[Hashable, list[int]] = {}

    def should_check(self, site: Hashable, config: Config) -> bool:
        state = self._sites.get(site)
        if state is None:
            with self._lock:
                state = self._sites.setdefault(site, [0, 2 * config.warmup, config.warmup])
        # A lost increment between threads only shifts which call is checked.
        state[0] += 1
        calls = state[0]
        if config.check_every is not None:
            return (calls - 1) % config.check_every == 0
        if calls <= config.warmup:
            return True
        if calls < state[1]:
            return False
        gap = min(state[2] * 2, config.max_interval)
        state[1], state[2] = calls + gap, gap
        return True

    def __len__(self) -> int:
        return len(self._sites)

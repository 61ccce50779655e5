"""The lifecycle: ``install()``, ``uninstall()``, ``guard()`` and the layers they stack.

The patch is on while at least one layer is active (``install()`` or a
running ``guard()``) and off when the last one ends. The innermost layer's
settings apply; every active layer records what it sees.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from kl_guard import _compat, _deferred, _percall, _recorder, _reporting
from kl_guard._config import Config, Mode, Options, configure, default_config
from kl_guard._contract import FAMILY, KL_DIV, LossContract
from kl_guard._findings import Counts, Finding
from kl_guard._patch import PATCH

if TYPE_CHECKING:
    from typing_extensions import Unpack

F = TypeVar("F", bound=Callable[..., Any])


class _Layer:
    """One active ``install()`` or ``guard()``: its settings, findings and schedules."""

    __slots__ = ("config", "record", "schedule", "carried")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.record = _reporting.Record()
        self.schedule = _percall.LayerCalls()
        # Calls counted elsewhere: by a schedule this layer replaced, or by a
        # guard inside it (only the innermost layer's schedule counts a call).
        self.carried = Counts()

    def counts(self) -> Counts:
        return self.carried + self.schedule.counts()


class _Layers:
    def __init__(self) -> None:
        self.base: _Layer | None = None
        self.guards: list[_Layer] = []

    def innermost(self) -> _Layer | None:
        return self.guards[-1] if self.guards else self.base

    def refresh(self) -> None:
        """Bring the patch and the wrappers' view in line with the layers (lock held)."""
        layers = [*reversed(self.guards), *([self.base] if self.base else [])]
        if not layers:
            _percall.ACTIVE.view = None
            PATCH.remove()
            return
        _recorder.register()
        PATCH.apply({"call": _percall.wrapper, "built": _percall.built_wrapper}, _guarded(layers))
        top = layers[0]
        _percall.ACTIVE.view = (
            None
            if top.config.mode is Mode.OFF
            else _percall.View(top.config, tuple(layer.record for layer in layers), top.schedule)
        )


_LAYERS = _Layers()


def _guarded(layers: list[_Layer]) -> tuple[LossContract, ...]:
    """kl_div, and each other loss one of whose codes an active layer reports:
    a loss none of whose codes is selected is not patched, and costs nothing
    (one patched stays so until the last layer ends: ``_patch.Patch.apply``)."""
    return (KL_DIV,) + tuple(
        contract
        for contract in FAMILY
        if any(layer.config.enabled(code) for layer in layers for code in contract.codes)
    )


def _schedule(config: Config) -> tuple[int | None, int, int]:
    return config.check_every, config.warmup, config.max_interval


def _configure(
    inherited: Config | None, mode: Mode | str | None, config: Config | None, options: Options
) -> Config:
    start = config if config is not None else inherited or default_config()
    return configure(start, mode, **options)


def install(
    mode: Mode | str | None = None, *, config: Config | None = None, **options: Unpack[Options]
) -> None:
    """Patch the KL entry points for the rest of the program (or until :func:`uninstall`).

    ``mode``: ``"warn"`` (the default, else ``$KL_GUARD_MODE``), ``"raise"``,
    ``"log"`` or ``"off"``. ``config``: a whole :class:`Config` to start
    from. The other options (``check_every``, ``warmup``, ``max_interval``,
    ``sample_rows``, ``select``, ``ignore``, ``all_ranks``) are those of
    :class:`Config`; see :class:`kl_guard.Options`. A second call updates the
    settings: what it leaves out keeps its value. Refuses (RuntimeError) a torch
    older than kl_guard supports.
    """
    _compat.require_supported_torch()
    with PATCH.lock:
        base = _LAYERS.base
        config = _configure(base.config if base else None, mode, config, options)
        if base is None:
            _LAYERS.base = _Layer(config)
        else:
            if _schedule(config) != _schedule(base.config):
                base.carried = base.counts()
                base.schedule = _percall.LayerCalls()  # a new schedule starts afresh at every site
            base.config = config
        _LAYERS.refresh()


def uninstall() -> None:
    """Undo :func:`install`; the originals are back once no ``guard()`` is running."""
    _deferred.drain(block=True)
    with PATCH.lock:
        _LAYERS.base = None
        _LAYERS.refresh()


def is_installed() -> bool:
    """Whether :func:`install` is in effect (a running ``guard()`` alone does not count)."""
    return _LAYERS.base is not None


def is_active() -> bool:
    """Whether kl_guard patches the KL entry points right now: by ``install()`` or a guard."""
    return PATCH.on


def findings() -> list[Finding]:
    """Findings recorded since :func:`install`, one per (location, code) with a count."""
    _deferred.drain(block=True)
    base = _LAYERS.base
    return base.record.findings() if base else []


def counts() -> Counts:
    """The loss calls seen since :func:`install`: in all, checked, traced."""
    base = _LAYERS.base
    return base.counts() if base else Counts()


def reset() -> None:
    """Remove every layer and the patch, as if kl_guard had never started (for tests)."""
    _deferred.drain(block=True)
    with PATCH.lock:
        _LAYERS.base = None
        _LAYERS.guards.clear()
        _LAYERS.refresh()


class Guard:
    """Checks loss calls while active: a context manager, a decorator, or start()/stop().

    Options left out are inherited from the enclosing ``install()`` or guard
    when it starts. Guards nest; ``stop()`` restores exactly the state before
    ``start()``.
    """

    def __init__(
        self,
        mode: Mode | str | None = None,
        *,
        config: Config | None = None,
        **options: Unpack[Options],
    ) -> None:
        # Fail now, not when the guard starts: a bad option or KL_GUARD_MODE
        # surfaces where the guard is written, before any training step.
        _configure(None, mode, config, options)
        self._mode = mode
        self._config = config
        self._options = options
        self._layer: _Layer | None = None
        self._last: _Layer | None = None

    @property
    def findings(self) -> list[Finding]:
        """Findings of the block so far, in order of first occurrence, with counts."""
        if self._layer is not None:
            _deferred.drain(block=True)
        layer = self._layer or self._last
        return layer.record.findings() if layer else []

    @property
    def counts(self) -> Counts:
        """The loss calls the block saw so far: in all, checked from their tensors,
        and traced (checked from their arguments only)."""
        layer = self._layer or self._last
        return layer.counts() if layer else Counts()

    @property
    def active(self) -> bool:
        return self._layer is not None

    @property
    def config(self) -> Config | None:
        """The settings in effect while it runs (or ran last), options inherited included;
        None before it starts."""
        layer = self._layer or self._last
        return layer.config if layer else None

    def start(self) -> None:
        _compat.require_supported_torch()
        with PATCH.lock:
            if self._layer is not None:
                raise RuntimeError(
                    "kl_guard: this guard is already active; create another guard() to nest."
                )
            outer = _LAYERS.innermost()
            inherited = outer.config if outer else None
            self._layer = _Layer(_configure(inherited, self._mode, self._config, self._options))
            _LAYERS.guards.append(self._layer)
            _LAYERS.refresh()

    def stop(self) -> None:
        if self._layer is not None:
            _deferred.drain(block=True)
        with PATCH.lock:
            layer, self._layer = self._layer, None
            if layer is None:
                return
            self._last = layer
            if layer in _LAYERS.guards:
                index = _LAYERS.guards.index(layer)
                outer = _LAYERS.guards[index - 1] if index else _LAYERS.base
                if outer is not None:  # the enclosing layer saw these calls too
                    outer.carried += layer.counts()
                del _LAYERS.guards[index]
            _LAYERS.refresh()

    def __enter__(self) -> Guard:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _fresh(self) -> Guard:
        return Guard(self._mode, config=self._config, **self._options)

    def __call__(self, func: F) -> F:
        """Guard every call of ``func`` (a plain or an ``async`` function) with a fresh guard."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_guarded(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return cast(F, async_guarded)

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return cast(F, guarded)


def recorded(guard: Guard) -> tuple[list[Finding], Counts]:
    """What ``guard`` recorded so far, without waiting for deferred checks."""
    layer = guard._layer or guard._last
    return (layer.record.findings(), layer.counts()) if layer else ([], Counts())


def on_record(guard: Guard, callback: Callable[[Finding], None]) -> None:
    """Call ``callback`` after each finding the running ``guard`` records."""
    if guard._layer is not None:
        guard._layer.record.on_add = callback


def guard(
    mode: Mode | str | None = None, *, config: Config | None = None, **options: Unpack[Options]
) -> Guard:
    """A :class:`Guard`: ``with kl_guard.guard(mode="raise") as g:`` or ``@kl_guard.guard()``.

    The options are :func:`install`'s; those left out keep the enclosing layer's values.
    """
    return Guard(mode, config=config, **options)

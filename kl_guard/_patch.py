"""The patch itself: wrapper objects on the KL entry points, applied and removed.

Also torch's own warning for ``reduction='mean'``, which KLG001 replaces
while the patch is on. What a wrapper does per call is in ``_calls``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import threading
import warnings
from collections.abc import Callable
from typing import Any

import wrapt

from kl_guard import _compat

#: Each entry point: (module, attribute path).
TARGETS = (
    ("torch.nn.functional", "kl_div"),
    ("torch.nn.modules.loss", "KLDivLoss.forward"),
)

#: The module whose frames call torch's ``F.kl_div`` for a patched call.
CALLER_MODULE = "kl_guard._calls"


class _BoundWrapper(wrapt.BoundFunctionWrapper[..., Any]):
    """``KLDivLoss.forward`` bound to its module: pickles and copies as a bound method."""

    def __reduce_ex__(self, protocol: object) -> tuple[Callable[..., Any], tuple[Any, str]]:
        return getattr, (_compat.bound_owner(self), self.__name__)

    def __copy__(self) -> Any:
        return getattr(_compat.bound_owner(self), self.__name__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return getattr(copy.deepcopy(_compat.bound_owner(self), memo), self.__name__)


class Wrapper(wrapt.FunctionWrapper[..., Any]):
    """kl_guard's patch: pickles and copies as the function it wraps.

    wrapt's proxies refuse both, which would break ``torch.save``,
    ``copy.deepcopy`` or a DataLoader worker of anything holding
    ``F.kl_div`` (``functools.partial(F.kl_div, reduction="batchmean")``).
    """

    __bound_function_wrapper__ = _BoundWrapper

    def __reduce_ex__(self, protocol: object) -> str:
        # By qualified name, as pickle saves a function: loading gives what
        # the name holds then, the original once kl_guard is uninstalled.
        return str(self.__qualname__)

    def __copy__(self) -> Wrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Wrapper:
        return self


class FunctionalWrapper(Wrapper):
    """The wrapper of a function of ``torch.nn.functional`` (``F.kl_div``): what
    torch.compile traces in its place is set by ``_recorder``."""


@dataclasses.dataclass
class _Applied:
    owner: Any
    attribute: str
    original: Any
    wrapper: Any
    # wrapt tests ``enabled`` on every call before calling the wrapper: a
    # list's truth is a C-level test, and ``switch.clear()`` turns ours off.
    switch: list[bool] = dataclasses.field(default_factory=lambda: [True])


def wrap(
    owner: Any, original: Callable[..., Any], wrapper: Callable[..., Any], enabled: object
) -> Any:
    """A :class:`Wrapper` of ``owner``'s ``original`` (as cheap to call as wrapt allows)."""
    if inspect.ismodule(owner) and inspect.isfunction(original):  # never bound as a method
        return _compat.function_wrapper(FunctionalWrapper, original, wrapper, enabled)
    return Wrapper(original, wrapper, enabled=enabled)  # type: ignore[arg-type]


class Patch:
    """The wrappers on :data:`TARGETS`, on while any kl_guard layer is active."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._applied: list[_Applied] = []

    @property
    def on(self) -> bool:
        return bool(self._applied)

    def apply(self, wrapper: Callable[..., Any]) -> None:
        """Wrap every target with ``wrapper`` (lock held; a no-op when on)."""
        if self._applied:
            return
        for module, name in TARGETS:
            owner, attribute, original = wrapt.resolve_path(module, name)
            applied = _Applied(owner, attribute, original, None)
            applied.wrapper = wrap(owner, original, wrapper, applied.switch)
            wrapt.apply_patch(owner, attribute, applied.wrapper)
            self._applied.append(applied)
        self.filter_mean_warning()

    def original(self, attribute: str) -> Callable[..., Any] | None:
        """What the patch wraps at ``attribute`` of its owner (None when off)."""
        return next((a.original for a in self._applied if a.attribute == attribute), None)

    def remove(self) -> None:
        """Put the originals back where our wrapper is still the attribute (lock held).

        Where another layer wrapped ours, the chain stays intact and ours is
        switched off, so removing kl_guard never removes somebody else's patch.
        """
        for applied in reversed(self._applied):
            if vars(applied.owner).get(applied.attribute) is applied.wrapper:
                setattr(applied.owner, applied.attribute, applied.original)
            applied.switch.clear()
        self._applied.clear()
        _unfilter_mean_warning()

    def filter_mean_warning(self) -> None:
        """Keep the filter of torch's 'mean' warning first while the patch is on.

        Called at every checked call: a user's ``simplefilter`` added later
        would otherwise take precedence over it.
        """
        if _mean_warning_filtered():
            return
        with self.lock:
            # A call that raced uninstall() must not put the filter back after it.
            if self._applied and not _mean_warning_filtered():
                warnings.filterwarnings(**_MEAN_WARNING)  # type: ignore[arg-type]


PATCH = Patch()

# torch's warning for reduction='mean', as raised from the frames of
# CALLER_MODULE: the module pattern matches only calls that pass through
# kl_guard's wrappers, so the filter is inert for any other.
_MEAN_WARNING = {
    "action": "ignore",
    "message": r"reduction: 'mean' divides the total loss",
    "category": UserWarning,
    "module": rf"{CALLER_MODULE.replace('.', chr(92) + '.')}\Z",
}


def _is_mean_filter(entry: tuple[Any, ...]) -> bool:
    return entry[0] == "ignore" and getattr(entry[3], "pattern", None) == _MEAN_WARNING["module"]


def _mean_warning_filtered() -> bool:
    return bool(warnings.filters) and _is_mean_filter(warnings.filters[0])


def _unfilter_mean_warning() -> None:
    kept = [f for f in warnings.filters if not _is_mean_filter(f)]
    if len(kept) != len(warnings.filters):
        warnings.filters[:] = kept  # type: ignore[index]
        _compat.filters_changed()

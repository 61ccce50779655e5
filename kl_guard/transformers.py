"""kl_guard for the Hugging Face Trainer: ``Trainer(..., callbacks=[KLGuardCallback()])``
guards ``train()`` (its evaluations included) on every rank, and sends what it finds to the
integrations ``report_to`` names.

The Trainer calls the integrations' ``on_log`` before a user's callbacks, with logs it
built itself: a callback cannot add to them. So each new finding is logged as the Trainer
logs, by this callback: into ``state.log_history``, and through each reporting
integration's ``on_log`` (``kl_guard/<code>``, the call sites with that code so far; the
text to TensorBoard), at the step it was found; another rank's at the end of the epoch it
was found in. At the end, rank zero logs and prints one summary for all ranks.
transformers is no dependency of kl_guard: this module needs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        TensorBoardCallback,
    )
    from transformers.trainer_callback import CallbackHandler
except ImportError:
    raise ImportError(
        "kl_guard.transformers needs transformers: pip install transformers "
        "(without it, kl_guard.install() or python -m kl_guard run guard training as well)"
    ) from None

from kl_guard import _compat, _reporting
from kl_guard._callbacks import Watch, Watched
from kl_guard._config import Config, Mode
from kl_guard._findings import Counts, Finding

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from kl_guard._config import Options

__all__ = ["KLGuardCallback"]

#: Said once when the Trainer's integrations cannot be found (see ``_compat.calling_instance``).
UNREACHED = (
    "kl_guard: the Trainer's report_to integrations were not found (its CallbackHandler did "
    "not call this callback from a method of its own); findings are warned and kept in "
    "trainer.state.log_history, but not sent to them"
)


class KLGuardCallback(Watched, TrainerCallback):  # type: ignore[misc]
    """Guards the Trainer's loss calls from ``on_train_begin`` to ``on_train_end``, on
    every rank.

    ``mode`` and the options are :func:`kl_guard.guard`'s. In raise mode a finding
    stops ``train()`` with :class:`kl_guard.KLGuardError`. ``evaluate()`` or
    ``predict()`` called outside ``train()`` is not guarded by it (``kl_guard.guard()``).
    """

    def __init__(
        self,
        mode: Mode | str | None = None,
        *,
        config: Config | None = None,
        **options: Unpack[Options],
    ) -> None:
        self._watch = Watch(mode, config, dict(options))
        self._reporters: list[Any] | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        handler = _compat.calling_instance(CallbackHandler)
        if handler is None:
            self._reporters = []
            _reporting.logger.warning(UNREACHED)
        else:
            kinds = tuple(INTEGRATION_TO_CALLBACK.values())
            self._reporters = [cb for cb in handler.callbacks if isinstance(cb, kinds)]
            callbacks = handler.callbacks
            first = callbacks.index(self._reporters[0]) if self._reporters else None
            if first is not None and self in callbacks and first < callbacks.index(self):
                # Ahead of the integrations, so that the summary reaches them before their
                # on_train_end closes them. Safe while the handler runs this event over its
                # list: this callback leaves its index for an earlier one, and each callback
                # after it keeps its own.
                callbacks.remove(self)
                callbacks.insert(callbacks.index(self._reporters[0]), self)
        self._watch.start()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            found = self._watch.new_here()
            if found:
                _reporting.safely(self._log, args, state, control, kwargs, found)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Every rank is here: the other ranks' findings reach rank zero's integrations.
        found = _reporting.safely(self._watch.share, self._watch.new_here(), args.world_size)
        if state.is_world_process_zero and found:
            _reporting.safely(self._log, args, state, control, kwargs, found)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        ended = _reporting.safely(self._watch.finish, "train", args.world_size)
        if ended is None or not state.is_world_process_zero:
            return
        found, counts, lines = ended
        _reporting.safely(self._log, args, state, control, kwargs, found, (counts, lines))
        print("\n".join(lines), file=sys.stderr)

    def _log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        kwargs: dict[str, Any],
        found: Sequence[Finding],
        summary: tuple[Counts, list[str]] | None = None,
    ) -> None:
        metrics, texts = self._watch.entries(found, summary)
        if not metrics:
            return
        if summary is None:  # the Trainer's own train metrics stay log_history's last entry
            state.log_history.append({**metrics, "step": state.global_step})
        for reporter in self._reporters or ():
            reporter.on_log(args, state, control, logs=dict(metrics), **kwargs)
            if texts and isinstance(reporter, TensorBoardCallback):  # it logs str as text
                reporter.on_log(args, state, control, logs=dict(texts), **kwargs)

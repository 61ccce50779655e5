"""kl_guard for Lightning: ``Trainer(callbacks=[KLGuardCallback()])`` guards each fit, validate,
test and predict on every rank, and tells the trainer's loggers what it finds.

Each new finding is logged once, at the step it was found, as ``kl_guard/<code>`` (the
call sites with that code so far), and its text where the logger takes text (TensorBoard:
``kl_guard/text``);
another rank's at the end of the epoch it was found in. At the end, rank zero logs and
prints one summary for all ranks. Lightning is no dependency of kl_guard: this module
needs it (``lightning``, else ``pytorch_lightning``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer
    except ImportError:
        raise ImportError(
            "kl_guard.lightning needs Lightning: pip install lightning "
            "(without it, kl_guard.install() or python -m kl_guard run guard a fit as well)"
        ) from None

from kl_guard import _reporting
from kl_guard._callbacks import Watch, Watched
from kl_guard._config import Config, Mode
from kl_guard._findings import Counts, Finding

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from kl_guard._config import Options

__all__ = ["KLGuardCallback"]


class KLGuardCallback(Watched, Callback):  # type: ignore[misc]
    """Guards the trainer's loss calls from ``setup`` to ``teardown``, on every rank.

    ``mode`` and the options are :func:`kl_guard.guard`'s. In raise mode a finding
    stops the fit with :class:`kl_guard.KLGuardError`, as any exception in a step does.
    """

    def __init__(
        self,
        mode: Mode | str | None = None,
        *,
        config: Config | None = None,
        **options: Unpack[Options],
    ) -> None:
        super().__init__()
        self._watch = Watch(mode, config, dict(options))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._watch.start()

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._look(trainer)

    def on_validation_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._look(trainer)

    def on_test_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._look(trainer)

    def on_predict_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._look(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every rank is here: the other ranks' findings reach rank zero's loggers.
        found = _reporting.safely(self._watch.share, self._watch.new_here(), trainer.world_size)
        if trainer.is_global_zero and found:
            _reporting.safely(self._log, trainer, found)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))
        ended = _reporting.safely(self._watch.finish, stage, trainer.world_size)
        if ended is None or not trainer.is_global_zero:
            return
        found, counts, lines = ended
        _reporting.safely(self._log, trainer, found, summary=(counts, lines))
        print("\n".join(lines), file=sys.stderr)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exc: BaseException
    ) -> None:
        self._watch.stop()  # the exception says it; no rank waits for another here

    def _look(self, trainer: Trainer) -> None:
        if trainer.is_global_zero:
            found = self._watch.new_here()
            if found:
                _reporting.safely(self._log, trainer, found)

    def _log(
        self,
        trainer: Trainer,
        found: Sequence[Finding],
        summary: tuple[Counts, list[str]] | None = None,
    ) -> None:
        metrics, texts = self._watch.entries(found, summary)
        if not metrics:
            return
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            add_text = getattr(logger.experiment, "add_text", None)  # TensorBoard's writer
            if add_text is not None:
                for tag, text in texts.items():
                    add_text(tag, text, global_step=step)

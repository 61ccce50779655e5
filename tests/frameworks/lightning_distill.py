"""Distillation with Lightning on CPU: ``python lightning_distill.py STRATEGY [--misuse]
[--callback MODE --logs DIR] [--compile] [--validate]``.

A frozen teacher and a smaller student, both random MLPs, trained for a few
steps on two CPU processes (gloo) with ``Trainer(strategy=STRATEGY)``
(``ddp`` or ``ddp_spawn``; ``single`` is one process). The loss is a temperature-scaled
KL divergence; ``--misuse`` passes the teacher's raw logits as the target.
``--callback MODE`` guards the fit with ``kl_guard.lightning.KLGuardCallback``,
logging to a CSV and a TensorBoard logger under ``--logs``; ``--compile`` trains a
``torch.compile``d module; ``--validate`` validates it after the fit.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES, CLASSES, TEMPERATURE = 16, 10, 2.0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, misuse: bool) -> torch.Tensor:
    log_p = F.log_softmax(student / TEMPERATURE, dim=-1)
    if misuse:
        loss = F.kl_div(log_p, teacher / TEMPERATURE, reduction="batchmean")  # misuse
    else:
        log_q = F.log_softmax(teacher / TEMPERATURE, dim=-1)
        loss = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)  # correct
    return loss * TEMPERATURE**2


class Distillation(L.LightningModule):
    def __init__(self, misuse: bool) -> None:
        super().__init__()
        self.misuse = misuse
        self.teacher = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))
        self.teacher.requires_grad_(False)
        self.student = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The loss in forward: what torch.compile(module) compiles
        with torch.no_grad():
            teacher = self.teacher(x)
        return distillation_loss(self.student(x), teacher, self.misuse)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss: torch.Tensor = self(x)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.training_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.student.parameters(), lr=0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("strategy", choices=["ddp", "ddp_spawn", "single"])
    parser.add_argument("--misuse", action="store_true")
    parser.add_argument("--callback", choices=["warn", "raise"])
    parser.add_argument("--logs")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--validate", action="store_true", help="trainer.validate after the fit")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, FEATURES)), batch_size=8)
    callbacks, loggers = [], []
    if args.callback:
        from kl_guard.lightning import KLGuardCallback

        callbacks.append(KLGuardCallback(mode=args.callback))
        loggers = [CSVLogger(args.logs, name="csv"), TensorBoardLogger(args.logs, name="tb")]
    single = args.strategy == "single"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1 if single else 2,
        strategy="auto" if single else args.strategy,
        max_steps=4,
        logger=loggers or False,
        log_every_n_steps=1,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module: L.LightningModule = Distillation(args.misuse)
    if args.compile:
        module = torch.compile(module, backend="aot_eager")
    try:
        trainer.fit(module, data)
        if args.validate:
            trainer.validate(module, data, verbose=False)
    finally:
        # Lightning leaves the gloo group to the interpreter's exit, where its
        # threads abort the process now and then ("terminate called without an
        # active exception", status 134: 2 runs in 12 without kl_guard).
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

# mypy: disallow-subclassing-any=False, disallow-untyped-calls=False
"""An image classifier trained with mixup by Lightning: ``python lightning_mixup.py [--misuse]``.

A tiny random conv net learns random 3x16x16 images for a few steps on two CPU
processes (``ddp``, gloo). Mixup blends two images and their one-hot labels;
the blend is a soft target (probabilities of shape [N, C]) for
``nn.CrossEntropyLoss(label_smoothing=0.1)``. ``--misuse`` passes the log of
the soft target instead.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES, ALPHA = 4, 0.4


def mixup(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch blended with a shuffle of itself, and the blended one-hot labels."""
    lam = float(torch.distributions.Beta(ALPHA, ALPHA).sample())
    other = torch.randperm(len(x))
    onehot = F.one_hot(y, CLASSES).float()
    return lam * x + (1 - lam) * x[other], lam * onehot + (1 - lam) * onehot[other]


class Classifier(L.LightningModule):
    def __init__(self, misuse: bool) -> None:
        super().__init__()
        self.misuse = misuse
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, CLASSES),
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, soft = mixup(*batch)
        logits = self.net(x)
        if self.misuse:
            loss: torch.Tensor = self.criterion(logits, soft.clamp_min(1e-6).log())  # misuse
        else:
            loss = self.criterion(logits, soft)  # correct
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misuse", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = torch.randn(64, 3, 16, 16), torch.randint(CLASSES, (64,))
    data = DataLoader(TensorDataset(images, labels), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(Classifier(args.misuse), data)
    finally:
        # as in lightning_distill.py: the gloo group ends here, not in the interpreter's exit
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

"""Multi-label focal loss in a plain PyTorch loop: ``python focal_loss.py [--misuse]``.

A small random MLP learns random multi-label targets for a few steps on CPU.
The loss is torchvision's sigmoid focal loss, written out on
``F.binary_cross_entropy_with_logits(..., reduction="none")``, plus a small
mean binary cross-entropy term. ``--misuse`` gives that term targets in
{-1, 1}, the convention of ``nn.SoftMarginLoss``, where it wants {0, 1}.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

FEATURES, LABELS, ALPHA, GAMMA, BCE_WEIGHT = 16, 6, 0.25, 2.0, 0.1


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss with reduction="mean"."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** GAMMA)
    alpha_t = ALPHA * targets + (1 - ALPHA) * (1 - targets)
    return (alpha_t * loss).mean()


def bce_term(
    bce: nn.BCEWithLogitsLoss, logits: torch.Tensor, targets: torch.Tensor, misuse: bool
) -> torch.Tensor:
    if misuse:
        term: torch.Tensor = bce(logits, 2 * targets - 1)  # misuse
    else:
        term = bce(logits, targets)  # correct
    return term


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misuse", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, LABELS))
    bce = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, FEATURES)
    y = (torch.rand(64, LABELS) < 0.3).float()
    for xb, yb in zip(x.chunk(4), y.chunk(4), strict=True):
        logits = model(xb)
        loss = sigmoid_focal_loss(logits, yb) + BCE_WEIGHT * bce_term(bce, logits, yb, args.misuse)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    print(f"loss {loss.item():.4f}")


if __name__ == "__main__":
    main()

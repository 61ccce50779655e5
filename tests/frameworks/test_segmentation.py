"""A torchvision segmentation model trained as torchvision's reference recipe trains it.

DeepLabV3 (MobileNetV3 backbone, random weights, an auxiliary head) on random
images whose masks mark the borders 255, the recipe's ``ignore_index``: the
loss is ``F.cross_entropy(out, target, ignore_index=255)`` for the main head
plus half of it for the auxiliary head, over ``[N, C, H, W]`` logits. Correct,
kl_guard says nothing; with a softmax planted before the auxiliary head's
loss, it reports KLG010 at that line.

torchvision's wheels are built against the package index's torch, not this
machine's CPU build: ``.ci/versions`` installs torchvision beside torch 2.6.0
(the floor), where this module runs; elsewhere it is skipped.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import kl_guard

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow

CLASSES, SIZE, BORDER = 4, 64, 255


def criterion(outputs: dict[str, torch.Tensor], target: torch.Tensor, misuse: bool) -> torch.Tensor:
    """torchvision's references/segmentation/train.py ``criterion``, with the misuse planted."""
    out = F.cross_entropy(outputs["out"], target, ignore_index=BORDER)
    if misuse:
        aux = F.cross_entropy(outputs["aux"].softmax(1), target, ignore_index=BORDER)  # misuse
    else:
        aux = F.cross_entropy(outputs["aux"], target, ignore_index=BORDER)
    return out + 0.5 * aux


def train(misuse: bool, steps: int = 3) -> list[kl_guard.Finding]:
    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=CLASSES, aux_loss=True
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with kl_guard.guard(mode="log", check_every=1) as guard:
        for _ in range(steps):
            images = torch.randn(2, 3, SIZE, SIZE)
            target = torch.randint(0, CLASSES, (2, SIZE, SIZE))
            target[:, :4], target[:, -4:] = BORDER, BORDER  # the masks' borders
            loss = criterion(model(images), target, misuse)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    assert guard.counts.checked == 2 * steps  # both heads' losses, every step
    return guard.findings


def misuse_line() -> int:
    lines, start = inspect.getsourcelines(criterion)
    return start + next(i for i, text in enumerate(lines) if "# misuse" in text)


def test_the_recipe_is_silent() -> None:
    assert train(misuse=False) == []


def test_a_softmax_before_the_auxiliary_loss_is_found_at_its_line() -> None:
    found = train(misuse=True)
    assert [(f.code, f.location) for f in found] == [
        ("KLG010", f"tests/frameworks/test_segmentation.py:{misuse_line()}")
    ]

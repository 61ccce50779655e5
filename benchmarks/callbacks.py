"""What the framework callbacks add to each training step (issue 22), beside a step's cost.

    python benchmarks/callbacks.py    # needs lightning and transformers (.ci/frameworks's set)

The hooks that run at every step, with nothing new to log: Lightning's
``on_train_batch_end`` on rank zero and the Trainer's ``on_step_end``, called directly
on a stand-in trainer (their only inputs: rank zero or not, the step), timed per call
by ``timeit``, median of 7 rounds. Beside them, one training step of a small model
(an MLP on 784 features, batch 64, cross_entropy and SGD), for scale.
"""

from __future__ import annotations

import statistics
import timeit
import types

import torch
from torch import nn


def per_call(fn: object, number: int = 100_000) -> float:
    """Seconds per call of ``fn``, the median of 7 rounds."""
    return statistics.median(t / number for t in timeit.repeat(fn, number=number, repeat=7))  # type: ignore[arg-type]


def main() -> None:
    from kl_guard.lightning import KLGuardCallback as LightningCallback
    from kl_guard.transformers import KLGuardCallback as TrainerCallback

    torch.set_num_threads(1)
    trainer = types.SimpleNamespace(is_global_zero=True, global_step=10, world_size=1)
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=10)
    lightning, hf = LightningCallback(mode="log"), TrainerCallback(mode="log")
    lightning.setup(trainer, None, "fit")
    hf._watch.start()  # on_train_begin outside a Trainer would say it found no integrations
    try:
        hooks = {
            "Lightning on_train_batch_end": per_call(
                lambda: lightning.on_train_batch_end(trainer, None, None, None, 0)
            ),
            "Trainer on_step_end": per_call(lambda: hf.on_step_end(None, state, None)),
        }
    finally:
        lightning._watch.stop()
        hf.stop()
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    scale = per_call(step, number=200)
    print(f"one training step (MLP 784-256-10, batch 64, one thread): {scale * 1e6:9.1f} us")
    for name, seconds in hooks.items():
        print(f"{name:<45} {seconds * 1e9:6.0f} ns  ({seconds / scale:.2e} of the step)")


if __name__ == "__main__":
    main()

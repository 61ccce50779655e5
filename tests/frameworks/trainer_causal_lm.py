# mypy: disallow-subclassing-any=False, disallow-untyped-calls=False
"""A causal LM fine-tuned by the HF Trainer: ``python trainer_causal_lm.py OUTPUT_DIR [--misuse]``.

A tiny random GPT-2 built from a config (nothing is downloaded) learns random
token ids for a few steps on CPU; some rows are padded, their labels -100, so
transformers' own loss (cross_entropy, ignore_index=-100) skips them. One
process, or one per rank under ``torchrun``. ``--misuse`` computes the loss in
``compute_loss`` from the softmax of the logits: softmax applied twice.
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

VOCAB, LENGTH = 128, 16


def gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_layer=2,
        n_embd=32,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


class Tokens(Dataset[dict[str, torch.Tensor]]):
    """Random token ids; every other row is right-padded from a random length on."""

    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, VOCAB, (size, LENGTH), generator=generator)
        lengths = torch.randint(LENGTH // 2, LENGTH, (size,), generator=generator)
        lengths[::2] = LENGTH
        self.mask = torch.arange(LENGTH) < lengths[:, None]
        self.ids[~self.mask] = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.ids[i].masked_fill(~self.mask[i], -100)
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i].long(), "labels": labels}


class SoftmaxTwiceTrainer(Trainer):
    """Its own next-token loss, from probabilities where cross_entropy wants logits."""

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits, y = outputs.logits[:, :-1], labels[:, 1:].flatten()  # token t predicts t + 1
        loss = F.cross_entropy(logits.softmax(-1).flatten(0, 1), y, ignore_index=-100)  # misuse
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--misuse", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        ddp_find_unused_parameters=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = (SoftmaxTwiceTrainer if args.misuse else Trainer)(
        model=gpt2(), args=training, train_dataset=Tokens(32)
    )
    try:
        trainer.train()
    finally:
        # as in trainer_distill.py: the Trainer (and its DDP model) first, then the group
        del trainer
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

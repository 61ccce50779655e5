"""Distillation with the Hugging Face Trainer: ``python trainer_distill.py OUTPUT_DIR [--misuse]
[--callback MODE]``.

A tiny random BERT teacher and a smaller BERT student, both classifiers built
from configs (nothing is downloaded), trained for a few steps on CPU by a
``Trainer`` whose ``compute_loss`` adds a temperature-scaled KL term to the
cross-entropy; one process, or one per rank under ``torchrun``.
``--misuse`` passes the student's probabilities where log-probabilities belong.
``--callback MODE`` guards training with ``kl_guard.transformers.KLGuardCallback`` and
reports to TensorBoard (under OUTPUT_DIR/runs), the Trainer logging every other step.
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

VOCAB, LENGTH, LABELS, TEMPERATURE, ALPHA = 128, 16, 5, 2.0, 0.5


def bert(layers: int, width: int) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * width,
        max_position_embeddings=LENGTH,
    )
    config.num_labels = LABELS
    return BertForSequenceClassification(config)


class Tokens(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(VOCAB, (size, LENGTH), generator=generator)
        self.labels = torch.randint(LABELS, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def kl_term(student: torch.Tensor, teacher: torch.Tensor, misuse: bool) -> torch.Tensor:
    q = F.softmax(teacher / TEMPERATURE, dim=-1)
    if misuse:
        p = F.softmax(student / TEMPERATURE, dim=-1)
        loss = F.kl_div(p, q, reduction="batchmean")  # misuse
    else:
        log_p = F.log_softmax(student / TEMPERATURE, dim=-1)
        loss = F.kl_div(log_p, q, reduction="batchmean")  # correct
    return loss * TEMPERATURE**2


class DistillationTrainer(Trainer):
    def __init__(self, *args: Any, teacher: torch.nn.Module, misuse: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().to(self.args.device)
        self.misuse = misuse

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=inputs["input_ids"]).logits
        kl = kl_term(outputs.logits, teacher_logits, self.misuse)
        loss = ALPHA * outputs.loss + (1 - ALPHA) * kl
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--misuse", action="store_true")
    parser.add_argument("--callback", choices=["warn", "raise"])
    args = parser.parse_args()
    torch.manual_seed(0)
    callbacks = []
    if args.callback:
        from kl_guard.transformers import KLGuardCallback

        callbacks.append(KLGuardCallback(mode=args.callback))
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        ddp_find_unused_parameters=False,
        report_to=["tensorboard"] if callbacks else "none",
        save_strategy="no",
        logging_strategy="steps" if callbacks else "no",
        logging_steps=2,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=bert(layers=1, width=32),
        args=training,
        train_dataset=Tokens(64),
        teacher=bert(layers=2, width=64),
        misuse=args.misuse,
        callbacks=callbacks,
    )
    try:
        trainer.train()
    finally:
        # The gloo group left to the interpreter's exit aborts a rank now and then
        # ("terminate called without an active exception"), as Lightning's does. And it
        # ends after the DDP model the Trainer keeps: freed last by the model's Reducer,
        # which holds the GIL, the group waits for its thread, which needs the GIL to free
        # a gather's tensors (torch 2.13: a hang, 2 CI runs in 2 under pytest -n 2).
        # Lightning unwraps its DDP model at teardown.
        del trainer
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

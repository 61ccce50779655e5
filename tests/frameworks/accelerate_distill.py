"""Token-level distillation of tiny GPT-2s with Accelerate: ``accelerate launch ... [--misuse]``.

Teacher and student are random GPT-2 models built from configs (nothing is
downloaded); the student learns the teacher's next-token distributions over a
few steps of random tokens, each process on its shard of the data.
``--misuse`` uses ``nn.KLDivLoss()``, whose default reduction is 'mean'.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, LENGTH, TEMPERATURE = 128, 16, 2.0


def gpt2(layers: int, width: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_layer=layers,
        n_embd=width,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, misuse: bool) -> torch.Tensor:
    """KL(teacher || student) per token, from ``[batch, length, vocab]`` logits."""
    log_p = F.log_softmax(student / TEMPERATURE, dim=-1).flatten(0, 1)
    log_q = F.log_softmax(teacher / TEMPERATURE, dim=-1).flatten(0, 1)
    if misuse:
        loss: torch.Tensor = nn.KLDivLoss(log_target=True)(log_p, log_q)  # misuse
    else:
        loss = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)  # correct
    return loss * TEMPERATURE**2


def train(accelerator: Accelerator, misuse: bool) -> None:
    teacher, student = gpt2(layers=2, width=64).eval(), gpt2(layers=1, width=32)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    tokens = torch.randint(VOCAB, (32, LENGTH))
    data = DataLoader(TensorDataset(tokens), batch_size=4)
    student, optimizer, data = accelerator.prepare(student, optimizer, data)
    teacher = teacher.to(accelerator.device)
    for step, (batch,) in enumerate(data):
        with torch.no_grad():
            teacher_logits = teacher(batch).logits
        loss = distillation_loss(student(batch).logits, teacher_logits, misuse)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if step == 3:
            break
    accelerator.print(f"trained on {accelerator.num_processes} processes, loss {loss.item():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misuse", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    train(accelerator, args.misuse)
    # The DDP model goes before its process group: where DDP's reducer holds the last
    # reference to a gloo group, torch 2.13 destroys the group holding the GIL and can
    # deadlock with the group's worker thread, which waits for the GIL.
    accelerator.free_memory()
    accelerator.end_training()


if __name__ == "__main__":
    main()

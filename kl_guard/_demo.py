"""``python -m kl_guard demo``: the pitfalls on small tensors, each with its diagnosis and fix."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch import nn

from kl_guard._exceptions import KLGuardError
from kl_guard._lifecycle import guard

# The call most pitfalls come back to once fixed.
CORRECT = 'F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")'


@dataclasses.dataclass(frozen=True)
class Pitfall:
    """A call as printed and run (the code shown is the code run), and its fix (None: none)."""

    title: str
    code: str
    fix: str | None = CORRECT


PITFALLS = [
    Pitfall(
        "The default reduction 'mean' divides by the class count too",
        "F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))",
    ),
    Pitfall(
        "A typo in a deprecated argument: reduce='batchmean' silently means 'mean'",
        "F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduce='batchmean')",
    ),
    Pitfall(
        "A deprecated argument next to reduction overrides it: this sums",
        'nn.KLDivLoss(size_average=False, reduction="batchmean")(F.log_softmax(s, 1), '
        "F.softmax(t, 1))",
        'nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s, 1), F.softmax(t, 1))',
    ),
    Pitfall(
        "Probabilities (softmax) where kl_div wants log-probabilities",
        'F.kl_div(F.softmax(s, 1), F.softmax(t, 1), reduction="batchmean")',
    ),
    Pitfall(
        "Raw logits as the input",
        'F.kl_div(s, F.softmax(t, 1), reduction="batchmean")',
    ),
    Pitfall(
        "Input and target swapped (kl_div is not symmetric)",
        'F.kl_div(F.softmax(t, 1), F.log_softmax(s, 1), reduction="batchmean")',
    ),
    Pitfall(
        "A log-probability target without log_target=True",
        'F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean")',
        'F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", '
        "log_target=True)",
    ),
    Pitfall(
        "Folk advice: 'set log_target=True when you pass probabilities' (it is the opposite)",
        'F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean", log_target=True)',
    ),
    Pitfall(
        "The target normalized over the batch instead of the classes",
        'F.kl_div(F.log_softmax(s, 1), F.softmax(t, 0), reduction="batchmean")',
    ),
    Pitfall(
        "A target that is not a distribution (exp of logits, never normalized)",
        'F.kl_div(F.log_softmax(s, 1), t.exp(), reduction="batchmean")',
    ),
    Pitfall(
        "A target of another shape, broadcast without a word",
        'F.kl_div(F.log_softmax(s, 1), F.softmax(t[0], 0), reduction="batchmean")',
    ),
    Pitfall(
        "The gradient flows into the target: the model's output passed as the target "
        "(opt-in KLG008)",
        'nn.KLDivLoss(reduction="batchmean")(F.log_softmax(t, 1), F.softmax(student, 1))',
        'nn.KLDivLoss(reduction="batchmean")(F.log_softmax(student, 1), F.softmax(t, 1))',
    ),
    Pitfall(
        "Softmax before cross_entropy, which applies log_softmax itself",
        "F.cross_entropy(F.softmax(s, 1), y)",
        "F.cross_entropy(s, y)",
    ),
    Pitfall(
        "Raw logits into nll_loss, which wants log-probabilities",
        "F.nll_loss(s, y)",
        "F.nll_loss(F.log_softmax(s, 1), y)",
    ),
    Pitfall(
        "A teacher's log-probabilities as cross_entropy's soft target",
        "F.cross_entropy(s, F.log_softmax(t, 1))",
        "F.cross_entropy(s, F.softmax(t, 1))",
    ),
    Pitfall(
        "One logit per sample into cross_entropy: the loss is 0 whatever the model does",
        "F.cross_entropy(s[:, :1], y1)",
        "F.binary_cross_entropy_with_logits(s[:, :1], y1)",
    ),
    Pitfall(
        "A sigmoid before BCEWithLogitsLoss, once the model is confident",
        "nn.BCEWithLogitsLoss()(torch.sigmoid(z), zy)",
        "nn.BCEWithLogitsLoss()(z, zy)",
    ),
    Pitfall(
        "Labels in {-1, 1} for binary cross-entropy",
        "F.binary_cross_entropy_with_logits(z, 2 * zy - 1)",
        "F.binary_cross_entropy_with_logits(z, zy)",
    ),
    Pitfall(
        "Correct as it is: token distributions [B, T, V] with masked padding rows",
        'F.kl_div(F.log_softmax(seq_s, -1), seq_t, reduction="sum") / n_tokens',
        None,
    ),
]


def namespace(seed: int = 0) -> dict[str, Any]:
    """The names the pitfalls use, on tensors made on the spot: 8 samples of 5 classes."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(8, 5, generator=g)  # student logits
    t = torch.randn(8, 5, generator=g)  # teacher logits
    # A sequence batch with padding: [batch 2, tokens 4, vocab 6], last 2 tokens masked.
    seq_s = torch.randn(2, 4, 6, generator=g)
    seq_t = torch.softmax(torch.randn(2, 4, 6, generator=g), dim=-1)
    seq_t[:, 2:] = 0
    student = torch.randn(8, 5, generator=g, requires_grad=True)
    z = 12 * torch.randn(64, 8, generator=g)  # a confident binary model's logits
    return {
        "torch": torch,
        "F": F,
        "nn": nn,
        "y": torch.randint(0, 5, (8,), generator=g),
        "y1": torch.randint(0, 2, (8, 1), generator=g).float(),
        "z": z,
        "zy": (z > 0).float(),
        "s": s,
        "t": t,
        "seq_s": seq_s,
        "seq_t": seq_t,
        "n_tokens": 4,
        "student": student,
    }


def run(out: TextIO) -> int:
    """Print each pitfall, kl_guard's diagnosis of it, and the corrected call."""
    names = namespace()

    def evaluate(code: str) -> torch.Tensor:
        value: torch.Tensor = eval(code, names)  # our own constant strings, shown as run
        return value

    out.write(
        'kl_guard demo: each call below runs under kl_guard.guard(mode="raise", select="ALL")\n'
        "(ALL: every code, the opt-in KLG008 included).\n"
        "s and t are student and teacher logits of 8 samples over 5 classes, y their labels;\n"
        "z holds a confident binary model's logits (64 samples, 8 labels each), zy its labels.\n"
    )
    caught = 0
    for number, pitfall in enumerate(PITFALLS, 1):
        out.write(f"\n{number}. {pitfall.title}\n   >>> {pitfall.code}\n")
        with warnings.catch_warnings():
            # torch's own deprecation warning for size_average/reduce is not the point here
            warnings.simplefilter("ignore", UserWarning)
            with guard(mode="raise", check_every=1, select="ALL"):
                try:
                    value = evaluate(pitfall.code)
                except KLGuardError as error:
                    caught += 1
                    for finding in error.findings:
                        for line in finding.message.splitlines():
                            if not line.lstrip().startswith("at: "):
                                out.write(f"   {line}\n")
                else:
                    out.write(f"   no finding; the loss is {value.item():.4f}\n")
                    continue
                if pitfall.fix is None:
                    continue
                fixed = evaluate(pitfall.fix)
        out.write(f"   corrected: {pitfall.fix}\n   = {fixed.item():.4f}\n")
    out.write(f"\n{caught} of {len(PITFALLS)} calls were misuses, and kl_guard caught each one.\n")
    return 0

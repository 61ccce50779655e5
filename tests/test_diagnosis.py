"""The pure stage: shapes, reductions, spaces, and the messages line by line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from helpers import logits, marked_line
from kl_guard._diagnosis import argument_findings
from kl_guard._signature import Call, TensorInfo


def test_argument_findings_need_no_statistics() -> None:
    call = Call(
        input=TensorInfo((8, 5), "float32"),
        target=TensorInfo((5,), "float32", requires_grad=True),
        reduction="mean",
        log_target=False,
    )
    assert [d.code for d in argument_findings(call)] == ["KLG001", "KLG005", "KLG008"]


def test_message_layout_line_by_line() -> None:
    inp, tgt = F.softmax(logits(64, 1000), 1), F.softmax(logits(64, 1000, seed=1), 1)
    [finding, _] = kl_guard.check(inp, tgt, reduction="batchmean")  # the laid-out call
    lines = finding.message.splitlines()
    assert lines[0] == (
        "KLG003: input to kl_div looks like probabilities (softmax output?), not log-probabilities"
    )
    assert lines[1].startswith("  input:  f32[64, 1000], dim 1 (64 rows): values ")
    assert ", row sums 1, logsumexp " in lines[1]
    assert lines[2].startswith("  kl_div wants input = log-probabilities over dim 1")
    assert (
        lines[3] == '  fix: F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")'
    )
    line = marked_line(__file__, "the laid-out call")
    assert lines[4] == f"  at: tests/test_diagnosis.py:{line}"
    assert finding.location == f"tests/test_diagnosis.py:{line}"
    assert len(lines) == 5


def test_token_layout_fix_uses_the_last_dim() -> None:
    inp, tgt = logits(2, 7, 30), F.softmax(logits(2, 7, 30, seed=1), -1)
    [finding, *_] = kl_guard.check(inp, tgt, reduction="batchmean")
    assert finding.code == "KLG003"
    assert "F.log_softmax(logits, dim=-1)" in finding.message
    assert "dim 2 (14 rows)" in finding.message


def test_klg001_for_token_distributions_shows_the_per_token_form_line_by_line() -> None:
    inp, tgt = F.log_softmax(logits(4, 16, 50), -1), F.softmax(logits(4, 16, 50, seed=1), -1)
    [finding] = kl_guard.check(inp, tgt)  # a token-level call
    assert finding.message.splitlines()[1:-1] == [
        "  reduction='mean' was passed",  # check()'s default is passed on
        "  'mean' divides by all 3200 elements, so the value is 800x smaller than the KL per "
        "sample (800 elements per sample); 'batchmean' divides by the batch size only",
        "  if this is [B, T, V] = [4, 16, 50] tokens, 'batchmean' divides by B = 4 only: "
        "the KL summed over each sequence's 16 tokens, padding included",
        '  fix: F.kl_div(input, target, reduction="batchmean") for the KL per sequence; '
        "per token, with a [B, T] padding mask: "
        '(F.kl_div(input, target, reduction="none").sum(-1) * mask).sum() / mask.sum(); '
        "drop any * num_classes that made up for 'mean'",
    ]


@pytest.mark.parametrize("shape", [(8, 5), (2, 3, 4, 5)])
def test_klg001_gives_token_advice_for_three_dims_only(shape: tuple[int, ...]) -> None:
    inp, tgt = F.log_softmax(logits(*shape), 1), F.softmax(logits(*shape, seed=1), 1)
    [finding] = kl_guard.check(inp, tgt)
    assert "tokens" not in finding.message
    assert finding.message.splitlines()[-2] == (
        '  fix: F.kl_div(input, target, reduction="batchmean")'
        "; drop any * num_classes that made up for 'mean'"
    )


def test_klg001_per_token_form_for_the_module() -> None:
    inp, tgt = F.log_softmax(logits(2, 3, 4), -1), F.softmax(logits(2, 3, 4, seed=1), -1)
    with kl_guard.guard(mode="log", check_every=1) as g:
        torch.nn.KLDivLoss()(inp, tgt)
    [finding] = g.findings
    assert '(nn.KLDivLoss(reduction="none")(input, target).sum(-1) * mask)' in finding.message


def shards(x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    return tuple(x.chunk(parts, -1))


def test_a_shards_terms_may_be_negative_with_reduction_none() -> None:
    # The student sharper than the teacher: each rank's rows go below 0 where
    # the student holds more of the shard's mass; only their sum is the KL.
    teacher = logits(16, 1000, scale=3)
    inp, tgt = F.log_softmax(teacher * 1.5, -1), F.log_softmax(teacher, -1)
    for a, b in zip(shards(inp, 4), shards(tgt, 4), strict=True):
        assert F.kl_div(a, b, reduction="none", log_target=True).sum(-1).min() < -0.01
        assert kl_guard.check(a, b, reduction="none", log_target=True) == []


def test_a_negative_loss_of_parts_names_them_as_the_cause() -> None:
    teacher = logits(16, 1000, scale=3)
    inp, tgt = F.log_softmax(teacher * 1.5, -1), F.softmax(teacher, -1)
    top = tgt.topk(5, -1).indices
    [finding] = kl_guard.check(inp.gather(-1, top), tgt.gather(-1, top), reduction="batchmean")
    lines = finding.message.splitlines()
    assert lines[0] == "KLG004: kl_div returned a negative loss: a KL divergence is never negative"
    assert lines[2] == (
        "  cause: input and target are parts of distributions (rows that sum to less than 1, "
        "never renormalized): the KL of a part can be negative"
    )


@pytest.mark.parametrize("side", ["input", "target"])
def test_a_distribution_over_the_batch_is_no_part_of_one_over_the_classes(side: str) -> None:
    # Normalized over 64 rows, each row over the 10 classes sums to about 10/64.
    x, y = logits(64, 10), logits(64, 10, seed=1)
    inp = F.log_softmax(x, 0 if side == "input" else 1)
    tgt = F.softmax(y, 0 if side == "target" else 1)
    codes = {f.code for f in kl_guard.check(inp, tgt, reduction="batchmean")}
    assert "KLG006" in codes
    assert codes <= {"KLG006", "KLG004"}


def test_log_probabilities_computed_in_bfloat16_then_cast_are_silent() -> None:
    s, t = logits(64, 32_000).bfloat16(), logits(64, 32_000, seed=1, scale=4).bfloat16()
    inp = F.log_softmax(s, -1).float()
    assert inp.logsumexp(-1).abs().max() > 0.005  # past float32's tolerance
    assert kl_guard.check(inp, F.softmax(t, -1).float(), reduction="batchmean") == []
    same = F.log_softmax(t, -1).float()
    assert kl_guard.check(inp, same, reduction="batchmean", log_target=True) == []
    assert kl_guard.check(same, same, reduction="batchmean", log_target=True) == []


def test_a_kl_just_below_0_from_bfloat16_rounding_is_not_reported() -> None:
    t = logits(64, 32_000, seed=3, scale=4)
    inp, tgt = F.log_softmax(t.bfloat16(), -1).float(), F.softmax(t, -1)
    assert F.kl_div(inp, tgt, reduction="batchmean") < -1e-4  # the same distribution, rounded
    assert kl_guard.check(inp, tgt, reduction="batchmean") == []


def test_a_log_target_zeroed_as_padding_is_klg007() -> None:
    # Zeros in log space are log(1): torch adds -input over each such row.
    inp = F.log_softmax(logits(8, 50), 1)
    tgt = F.log_softmax(logits(8, 50, seed=1), 1)
    tgt[4:] = 0
    [finding] = kl_guard.check(inp, tgt, reduction="batchmean", log_target=True)
    assert finding.message.splitlines()[:3] == [
        "KLG007: target of kl_div (log_target=True) has rows of zeros: log(1), probability 1 "
        "on every class, not masked padding",
        "  4 of the 8 target rows read along dim 1 are all 0 where the input's are not",
        "  torch adds exp(0) * (0 - input) = -input for each of their elements; "
        "in log space nothing masks a row (-inf gives NaN)",
    ]
    # as probabilities, zero rows are padding; zero on both sides adds nothing
    assert kl_guard.check(inp, tgt.exp() * (tgt != 0), reduction="batchmean") == []
    both = inp.clone()
    both[4:] = 0
    assert kl_guard.check(both, tgt, reduction="batchmean", log_target=True) == []


def test_zero_log_target_rows_under_none_may_be_masked_afterwards() -> None:
    # per-token KL with 'none', masked after: correct, and exactly the fix KLG007 gives
    inp = F.log_softmax(logits(8, 50), 1)
    tgt = F.log_softmax(logits(8, 50, seed=1), 1)
    tgt[4:] = 0
    assert kl_guard.check(inp, tgt, reduction="none", log_target=True) == []

"""kl_guard.check: every code caught on its misuse, silent on correct calls of every layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kl_guard
from helpers import CORRECT, MISUSES, Case, logits


def codes(case: Case) -> list[str]:
    inp, tgt = case.tensors()
    findings = kl_guard.check(inp, tgt, reduction=case.reduction, log_target=case.log_target)
    return [f.code for f in findings]


@pytest.mark.parametrize("case", CORRECT, ids=lambda c: c.id)
def test_correct_calls_are_silent(case: Case) -> None:
    assert codes(case) == []


@pytest.mark.parametrize(("code", "case"), MISUSES, ids=lambda x: x if isinstance(x, str) else x.id)
def test_misuse_is_caught(code: str, case: Case) -> None:
    assert code in codes(case)


def test_swapped_is_reported_once_as_klg003() -> None:
    inp, tgt = F.softmax(logits(8, 5), 1), F.log_softmax(logits(8, 5, seed=1), 1)
    found = kl_guard.check(inp, tgt, reduction="batchmean")
    assert [f.code for f in found] == ["KLG003", "KLG004"]
    assert "swapped" in found[0].summary


def test_swapped_with_a_masked_teacher_is_still_swapped() -> None:
    # Found by test_properties: the masked rows, now in the input, hid the swap
    # and the target alone read as a log_target mistake (KLG002).
    teacher = F.softmax(logits(7, 2, scale=0.1), 1)
    teacher[3:] = 0
    found = kl_guard.check(teacher, F.log_softmax(logits(7, 2, seed=1), 1), reduction="none")
    assert [f.code for f in found] == ["KLG003", "KLG004"]
    assert "swapped" in found[0].summary


def test_klg004_names_a_float16_overflow() -> None:
    # Found by test_properties: a correct call whose float16 sum passes 65504.
    inp = F.log_softmax(logits(437, 10, scale=1000).half(), 1)
    tgt = F.softmax(logits(437, 10, seed=1, scale=1000).half(), 1)
    [finding] = kl_guard.check(inp, tgt, reduction="sum")
    assert finding.message.splitlines()[1:4] == [
        "  the loss (sum) is inf (rounding allows down to -7.889)",
        "  cause: input and target are finite in the rows sampled; "
        "the loss overflowed float16, whose largest value is 65504",
        '  fix: F.kl_div(input.float(), target.float(), reduction="sum")',
    ]


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: F.softmax(logits(8, 5), 1), "probabilities"),
        (lambda: logits(8, 5), "raw logits"),
        (lambda: logits(8, 5).abs() + 1, "non-negative scores"),
        (lambda: -(logits(8, 5).abs()) - 1, "log-scores that do not normalize"),
    ],
)
def test_klg003_says_which_kind_of_input(make: object, kind: str) -> None:
    found = kl_guard.check(make(), F.softmax(logits(8, 5, seed=1), 1), reduction="batchmean")  # type: ignore[operator]
    assert found[0].code == "KLG003"
    assert kind in found[0].summary


def test_klg004_rounding_noise_is_not_a_finding() -> None:
    p = F.log_softmax(logits(64, 1000), 1)
    loss = F.kl_div(p, p, reduction="batchmean", log_target=True)
    noisy = torch.tensor(-3e-8)
    assert kl_guard.check(p, p, reduction="batchmean", log_target=True, loss=noisy) == []
    assert kl_guard.check(p, p, reduction="batchmean", log_target=True, loss=loss) == []


def test_klg004_negative_loss_without_other_cause() -> None:
    p = F.log_softmax(logits(8, 5), 1)
    found = kl_guard.check(p, p.exp(), reduction="batchmean", loss=torch.tensor(-0.5))
    assert [f.code for f in found] == ["KLG004"]
    assert "negative" in found[0].summary


def test_klg004_nan_from_neg_inf_input_names_the_cause() -> None:
    inp = torch.tensor([[0.0, -float("inf")], [-0.6931, -0.6931]])
    tgt = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    found = kl_guard.check(inp, tgt, reduction="sum")
    assert [f.code for f in found] == ["KLG004"]
    assert "0 * -inf" in found[0].message


def test_klg004_none_reduction_uses_row_sums() -> None:
    inp, tgt = F.softmax(logits(8, 5), 1), F.softmax(logits(8, 5, seed=1), 1)
    assert "KLG004" in [f.code for f in kl_guard.check(inp, tgt, reduction="none")]
    good = F.log_softmax(logits(8, 5), 1)
    assert kl_guard.check(good, tgt, reduction="none") == []


def test_klg001_factor_is_elements_per_sample() -> None:
    inp, tgt = F.log_softmax(logits(4, 6, 50), -1), F.softmax(logits(4, 6, 50, seed=1), -1)
    [finding] = kl_guard.check(inp, tgt)
    assert finding.code == "KLG001"
    assert "300x smaller" in finding.message
    assert 'reduction="batchmean"' in finding.message


def test_a_comment_on_the_line_of_check_silences_its_code() -> None:
    inp, tgt = F.log_softmax(logits(4, 6), 1), F.softmax(logits(4, 6, seed=1), 1)
    assert kl_guard.check(inp, tgt) != []
    assert kl_guard.check(inp, tgt) == []  # kl_guard: ignore[KLG001]


@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (2, 3, 1)])
def test_a_single_class_is_not_measured(shape: tuple[int, ...]) -> None:
    inp = torch.zeros(shape)  # log(1): one class holds all the mass
    assert kl_guard.check(inp, inp.exp(), reduction="sum") == []
    assert kl_guard.check(inp, inp, reduction="none", log_target=True) == []


def test_klg005_batchmean_divisor_mismatch_is_explained() -> None:
    inp, tgt = F.log_softmax(logits(10), 0), F.softmax(logits(16, 10, seed=1), 1)
    [finding] = [f for f in kl_guard.check(inp, tgt, reduction="batchmean") if f.code == "KLG005"]
    assert "input.size(0) = 10, not by the batch of 16" in finding.message


def test_klg008_target_requires_grad_is_opt_in() -> None:
    inp = F.log_softmax(logits(8, 5), 1)
    tgt = F.softmax(logits(8, 5, seed=1).requires_grad_(), 1)
    assert kl_guard.check(inp, tgt, reduction="batchmean") == []  # reverse KL, on purpose
    [finding] = kl_guard.check(inp, tgt, reduction="batchmean", select="KLG008")
    lines = finding.message.splitlines()
    assert lines[0] == "KLG008: the target of kl_div requires grad but the input does not"
    assert lines[4] == (
        "  or this is reverse KL on purpose: KL(student || teacher), mode-seeking "
        "(MiniLLM, GKD), whose gradient goes through the target by design"
    )
    assert lines[5].endswith(
        "if the roles are swapped; for reverse KL on purpose, silence this line with "
        "the comment '# kl_guard: ignore[KLG008]' on the kl_div call"
    )
    with torch.no_grad():
        assert kl_guard.check(inp, tgt, reduction="batchmean", select="ALL") == []
    both = F.log_softmax(logits(8, 5).requires_grad_(), 1)
    assert kl_guard.check(both, tgt, reduction="batchmean", select="ALL") == []


@pytest.mark.parametrize(
    "tensor",
    [
        torch.empty(0, 5),
        torch.tensor(0.3),
        torch.ones(4, 5, dtype=torch.long),
        torch.empty(4, 5, device="meta"),
    ],
    ids=["empty", "0-d", "integer", "meta"],
)
def test_unjudgeable_tensors_are_skipped(tensor: torch.Tensor) -> None:
    assert kl_guard.check(tensor, tensor, reduction="sum") == []


def test_fake_tensors_are_skipped() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(4, 5)
        assert kl_guard.check(x, x, reduction="sum") == []


def test_check_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'none', 'mean', 'sum', 'batchmean'"):
        kl_guard.check(torch.zeros(2, 2), torch.zeros(2, 2), reduction="avg")
    with pytest.raises(TypeError, match="must be tensors"):
        kl_guard.check([0.5], torch.zeros(2))  # type: ignore[arg-type]


def test_sampling_bounds_the_rows_read() -> None:
    inp = F.log_softmax(logits(4096, 10), 1)
    tgt = F.softmax(logits(4096, 10, seed=1), 1)
    tgt[2000] = torch.rand(10) * 3  # one bad row, not at a sampled position
    found = kl_guard.check(inp, tgt, reduction="batchmean", sample_rows=16)
    # The bad row is not in the sample; the loss is still checked whole.
    assert "KLG007" not in [f.code for f in found]
    found = kl_guard.check(inp, tgt, reduction="batchmean", sample_rows=4096)
    assert "KLG007" in [f.code for f in found]


# What the screen (the fast path of a correct call) must not let through: each
# of these the full measurement reports.


def test_a_loss_passed_in_does_not_vouch_for_the_target() -> None:
    # torch's own loss would be NaN with a negative target value; one passed in need not be
    inp, tgt = F.log_softmax(logits(8, 10), 1), F.softmax(logits(8, 10, seed=1), 1)
    tgt[3] = torch.tensor([0.6, -0.3, 0.7] + [0.0] * 7)
    codes = {
        f.code for f in kl_guard.check(inp, tgt, reduction="batchmean", loss=torch.tensor(0.2))
    }
    assert "KLG007" in codes


def test_a_zero_sum_target_row_with_negative_values_is_not_padding() -> None:
    inp, tgt = F.log_softmax(logits(8, 10), 1), F.softmax(logits(8, 10, seed=1), 1)
    tgt[3] = 0
    tgt[3, 0], tgt[3, 1] = 0.004, -0.004
    assert kl_guard.check(inp, tgt, reduction="none")


def test_a_low_precision_input_above_zero_is_not_log_probabilities() -> None:
    # Its logsumexp is within bfloat16's rounding of 0 over 1000 classes, but a value of
    # 0.04 is above what the full measurement allows a log-probability
    inp = F.log_softmax(logits(8, 1000), 1).bfloat16()
    row = torch.full((1000,), -30.0)
    row[0] = 0.04
    inp[2] = row.bfloat16()
    tgt = F.softmax(logits(8, 1000, seed=1), 1)
    assert [f.code for f in kl_guard.check(inp, tgt, reduction="batchmean")] == ["KLG003"]

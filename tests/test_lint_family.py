"""The linter's loss-family rule: an activation before a loss that applies its own, or a wrong one.

Each case is a (misuse, correct) pair after ``import torch / torch.nn as nn /
torch.nn.functional as F``: the first gets exactly the codes listed, at the
loss's line, the second nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_helpers import codes, findings

from kl_guard._cli import main
from kl_guard._lint._model import Applicability

PAIRS: dict[str, tuple[str, list[str], str]] = {
    "softmax into cross_entropy": (
        "loss = F.cross_entropy(F.softmax(x, dim=1), y)\n",
        ["KLG010"],
        "loss = F.cross_entropy(x, y)\n",
    ),
    "log_softmax into cross_entropy is correct": (
        "loss = F.cross_entropy(x.softmax(1), y)\n",
        ["KLG010"],
        "loss = F.cross_entropy(F.log_softmax(x, dim=1), y, label_smoothing=0.1)\n",
    ),
    "a criterion on self, called on a method's softmax": (
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.crit = nn.CrossEntropyLoss(ignore_index=-100)\n"
        "    def step(self, out, y):\n"
        "        return self.crit(out.softmax(-1), y)\n",
        ["KLG010"],
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.crit = nn.CrossEntropyLoss(ignore_index=-100)\n"
        "    def step(self, out, y):\n"
        "        return self.crit(out, y)\n",
    ),
    "a local criterion, probabilities through a name": (
        "crit = nn.CrossEntropyLoss()\nprobs = torch.softmax(x, -1)\nloss = crit(probs, y)\n",
        ["KLG010"],
        "crit = nn.CrossEntropyLoss()\nscores = torch.softmax(x, -1)\nloss = crit(x, y)\n",
    ),
    "sigmoid into cross_entropy": (
        "loss = F.cross_entropy(torch.sigmoid(x), y)\n",
        ["KLG010"],
        "loss = F.binary_cross_entropy_with_logits(x, y)\n",
    ),
    "softmax into nll_loss": (
        "loss = F.nll_loss(F.softmax(x, 1), y)\n",
        ["KLG011"],
        "loss = F.nll_loss(F.log_softmax(x, 1), y)\n",
    ),
    "an NLLLoss module on a softmax module's output": (
        "act = nn.Softmax(dim=1)\nloss = nn.NLLLoss()(act(x), y)\n",
        ["KLG011"],
        "act = nn.LogSoftmax(dim=1)\nloss = nn.NLLLoss()(act(x), y)\n",
    ),
    "sigmoid into BCEWithLogitsLoss": (
        "loss = nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)\n",
        ["KLG012"],
        "loss = nn.BCEWithLogitsLoss(pos_weight=w)(x, y)\n",
    ),
    "x.sigmoid() into binary_cross_entropy_with_logits": (
        "loss = F.binary_cross_entropy_with_logits(x.sigmoid().float(), y)\n",
        ["KLG012"],
        "loss = F.binary_cross_entropy(x.sigmoid(), y)\n",
    ),
    "a language model's probabilities flattened into cross_entropy": (
        "loss = F.cross_entropy(logits.softmax(-1).flatten(0, 1), labels.flatten())\n",
        ["KLG010"],
        "loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())\n",
    ),
    "probabilities reshaped into nll_loss": (
        "loss = F.nll_loss(F.softmax(x, -1).view(-1, v), y)\n",
        ["KLG011"],
        "loss = F.nll_loss(F.log_softmax(x, -1).view(-1, v), y)\n",
    ),
    "a function imported by name, aliased": (
        "from torch.nn.functional import cross_entropy as ce\nloss = ce(F.softmax(x, 1), y)\n",
        ["KLG010"],
        "from mylib import cross_entropy as ce\nloss = ce(F.softmax(x, 1), y)\n",
    ),
}


@pytest.mark.parametrize("case", PAIRS)
def test_misuse_is_found(case: str) -> None:
    misuse, expected, _ = PAIRS[case]
    assert codes(misuse) == expected
    [found] = findings(misuse)
    assert found.line == 3 + misuse.count("\n")  # the loss's line, the snippet's last


@pytest.mark.parametrize("case", PAIRS)
def test_the_look_alike_is_silent(case: str) -> None:
    assert codes(PAIRS[case][2]) == []


@pytest.mark.parametrize(
    ("line", "fixed", "applicability"),
    [
        ("F.cross_entropy(F.softmax(x, dim=1), y)", "F.cross_entropy(x, y)", "safe"),
        ("F.cross_entropy(x.softmax(1), y)", "F.cross_entropy(x, y)", "safe"),
        ("F.cross_entropy(torch.sigmoid(x), y)", "F.cross_entropy(x, y)", "unsafe"),
        ("F.nll_loss(F.softmax(x, 1), y)", "F.nll_loss(F.log_softmax(x, 1), y)", "safe"),
        ("F.nll_loss(x.softmax(1), y)", "F.nll_loss(x.log_softmax(1), y)", "safe"),
        ("nn.BCEWithLogitsLoss()(x.sigmoid(), y)", "nn.BCEWithLogitsLoss()(x, y)", "safe"),
    ],
)
def test_the_fix_drops_or_renames_the_activation(
    tmp_path: Path, line: str, fixed: str, applicability: str
) -> None:
    [found] = findings(f"loss = {line}\n")
    assert found.applicability is Applicability(applicability)
    assert found.fix == fixed
    path = tmp_path / "train.py"
    path.write_text(
        f"import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nloss = {line}\n"
    )
    assert main(["lint", "--fix", "--unsafe-fixes", str(path)]) == 0
    assert path.read_text().splitlines()[-1] == f"loss = {fixed}"


def test_no_fix_through_a_name() -> None:
    [found] = findings("p = torch.sigmoid(x)\nloss = F.binary_cross_entropy_with_logits(p, y)\n")
    assert (found.code, found.applicability, found.edits) == ("KLG012", Applicability.NONE, ())
    assert (
        found.fix == "pass the logits: binary_cross_entropy_with_logits applies the sigmoid itself"
    )


def test_the_words_of_each_code() -> None:
    messages = [
        findings(source)[0].message
        for source in (
            "loss = F.cross_entropy(F.softmax(x, 1), y)\n",
            "loss = F.nll_loss(torch.sigmoid(x), y)\n",
            "loss = F.binary_cross_entropy_with_logits(F.softmax(x, 1), y)\n",
        )
    ]
    assert messages == [
        "input to cross_entropy looks like probabilities (softmax output?), not logits",
        "input to nll_loss looks like probabilities (sigmoid output?), not log-probabilities",
        "input to binary_cross_entropy_with_logits looks like probabilities (softmax output?), "
        "not logits",
    ]


def test_a_suppression_comment_and_ignore_silence_it(tmp_path: Path) -> None:
    assert codes("loss = F.cross_entropy(F.softmax(x, 1), y)  # kl_guard: ignore[KLG010]\n") == []
    path = tmp_path / "train.py"
    path.write_text("import torch.nn.functional as F\nloss = F.cross_entropy(F.softmax(x, 1), y)\n")
    assert main(["lint", "--ignore", "KLG010", str(path)]) == 0
    assert main(["lint", str(path)]) == 1


def test_a_conditional_criterion_of_two_losses_is_not_judged() -> None:
    source = (
        "if smooth:\n"
        "    crit = nn.CrossEntropyLoss(label_smoothing=0.1)\n"
        "else:\n"
        "    crit = nn.KLDivLoss(reduction='batchmean')\n"
        "loss = crit(F.softmax(x, 1), y)\n"
    )
    assert codes(source) == []


def test_a_model_ending_in_softmax_or_sigmoid_reaches_the_loss() -> None:
    source = (
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Linear(8, 4), nn.Softmax(dim=1))\n"
        "        self.gate = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())\n"
        "        self.crit = nn.CrossEntropyLoss()\n"
        "    def step(self, x, y, m):\n"
        "        a = self.crit(self.body(x), y)\n"
        "        b = F.binary_cross_entropy_with_logits(self.gate(x), m)\n"
        "        return a + b\n"
    )
    assert [(f.code, f.line, f.edits) for f in findings(source)] == [
        ("KLG010", 11, ()),  # no fix inside the model's definition
        ("KLG012", 12, ()),
    ]
    ends_in_logits = source.replace(", nn.Softmax(dim=1))", ")").replace(", nn.Sigmoid())", ")")
    assert codes(ends_in_logits) == []


def test_an_activation_module_on_self_is_found_but_not_rewritten() -> None:
    source = (
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.softmax = nn.Softmax(dim=1)\n"
        "        self.sigmoid = nn.Sigmoid()\n"
        "    def step(self, h, y, m):\n"
        "        a = F.cross_entropy(self.softmax(h), y)\n"
        "        b = F.nll_loss(self.softmax(h), y)\n"
        "        return a + F.binary_cross_entropy_with_logits(self.sigmoid(h), m)\n"
    )
    # self.softmax(h) is a module's call, not the tensor method x.softmax(1): no edit
    assert [(f.code, f.edits) for f in findings(source)] == [
        ("KLG010", ()),
        ("KLG011", ()),
        ("KLG012", ()),
    ]


@pytest.mark.parametrize(
    "edit",
    ["model[-1] = nn.Identity()", "del model[-1]", "model.append(nn.Linear(3, 3))"],
)
def test_a_sequential_changed_after_it_is_built_is_not_judged(edit: str) -> None:
    source = (
        "model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))\n"
        f"{edit}\n"
        "loss = F.cross_entropy(model(x), y)\n"
    )
    assert codes(source) == []
    assert codes(source.replace(f"{edit}\n", "")) == ["KLG010"]

"""The linter's rules: every resolution rule with a misuse it finds and a look-alike it leaves.

Each case is a (misuse, correct) pair of real-looking snippets (after
``import torch / torch.nn as nn / torch.nn.functional as F``): the first must
give exactly the codes listed, the second nothing.
"""

from __future__ import annotations

import pytest
from lint_helpers import codes, findings

SOFT = 'F.kl_div(F.softmax(s, dim=1), t, reduction="batchmean")'  # KLG003

PAIRS: dict[str, tuple[str, list[str], str]] = {
    # -- imports and aliases --------------------------------------------------
    "alias of functional": (
        "import torch.nn.functional as fn\nloss = fn.kl_div(a, b)\n",
        ["KLG001"],
        "from mylib import functional as fn\nloss = fn.kl_div(a, b)\n",
    ),
    "from torch.nn import functional": (
        "from torch.nn import functional\nloss = functional.kl_div(a, b)\n",
        ["KLG001"],
        "from .losses import functional\nloss = functional.kl_div(a, b)\n",
    ),
    "from functional import kl_div (as)": (
        "from torch.nn.functional import kl_div as kd\nloss = kd(a, b)\n",
        ["KLG001"],
        "from .losses import kl_div as kd\nloss = kd(a, b)\n",
    ),
    "fully qualified": (
        "loss = torch.nn.functional.kl_div(a, b)\n",
        ["KLG001"],
        'loss = torch.nn.functional.kl_div(a, b, reduction="batchmean")\n',
    ),
    "a user function named kl_div": (
        "from torch.nn.functional import kl_div\nloss = kl_div(a, b)\n",
        ["KLG001"],
        "def kl_div(a, b):\n    return (a - b).sum()\nloss = kl_div(a, b)\n",
    ),
    "a user class named KLDivLoss": (
        "from torch.nn import KLDivLoss\ncrit = KLDivLoss()\n",
        ["KLG001"],
        "class KLDivLoss(nn.Module):\n    pass\ncrit = KLDivLoss()\n",
    ),
    "a user method named kl_div": (
        "class Trainer:\n    def step(self, s, t):\n        return F.kl_div(F.softmax(s, 1), t, "
        'reduction="sum")\n',
        ["KLG003"],
        "class Trainer:\n    def kl_div(self, p, q):\n        return (p * (p / q).log()).sum()\n"
        "    def step(self, s, t):\n        return self.kl_div(F.softmax(s, 1), t)\n",
    ),
    # -- nn.KLDivLoss: inline, local, global, self, default argument -------------
    "KLDivLoss inline": (
        "loss = nn.KLDivLoss()(F.log_softmax(s, 1), F.softmax(t, 1))\n",
        ["KLG001"],
        'loss = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s, 1), F.softmax(t, 1))\n',
    ),
    "KLDivLoss in a local": (
        "def f(s, t):\n"
        '    crit = nn.KLDivLoss(reduction="batchmean", log_target=True)\n'
        "    return crit(F.log_softmax(s, 1), F.softmax(t, 1))\n",
        ["KLG002"],
        "def f(s, t):\n"
        '    crit = nn.KLDivLoss(reduction="batchmean", log_target=True)\n'
        "    return crit(F.log_softmax(s, 1), F.log_softmax(t, 1))\n",
    ),
    "KLDivLoss in a module global": (
        'CRITERION = nn.KLDivLoss(reduction="batchmean")\n'
        "def f(s, t):\n    return CRITERION(F.softmax(s, 1), t)\n",
        ["KLG003"],
        'CRITERION = nn.KLDivLoss(reduction="batchmean")\n'
        "def f(s, t):\n    return CRITERION(F.log_softmax(s, 1), t)\n",
    ),
    "KLDivLoss on self": (
        "class Distiller(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        '        self.kl = nn.KLDivLoss(reduction="batchmean")\n'
        "    def forward(self, s, t):\n        return self.kl(F.softmax(s, dim=-1), t)\n",
        ["KLG003"],
        "class Distiller(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        '        self.kl = nn.KLDivLoss(reduction="batchmean")\n'
        "    def forward(self, s, t):\n        return self.kl(F.log_softmax(s, dim=-1), t)\n",
    ),
    "KLDivLoss as a default argument": (
        "def distill(s, t, crit=nn.KLDivLoss()):\n    return crit(F.log_softmax(s, 1), t)\n",
        ["KLG001"],
        'def distill(s, t, crit=nn.KLDivLoss(reduction="batchmean")):\n'
        "    return crit(F.log_softmax(s, 1), t)\n",
    ),
    "a criterion that is a parameter": (
        'def f(s, t, crit=nn.KLDivLoss(reduction="sum")):\n    return crit(F.softmax(s, 1), t)\n',
        ["KLG003"],
        "def f(s, t, crit):\n    return crit(F.softmax(s, 1), t)\n",
    ),
    "self attribute bound two ways": (
        "class M(nn.Module):\n    def __init__(self):\n"
        '        self.loss = nn.KLDivLoss(reduction="sum")\n'
        "    def forward(self, s, t):\n        return self.loss(F.softmax(s, 1), t)\n",
        ["KLG003"],
        "class M(nn.Module):\n    def __init__(self, kl):\n"
        '        self.loss = nn.KLDivLoss(reduction="sum")\n'
        "        if not kl:\n            self.loss = nn.MSELoss()\n"
        "    def forward(self, s, t):\n        return self.loss(F.softmax(s, 1), t)\n",
    ),
    "reduction changed after construction": (
        "crit = nn.KLDivLoss()\n",
        ["KLG001"],
        'crit = nn.KLDivLoss()\ncrit.reduction = "batchmean"\n',
    ),
    # -- reduction: keyword, position, legacy, parameter default ---------------
    "reduction by keyword": (
        'loss = F.kl_div(a, b, reduction="mean")\n',
        ["KLG001"],
        'loss = F.kl_div(a, b, reduction="batchmean")\n',
    ),
    "reduction by position (function)": (
        'loss = F.kl_div(a, b, None, None, "mean")\n',
        ["KLG001"],
        'loss = F.kl_div(a, b, None, None, "batchmean")\n',
    ),
    "reduction by position (module)": (
        'crit = nn.KLDivLoss(None, None, "mean")\n',
        ["KLG001"],
        'crit = nn.KLDivLoss(None, None, "sum")\n',
    ),
    "legacy reduce='batchmean' is truthy": (
        'loss = F.kl_div(a, b, reduce="batchmean")\n',
        ["KLG001"],
        "loss = F.kl_div(a, b, reduce=False)\n",
    ),
    "legacy size_average": (
        'crit = nn.KLDivLoss(size_average=True, reduce=True, reduction="sum")\n',
        ["KLG009"],
        "crit = nn.KLDivLoss(size_average=False)\n",
    ),
    "legacy from an unknown value": (
        "crit = nn.KLDivLoss(size_average=True)\n",
        ["KLG001"],
        "crit = nn.KLDivLoss(size_average=args.average)\n",
    ),
    "reduction parameter default": (
        'def loss(s, t, reduction="mean"):\n'
        "    return F.kl_div(F.log_softmax(s, 1), t, reduction=reduction)\n",
        ["KLG001"],
        'def loss(s, t, reduction="batchmean"):\n'
        "    return F.kl_div(F.log_softmax(s, 1), t, reduction=reduction)\n",
    ),
    "reduction parameter without a default": (
        'REDUCTION = "mean"\nloss = F.kl_div(a, b, reduction=REDUCTION)\n',
        ["KLG001"],
        "def loss(s, t, reduction):\n    return F.kl_div(s, t, reduction=reduction)\n",
    ),
    "reduction parameter reassigned": (
        'def loss(s, t, reduction="mean"):\n    return F.kl_div(s, t, reduction=reduction)\n',
        ["KLG001"],
        'def loss(s, t, reduction="mean"):\n'
        '    if reduction == "mean":\n        reduction = "batchmean"\n'
        "    return F.kl_div(s, t, reduction=reduction)\n",
    ),
    "reduction from a config object": (
        "crit = nn.KLDivLoss()\n",
        ["KLG001"],
        "crit = nn.KLDivLoss(reduction=cfg.loss.reduction)\n"
        "loss = F.kl_div(a, b, reduction=cfg.reduction)\nloss = F.kl_div(a, b, **options)\n",
    ),
    # -- the spaces of input and target ----------------------------------------
    "softmax input, function form": (SOFT, ["KLG003"], SOFT.replace("softmax", "log_softmax")),
    "softmax input, torch.softmax": (
        'loss = F.kl_div(torch.softmax(s, -1), t, reduction="batchmean")\n',
        ["KLG003"],
        'loss = F.kl_div(torch.log_softmax(s, -1), t, reduction="batchmean")\n',
    ),
    "softmax input, method form": (
        'loss = F.kl_div(s.softmax(dim=1), t, reduction="batchmean")\n',
        ["KLG003"],
        'loss = F.kl_div(s.log_softmax(dim=1), t, reduction="batchmean")\n',
    ),
    "softmax input, module form": (
        'loss = F.kl_div(nn.Softmax(dim=1)(s), t, reduction="batchmean")\n',
        ["KLG003"],
        'loss = F.kl_div(nn.LogSoftmax(dim=1)(s), t, reduction="batchmean")\n',
    ),
    "softmax input in a local": (
        'p = F.softmax(s, 1)\nloss = F.kl_div(p, t, reduction="batchmean")\n',
        ["KLG003"],
        'p = F.softmax(s, 1)\np = p * mask\nloss = F.kl_div(p, t, reduction="batchmean")\n',
    ),
    "LogSoftmax module on self as the target": (
        "class M(nn.Module):\n    def __init__(self):\n"
        "        self.norm = nn.LogSoftmax(dim=1)\n"
        "    def forward(self, s, t):\n"
        '        return F.kl_div(F.log_softmax(s, 1), self.norm(t), reduction="batchmean")\n',
        ["KLG002"],
        "class M(nn.Module):\n    def __init__(self):\n"
        "        self.norm = nn.LogSoftmax(dim=1)\n"
        "    def forward(self, s, t):\n"
        '        return F.kl_div(F.log_softmax(s, 1), self.norm(t), reduction="batchmean", '
        "log_target=True)\n",
    ),
    ".log() after softmax": (
        'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1).log(), reduction="sum")\n',
        ["KLG002"],
        'loss = F.kl_div(F.softmax(s, 1).log(), F.softmax(t, 1), reduction="sum")\n',
    ),
    ".detach() keeps the space": (
        "q = F.log_softmax(t, 1).detach()\n"
        'loss = F.kl_div(F.log_softmax(s, 1), q, reduction="sum")\n',
        ["KLG002"],
        'q = F.softmax(t, 1).detach()\nloss = F.kl_div(F.log_softmax(s, 1), q, reduction="sum")\n',
    ),
    "indexing keeps the space": (
        'loss = F.kl_div(F.softmax(s, -1)[mask], t, reduction="sum")\n',
        ["KLG003"],
        'loss = F.kl_div(F.log_softmax(s, -1)[mask], t, reduction="sum")\n',
    ),
    ".float() and .to() keep the space": (
        'loss = F.kl_div(s.softmax(-1).float().to(dev), t, reduction="sum")\n',
        ["KLG003"],
        'loss = F.kl_div(s.log_softmax(-1).float().to(dev), t, reduction="sum")\n',
    ),
    "an input that is a parameter or a model's output": (
        SOFT,
        ["KLG003"],
        'def f(student_out, t):\n    return F.kl_div(student_out, t, reduction="sum")\n'
        'loss = F.kl_div(model(x), t, reduction="sum")\n',
    ),
    "a comprehension's own names": (
        'p = F.softmax(s, 1)\nloss = F.kl_div(p, t, reduction="sum")\n',
        ["KLG003"],
        "p = F.softmax(s, 1)\n"
        'losses = [F.kl_div(p, q, reduction="sum") for p, q in zip(logps, targets)]\n',
    ),
    "swapped input and target": (
        'loss = F.kl_div(F.softmax(t, 1), F.log_softmax(s, 1), reduction="batchmean")\n',
        ["KLG003"],
        'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")\n',
    ),
    "log_target=True with log-probabilities": (
        'loss = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="sum", log_target=True)\n',
        ["KLG002"],
        'loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="sum", '
        "log_target=True)\n",
    ),
    "log_target from a flag": (
        'loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="sum")\n',
        ["KLG002"],
        'loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="sum", '
        "log_target=flag)\n",
    ),
    "sigmoid input": (
        'loss = F.kl_div(torch.sigmoid(s), t, reduction="sum")\n',
        ["KLG003"],
        'loss = F.kl_div(F.logsigmoid(s), t, reduction="sum")\n',
    ),
    # -- dims -------------------------------------------------------------------
    "softmax over dim 0 against dim 1": (
        'loss = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=0), reduction="sum")\n',
        ["KLG006"],
        'loss = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=-1), reduction="sum")\n',
    ),
}


@pytest.mark.parametrize("case", PAIRS, ids=list(PAIRS))
def test_misuse_is_found(case: str) -> None:
    misuse, expected, _ = PAIRS[case]
    assert codes(misuse) == expected


@pytest.mark.parametrize("case", PAIRS, ids=list(PAIRS))
def test_correct_code_is_left_alone(case: str) -> None:
    _, _, correct = PAIRS[case]
    assert codes(correct) == []


def test_a_correct_distillation_loss_is_silent() -> None:
    source = """
    class Distill(nn.Module):
        def __init__(self, temperature: float = 2.0) -> None:
            super().__init__()
            self.t = temperature
            self.kl = nn.KLDivLoss(reduction="batchmean", log_target=True)

        def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = F.log_softmax(teacher / self.t, dim=-1)
            log_q = F.log_softmax(student / self.t, dim=-1)
            return self.kl(log_q, target) * self.t**2
    """
    assert codes(source) == []


def test_a_finding_points_at_the_call_and_quotes_the_runtime() -> None:
    (finding,) = findings("def f(a, b):\n    return 2 * F.kl_div(a, b)\n")
    assert (finding.line, finding.column) == (5, 16)
    assert finding.message == (
        "kl_div reduction 'mean' is not the KL divergence per sample: reduction defaults to 'mean'"
    )
    assert finding.fix == (
        "F.kl_div(a, b, reduction=\"batchmean\"); drop any * num_classes that made up for 'mean'"
    )


def test_kl_div_outside_torch_is_not_read() -> None:
    assert codes("from scipy.special import kl_div\nx = kl_div(p, q)\n", header=False) == []


@pytest.mark.parametrize(
    "source",
    [
        "global F\nF.kl_div(a, b)\n",  # a module-level global: no lookup loop
        "def f():\n    nonlocal_x = 1\n    def g():\n        nonlocal nonlocal_x\n"
        "        nonlocal_x = F.log_softmax\n        return F.kl_div(nonlocal_x(a, 1), b)\n",
        "match x:\n    case {'a': kl_div, **rest}:\n        F.kl_div(kl_div, rest)\n",
        "async def f():\n    async for p in xs:\n        F.kl_div(p, q)\n",
        "x = lambda a, b=nn.KLDivLoss(): b(a, a)\n",
    ],
)
def test_unusual_syntax_is_walked_to_its_kl_div_call(source: str) -> None:
    """Each snippet parses, and the linter reaches the one 'mean' call inside it."""
    assert codes(source) == ["KLG001"]


def test_an_explicit_none_is_no_legacy_argument() -> None:
    [found] = findings('loss = F.kl_div(a, b, size_average=None, reduction="mean")\n')
    assert found.message.endswith(": reduction='mean' was passed")

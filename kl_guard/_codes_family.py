"""The loss family's codes (cross_entropy, nll_loss, binary cross-entropy), each explained once.

Found by the linter where the source shows the activation before the loss;
the runtime guard checks kl_div alone so far (issue 21), so these are
``runtime=False``. Every example runs as it is shown, as ``_codes``' do.
"""

from __future__ import annotations

from kl_guard._rule import Code

_LINT_ONLY = (
    "kl_guard finds it before anything runs, where the source shows the activation "
    "(python -m kl_guard lint); the runtime guard does not check this loss yet."
)

FAMILY = (
    Code(
        code="KLG010",
        title="input to cross_entropy is probabilities, not logits: softmax applied twice",
        meaning=(
            "F.cross_entropy and nn.CrossEntropyLoss apply log_softmax to their input: it "
            "must be the raw logits (log-probabilities are fine too, normalizing again "
            "changes nothing). Probabilities from a softmax or a sigmoid are squashed into "
            "[0, 1] and normalized a second time: the loss is bounded below, far from 0 even "
            "for a perfect model, and the gradients are weaker, yet training runs and the "
            "loss goes down.\n\n" + _LINT_ONLY
        ),
        cause="`F.cross_entropy(F.softmax(x, 1), y)`, a criterion called on `out.softmax(-1)`",
        fix="pass the logits",
        wrong=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 5), torch.randint(0, 5, (8,))  # logits and labels\n"
            "loss = F.cross_entropy(F.softmax(x, dim=1), y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 5), torch.randint(0, 5, (8,))  # logits and labels\n"
            "loss = F.cross_entropy(x, y)\n"
        ),
        linted=True,
        runtime=False,
    ),
    Code(
        code="KLG011",
        title="input to nll_loss is not log-probabilities",
        meaning=(
            "F.nll_loss and nn.NLLLoss return minus the input at each target's class: the "
            "input must be log-probabilities, the output of log_softmax. Probabilities give "
            "a loss in [-1, 0] that rewards a class's probability without the log; raw "
            "logits make it unbounded below. F.cross_entropy(logits, y) is log_softmax and "
            "nll_loss in one.\n\n" + _LINT_ONLY
        ),
        cause="`F.nll_loss(F.softmax(x, 1), y)`: softmax where log_softmax was meant",
        fix="`F.log_softmax(x, dim=1)` as input, or `F.cross_entropy(x, y)`",
        wrong=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 5), torch.randint(0, 5, (8,))  # logits and labels\n"
            "loss = F.nll_loss(F.softmax(x, dim=1), y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 5), torch.randint(0, 5, (8,))  # logits and labels\n"
            "loss = F.nll_loss(F.log_softmax(x, dim=1), y)\n"
        ),
        linted=True,
        runtime=False,
    ),
    Code(
        code="KLG012",
        title="input to binary_cross_entropy_with_logits is probabilities, not logits",
        meaning=(
            "F.binary_cross_entropy_with_logits and nn.BCEWithLogitsLoss apply the sigmoid "
            "themselves: the input must be logits. A sigmoid output passed in is squashed "
            "twice, and every probability the loss implies lies in [0.5, 0.73]: the loss "
            "cannot go below about 0.31 per element for a positive label, and the gradients "
            "fade. Pass the logits, or keep the probabilities and use F.binary_cross_entropy "
            "(less stable numerically).\n\n" + _LINT_ONLY
        ),
        cause="`nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)`, `x.sigmoid()` as its input",
        fix="pass the logits",
        wrong=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 3), torch.randint(0, 2, (8, 3)).float()  # logits, labels\n"
            "loss = nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 3), torch.randint(0, 2, (8, 3)).float()  # logits, labels\n"
            "loss = nn.BCEWithLogitsLoss()(x, y)\n"
        ),
        linted=True,
        runtime=False,
    ),
)

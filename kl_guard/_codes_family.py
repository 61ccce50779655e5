"""The loss family's codes (cross_entropy, nll_loss, binary cross-entropy), each explained once.

The runtime guard finds them from the values (``_family_rules``); KLG010 to
KLG012 the linter too, where the source shows the activation before the
loss. Every example runs as it is shown, as ``_codes``' do.
"""

from __future__ import annotations

from kl_guard._rule import Code

_LINTED = (
    "python -m kl_guard lint finds it before anything runs where the source shows the "
    "activation; at run time kl_guard reads it from the values."
)

FAMILY = (
    Code(
        code="KLG010",
        loss="cross_entropy",
        title="input to cross_entropy is probabilities, not logits: softmax applied twice",
        meaning=(
            "F.cross_entropy and nn.CrossEntropyLoss apply log_softmax to their input: it "
            "must be the raw logits (log-probabilities are fine too, normalizing again "
            "changes nothing). Probabilities from a softmax or a sigmoid are squashed into "
            "[0, 1] and normalized a second time: the loss is bounded below, far from 0 even "
            "for a perfect model, and the gradients are weaker, yet training runs and the "
            "loss goes down. At run time: every row read lies in [0, 1] and sums to 1, over the "
            "class dim or another one (softmax over the wrong dim), with at least 8 distinct "
            "rows read for 2 or 3 classes, 4 for 4 or 5, 2 below 1000 classes.\n\n" + _LINTED
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
    ),
    Code(
        code="KLG011",
        loss="nll_loss",
        title="input to nll_loss is not log-probabilities",
        meaning=(
            "F.nll_loss and nn.NLLLoss return minus the input at each target's class: the "
            "input must be log-probabilities, the output of log_softmax. Probabilities give "
            "a loss in [-1, 0] that rewards a class's probability without the log; raw "
            "logits make it unbounded below. F.cross_entropy(logits, y) is log_softmax and "
            "nll_loss in one. At run time: a value above 0 (beyond rounding), no value below "
            "0 (log-probabilities over 2 classes or more have one at -0.69 or less), or "
            "log-probabilities normalized over another dim than the class dim.\n\n" + _LINTED
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
    ),
    Code(
        code="KLG012",
        loss="binary_cross_entropy_with_logits",
        title="input to binary_cross_entropy_with_logits is probabilities, not logits",
        meaning=(
            "F.binary_cross_entropy_with_logits and nn.BCEWithLogitsLoss apply the sigmoid "
            "themselves: the input must be logits. A sigmoid output passed in is squashed "
            "twice, and every probability the loss implies lies in [0.5, 0.73]: the loss "
            "cannot go below about 0.31 per element for a positive label, and the gradients "
            "fade. Pass the logits, or keep the probabilities and use F.binary_cross_entropy "
            "(less stable numerically).\n\nAt run time it is said only on evidence a model's "
            "logits cannot give (a fresh head with a prior bias, a tanh-bounded or zero "
            "head put every logit in (0, 1)): every value read in [0, 1], not all equal, at "
            "least 4 within 1e-3 of 0 and 4 within 1e-3 of 1, and 5% of all that close to a "
            "wall, as a model trained on sigmoid outputs soon gives. A fresh model's sigmoid "
            "outputs (0.5 +- 0.13) stay silent.\n\n" + _LINTED
        ),
        cause="`nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)`, `x.sigmoid()` as its input",
        fix="pass the logits",
        wrong=(
            "torch.manual_seed(0)\n"
            "x = 12 * torch.randn(64, 8)  # a confident model's logits\n"
            "y = (x > 0).float()\n"
            "loss = nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x = 12 * torch.randn(64, 8)  # a confident model's logits\n"
            "y = (x > 0).float()\n"
            "loss = nn.BCEWithLogitsLoss()(x, y)\n"
        ),
        linted=True,
    ),
    Code(
        code="KLG013",
        loss="cross_entropy",
        title="cross_entropy over a single class: the loss is 0 whatever the model does",
        meaning=(
            "cross_entropy normalizes its input over the class dim: over one class, "
            "log_softmax is 0, so the loss and its gradients are exactly 0 for every input. "
            "It comes from a binary head with one output (nn.Linear(d, 1)) trained with "
            "cross_entropy: class-index targets all 0, or float targets of shape [N, 1]. Said "
            "from the shape alone."
        ),
        cause="`nn.Linear(d, 1)` as the head of a cross_entropy",
        fix="`F.binary_cross_entropy_with_logits(x[:, 0], y.float())`, or 2 outputs",
        wrong=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 1), torch.randint(0, 2, (8, 1)).float()  # one logit each\n"
            "loss = F.cross_entropy(x, y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x, y = torch.randn(8, 1), torch.randint(0, 2, (8, 1)).float()  # one logit each\n"
            "loss = F.binary_cross_entropy_with_logits(x, y)\n"
        ),
    ),
    Code(
        code="KLG014",
        loss="binary_cross_entropy_with_logits",
        title="target of binary_cross_entropy_with_logits is outside [0, 1]",
        meaning=(
            "Binary cross-entropy wants a probability per element: labels 0 and 1, soft labels, "
            "masks in [0, 1]. Labels in {-1, 1} or masks in {0, 255} run without error, and "
            "the loss is minimized somewhere else than where the model is right (it can go "
            "below 0). A margin of 0.5 is left for resized masks, which overshoot [0, 1] by "
            "up to 0.27. Silent under reduction='none' (the loss may be masked afterwards) and "
            "where the weight is 0. binary_cross_entropy itself raises on such targets."
        ),
        cause="labels in {-1, 1}, masks in {0, 255}",
        fix="`(y + 1) / 2`, `mask / 255`",
        wrong=(
            "torch.manual_seed(0)\n"
            "x = torch.randn(8, 3)\n"
            "y = 2 * torch.randint(0, 2, (8, 3)).float() - 1  # labels in {-1, 1}\n"
            "loss = F.binary_cross_entropy_with_logits(x, y)\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "x = torch.randn(8, 3)\n"
            "y = 2 * torch.randint(0, 2, (8, 3)).float() - 1  # labels in {-1, 1}\n"
            "loss = F.binary_cross_entropy_with_logits(x, (y + 1) / 2)\n"
        ),
    ),
    Code(
        code="KLG015",
        loss="cross_entropy",
        title="soft target of cross_entropy is not probabilities",
        meaning=(
            "A float target shaped like the input gives cross_entropy a probability per "
            "class: each row >= 0, summing to 1 (mixup, cutmix, label smoothing, a teacher's "
            "softmax). Log-probabilities or raw teacher logits as target have negative "
            "values, and the loss rewards the wrong classes; multi-hot rows (several labels, "
            "summing to 2 or more) scale the loss and are binary_cross_entropy_with_logits's "
            "job. Said for a value below 0, or a row summing above 1.1 (correct rows sum to 1 "
            "within 0.009 in bfloat16). Rows summing below 1 are parts of a distribution, "
            "and silent."
        ),
        cause="a teacher's log_softmax or logits as target; multi-hot labels",
        fix="`target.exp()`, `F.softmax(t, 1)`; BCE-with-logits for multi-hot",
        wrong=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)  # student and teacher logits\n"
            "loss = F.cross_entropy(s, F.log_softmax(t, dim=1))\n"
        ),
        right=(
            "torch.manual_seed(0)\n"
            "s, t = torch.randn(8, 5), torch.randn(8, 5)  # student and teacher logits\n"
            "loss = F.cross_entropy(s, F.softmax(t, dim=1))\n"
        ),
    ),
)

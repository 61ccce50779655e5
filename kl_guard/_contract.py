"""What a loss expects, torch-free: its entry points, its parameters, which argument in which space.

The runtime guard (``_arguments``, ``_classify``, ``_diagnosis``, ``_patch``)
and the static linter (``_lint``) read the same :class:`LossContract`, as
they read the same words (``_words``) and codes (``_codes``). A loss is
added by describing its contract here, not by copying modules.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Space(enum.Enum):
    """What the values of a tensor along one dimension look like.

    The two "part of a distribution" spaces are slices of a distribution
    normalized over more classes than the tensor holds: a rank's shard of a
    vocabulary-parallel softmax, the teacher's top-k gathered without
    renormalizing. Their rows sum to less than 1 (logsumexp below 0), which
    the misuses kl_guard looks for do not: probabilities passed as
    log-probabilities have a logsumexp of at least log(C) + 1/C over C >= 2
    classes, raw logits have positive values. A target scaled below 1 by
    mistake looks like a slice, and is let through.
    """

    PROB = "probabilities"
    SUBPROB = "part of a distribution: probabilities whose rows sum to less than 1"
    LOGPROB = "log-probabilities"
    SUBLOGPROB = "part of a distribution: log-probabilities whose logsumexp is below 0"
    NONNEG = "non-negative scores that are not normalized"
    NONPOS = "non-positive log-scores that are not normalized"
    SIGNED = "raw logits (values of both signs, not normalized)"
    UNKNOWN = "unknown"

    @property
    def normalized(self) -> bool:
        return self in (Space.PROB, Space.LOGPROB)

    @property
    def partial(self) -> bool:
        return self in (Space.SUBPROB, Space.SUBLOGPROB)


PROBS = frozenset({Space.PROB, Space.SUBPROB})
LOG_PROBS = frozenset({Space.LOGPROB, Space.SUBLOGPROB})


@dataclasses.dataclass(frozen=True, eq=False)  # one object each: compared by identity
class Argument:
    """A tensor argument and the space it must be in; ``flag``, when given,
    names the boolean parameter that moves it to ``flagged`` when true.
    ``misuse`` maps each space that is certainly wrong there to the code that
    says so (the loss family's rules read it; KL's own are in ``_diagnosis``)."""

    name: str
    space: Space
    flag: str | None = None
    flagged: Space | None = None
    misuse: Mapping[Space, str] = dataclasses.field(default_factory=dict)

    def expected(self, flags: Mapping[str, object]) -> Space:
        """The space this argument must be in for a call with these ``flags``."""
        if self.flag is not None and self.flagged is not None and flags.get(self.flag):
            return self.flagged
        return self.space


@dataclasses.dataclass(frozen=True, eq=False)  # one object each: compared by identity
class LossContract:
    """One loss: where it is called from and what its arguments must hold.

    ``parameters`` is the functional form's order (the constructor's is the
    same without the tensors, which the module's call takes), ``op`` the
    order of the ATen op torch exposes, whose reduction is an enum.
    """

    name: str
    module: str  # the nn.Module class, in torch.nn.modules.loss
    parameters: tuple[str, ...]
    defaults: Mapping[str, object]
    arguments: tuple[Argument, ...]
    op_parameters: tuple[str, ...] = ()
    op_defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    #: the deprecated pair that overrides ``reduction`` whenever either is given
    legacy: tuple[str, ...] = ("size_average", "reduce")
    #: what the loss applies to its input itself (None: nothing)
    applies: str | None = None
    #: the codes the runtime guard reports for this loss: one patched only where
    #: a layer selects one of them
    codes: tuple[str, ...] = ()
    #: the class dimension holds the distribution (else the loss is elementwise)
    classes: bool = True

    @property
    def function(self) -> str:
        """The functional form's qualified name, as the linter resolves it."""
        return f"torch.nn.functional.{self.name}"

    @property
    def module_names(self) -> frozenset[str]:
        """The module class's qualified names, under each of torch's re-exports."""
        return frozenset(
            f"{path}{self.module}"
            for path in ("torch.nn.", "torch.nn.modules.", "torch.nn.modules.loss.")
        )

    @property
    def tensors(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arguments)

    @property
    def module_parameters(self) -> tuple[str, ...]:
        """The constructor's: the function's less the tensors (the module's call takes them)."""
        return tuple(p for p in self.parameters if p not in self.tensors)

    def argument(self, name: str) -> Argument:
        return next(a for a in self.arguments if a.name == name)


KL_DIV = LossContract(
    name="kl_div",
    module="KLDivLoss",
    parameters=("input", "target", "size_average", "reduce", "reduction", "log_target"),
    defaults={"size_average": None, "reduce": None, "reduction": "mean", "log_target": False},
    arguments=(
        Argument("input", Space.LOGPROB),
        Argument("target", Space.PROB, flag="log_target", flagged=Space.LOGPROB),
    ),
    # torch.kl_div(input, target, reduction=1, *, log_target=False)
    op_parameters=("input", "target", "reduction"),
    op_defaults={"reduction": 1, "log_target": False},
    codes=tuple(f"KLG00{n}" for n in range(1, 10)),
)

# The loss family. ``misuse`` is what the linter reads from the source (a
# softmax or a sigmoid, NONNEG); the runtime reads values, and reports only
# where the evidence (docs/evidence.md) separates misuse from correct code.
_TARGET = Argument("target", Space.UNKNOWN)  # class indices, or soft targets

NLL_LOSS = LossContract(
    name="nll_loss",
    module="NLLLoss",
    parameters=(
        "input",
        "target",
        "weight",
        "size_average",
        "ignore_index",
        "reduce",
        "reduction",
    ),
    defaults={"weight": None, "ignore_index": -100, "reduction": "mean"},
    arguments=(
        Argument("input", Space.LOGPROB, misuse={Space.PROB: "KLG011", Space.NONNEG: "KLG011"}),
        _TARGET,
    ),
    codes=("KLG011",),
)

CROSS_ENTROPY = LossContract(
    name="cross_entropy",
    module="CrossEntropyLoss",
    # nll_loss's, and label smoothing: cross_entropy is log_softmax and nll_loss in one
    parameters=(*NLL_LOSS.parameters, "label_smoothing"),
    defaults={**NLL_LOSS.defaults, "label_smoothing": 0.0},
    # raw logits; log-probabilities are correct too (cross_entropy normalizes again)
    arguments=(
        Argument("input", Space.SIGNED, misuse={Space.PROB: "KLG010", Space.NONNEG: "KLG010"}),
        Argument("target", Space.PROB),  # soft targets; class indices have no space
    ),
    applies="log_softmax",
    codes=("KLG010", "KLG013", "KLG015"),
)

# a probability per element: labels in {0, 1}, soft labels, resized masks
_BINARY_TARGET = Argument("target", Space.PROB)

BCE_WITH_LOGITS = LossContract(
    name="binary_cross_entropy_with_logits",
    module="BCEWithLogitsLoss",
    parameters=(
        "input",
        "target",
        "weight",
        "size_average",
        "reduce",
        "reduction",
        "pos_weight",
    ),
    defaults={"weight": None, "reduction": "mean", "pos_weight": None},
    arguments=(
        Argument("input", Space.SIGNED, misuse={Space.NONNEG: "KLG012", Space.PROB: "KLG012"}),
        _BINARY_TARGET,
    ),
    applies="the sigmoid",
    codes=("KLG012", "KLG014"),
    classes=False,
)

#: The losses the linter reads by their contract alone (KL has rules of its own).
FAMILY = (CROSS_ENTROPY, NLL_LOSS, BCE_WITH_LOGITS)
#: Every loss the runtime guard patches. binary_cross_entropy is not one: torch
#: raises itself on any input or target outside [0, 1] (NaN too), in every dtype
#: and reduction, on 2.6 to 2.15 (docs/evidence.md, question 5).
CONTRACTS = (KL_DIV, *FAMILY)

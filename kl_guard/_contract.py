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


@dataclasses.dataclass(frozen=True)
class Argument:
    """A tensor argument and the space it must be in; ``flag``, when given,
    names the boolean parameter that moves it to ``flagged`` when true."""

    name: str
    space: Space
    flag: str | None = None
    flagged: Space | None = None

    def expected(self, flags: Mapping[str, object]) -> Space:
        """The space this argument must be in for a call with these ``flags``."""
        if self.flag is not None and self.flagged is not None and flags.get(self.flag):
            return self.flagged
        return self.space


@dataclasses.dataclass(frozen=True)
class LossContract:
    """One loss: where it is called from and what its arguments must hold.

    ``parameters`` is the functional form's order, ``module_parameters`` the
    constructor's (the module's call takes the tensors only), ``op`` the
    order of the ATen op torch exposes, whose reduction is an enum.
    """

    name: str
    module: str  # the nn.Module class, in torch.nn.modules.loss
    parameters: tuple[str, ...]
    defaults: Mapping[str, object]
    module_parameters: tuple[str, ...]
    op_parameters: tuple[str, ...]
    op_defaults: Mapping[str, object]
    arguments: tuple[Argument, ...]
    #: the deprecated pair that overrides ``reduction`` whenever either is given
    legacy: tuple[str, ...] = ("size_average", "reduce")

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

    def argument(self, name: str) -> Argument:
        return next(a for a in self.arguments if a.name == name)


KL_DIV = LossContract(
    name="kl_div",
    module="KLDivLoss",
    parameters=("input", "target", "size_average", "reduce", "reduction", "log_target"),
    defaults={"size_average": None, "reduce": None, "reduction": "mean", "log_target": False},
    module_parameters=("size_average", "reduce", "reduction", "log_target"),
    # torch.kl_div(input, target, reduction=1, *, log_target=False)
    op_parameters=("input", "target", "reduction"),
    op_defaults={"reduction": 1, "log_target": False},
    arguments=(
        Argument("input", Space.LOGPROB),
        Argument("target", Space.PROB, flag="log_target", flagged=Space.LOGPROB),
    ),
)

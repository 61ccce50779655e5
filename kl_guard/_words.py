"""What each finding says: the headlines and fixes that the runtime guard and the linter share.

Torch-free. ``_diagnosis`` (the runtime) and ``_lint._rules`` (the linter)
both word a misuse from here, so a code reads alike wherever it is found;
``tests/test_words.py`` ties the two for every code both can report.
"""

from __future__ import annotations

from kl_guard._contract import LossContract, Space

# -- KLG001 -----------------------------------------------------------------

MEAN_HEADLINE = "kl_div reduction 'mean' is not the KL divergence per sample"
MEAN_DEFAULT = "reduction defaults to 'mean'"
MEAN_WRITTEN = "reduction='mean' was passed"
#: A module's reduction is read when it is called: written or by default, it
#: was set where the module was built (the runtime says where).
MEAN_MODULE = "the module's reduction is 'mean'"
MEAN_MODULE_DEFAULT = f"{MEAN_MODULE} (nn.KLDivLoss's default)"
#: Code that multiplied a 'mean' loss by the number of classes to get the KL
#: per sample back must drop the factor with the switch.
MEAN_COMPENSATED = "drop any * num_classes that made up for 'mean'"


def legacy_source(size_average: object, reduce: object, resolved: str) -> str:
    """How the deprecated pair resolves, as the evidence says it."""
    source = (
        f"the deprecated size_average={size_average!r}, reduce={reduce!r} "
        f"resolve to reduction={resolved!r}"
    )
    if isinstance(reduce, str) or isinstance(size_average, str):
        source += " (a string there is only truthy; it is not a reduction)"
    return source


# -- KLG002 -----------------------------------------------------------------

LOG_TARGET_MEANS = (
    "log_target=True means the target holds log-probabilities; "
    "log_target=False (the default) means probabilities"
)


def log_target_headline(log_target: bool, space: Space) -> str:
    return f"kl_div was called with log_target={log_target} but the target looks like {space.value}"


# -- KLG003 -----------------------------------------------------------------

SWAPPED_HEADLINE = (
    "input and target of kl_div look swapped: input is probabilities, target is log-probabilities"
)
SWAPPED_MEANS = "kl_div(input, target) wants input = log q (the model), target = p (the reference)"
_INPUT_LOOKS_LIKE = {
    Space.PROB: "probabilities (softmax output?), not log-probabilities",
    Space.SUBPROB: "probabilities (part of a softmax output?), not log-probabilities",
    Space.NONNEG: "non-negative scores that are not normalized, not log-probabilities",
    Space.NONPOS: "log-scores that do not normalize (logsumexp is above 0)",
    Space.SIGNED: "raw logits, not log-probabilities",
}


def input_headline(space: Space) -> str:
    return f"input to kl_div looks like {_INPUT_LOOKS_LIKE[space]}"


def log_softmax_input(dim: object) -> str:
    return f"F.log_softmax(logits, dim={dim})"


# -- KLG010, KLG011, KLG012: the loss family's input ---------------------------

_FAMILY_LOOKS = {
    Space.PROB: "probabilities (softmax output?)",
    Space.NONNEG: "probabilities (sigmoid output?)",
    Space.SIGNED: "raw logits",
}
_FAMILY_WANTS = {Space.SIGNED: "logits", Space.LOGPROB: "log-probabilities"}


def family_input_headline(loss: LossContract, space: Space) -> str:
    """The input of ``loss`` looks like ``space``, not what its contract wants."""
    wanted = _FAMILY_WANTS[loss.argument("input").space]
    return f"input to {loss.name} looks like {_FAMILY_LOOKS[space]}, not {wanted}"


def family_input_fix(loss: LossContract) -> str:
    if loss.applies is None:
        return f"F.log_softmax(x, dim=...) as the input of {loss.name}, or F.cross_entropy(x, y)"
    return f"pass the logits: {loss.name} applies {loss.applies} itself"


def family_misplaced_headline(loss: LossContract, what: str, wrong: object, right: object) -> str:
    return f"input to {loss.name} looks like {what} over dim {wrong}, not the class dim {right}"


CROSS_ENTROPY_APPLIES = (
    "probabilities are normalized a second time: the loss is bounded below, far from 0 "
    "for a perfect model, and the gradients are weaker"
)
NLL_LOSS_TAKES = (
    "nll_loss returns minus the input at the target's class: it must be log-probabilities "
    "(log_softmax's output), whose values are all <= 0"
)
BCE_WITH_LOGITS_APPLIES = (
    "sigmoid outputs are squashed a second time: every probability the loss implies lies "
    "in [0.5, 0.73]"
)

# -- KLG013: cross_entropy over one class ------------------------------------

ONE_CLASS_HEADLINE = "cross_entropy over a single class: the loss is 0 whatever the model does"
ONE_CLASS_FIX = (
    "a binary problem with one logit per sample: F.binary_cross_entropy_with_logits(x[:, 0], "
    "y.float()); or give the head 2 outputs for cross_entropy"
)

# -- KLG014: a binary target outside [0, 1] ----------------------------------


def binary_target_headline(loss: str) -> str:
    return f"target of {loss} is outside [0, 1]"


BINARY_TARGET_MEANS = (
    "binary cross-entropy wants a probability per element (labels 0 and 1): other values "
    "make a loss that is not minimized where the model is right, and can go below 0"
)


def binary_target_fix(lo: float, hi: float) -> str:
    if hi > 2:
        return "scale the target to [0, 1]: a mask in {0, 255} is mask / 255 (or mask > 0)"
    if lo < 0:
        return "labels in {-1, 1} are (y + 1) / 2 in {0, 1}"
    return "bring the target into [0, 1]"


# -- KLG015: a soft target of cross_entropy that is not probabilities ---------

SOFT_TARGET_MEANS = (
    "a float target shaped like the input is read as probabilities per class: each row "
    "must be >= 0 and sum to 1 (or less, for part of a distribution)"
)


def soft_target_headline(log_probabilities: bool) -> str:
    if log_probabilities:
        return "soft target of cross_entropy looks like log-probabilities, not probabilities"
    return "soft target of cross_entropy has negative values: not probabilities"


def soft_target_fix(log_probabilities: bool) -> str:
    if log_probabilities:
        return "pass target.exp(), or the softmax that made the log-probabilities"
    return "pass F.softmax(teacher_logits, dim=1) as the target, not the logits"


MULTI_HOT_HEADLINE = (
    "soft target of cross_entropy has rows summing above 1: several labels per sample"
)
MULTI_HOT_FIX = (
    "for several labels per sample, F.binary_cross_entropy_with_logits(x, multi_hot); "
    "for a mixture, normalize: target / target.sum(dim=1, keepdim=True)"
)

# -- KLG006 -----------------------------------------------------------------


def misplaced_headline(wrong: object, right: object) -> str:
    return (
        f"a distribution passed to kl_div is normalized over dim {wrong}, "
        f"not over the class dim {right}"
    )


def misplaced_fix(function: str, wrong: object, right: object) -> str:
    return f"F.{function}(x, dim={right}) instead of F.{function}(x, dim={wrong})"


# -- KLG009 -----------------------------------------------------------------


def _computes(resolved: str, divided: bool) -> str:
    return f"torch computes {resolved!r}" + (", then divides by the batch size" if divided else "")


def override_headline(reduction: object, resolved: str, divided: bool = False) -> str:
    return (
        f"the deprecated size_average/reduce arguments override reduction={reduction!r}: "
        + _computes(resolved, divided)
    )


def override_evidence(
    size_average: object, reduce: object, reduction: object, resolved: str, divided: bool = False
) -> tuple[str, ...]:
    """What was written and what torch computes instead."""
    written = ", ".join(
        f"{name}={value!r}"
        for name, value in (("size_average", size_average), ("reduce", reduce))
        if value is not None
    )
    out: tuple[str, ...] = (
        f"written: {written}, reduction={reduction!r}",
        _computes(resolved, divided)
        + (
            ": size_average and reduce decide the reduction whenever either is given, "
            + ("and 'batchmean' only adds its division" if divided else "and reduction is ignored")
        ),
    )
    if resolved == "mean":
        out += ("'mean' also divides by the number of classes (see KLG001)",)
    return out


OVERRIDE_FIX = "drop size_average and reduce; keep reduction"

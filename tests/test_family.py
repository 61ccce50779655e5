"""The loss family end to end: cross_entropy, nll_loss and BCE-with-logits, patched and checked.

Each misuse through ``F.<loss>`` and ``nn.<Loss>()``, found with its code at
the user's line; the correct idioms beside them silent; which losses are
patched by the codes selected; references cached before ``install()``; the
calls counted.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import marked_line
from kl_guard import _patch
from kl_guard._contract import BCE_WITH_LOGITS, CROSS_ENTROPY, NLL_LOSS, LossContract

#: torch's own functions, captured before any test installs kl_guard; in a dict,
#: since install() points module globals that hold them at its wrappers.
ORIGINAL = {c.name: getattr(F, c.name) for c in (CROSS_ENTROPY, NLL_LOSS, BCE_WITH_LOGITS)}
CE_CODES = ["KLG010", "KLG013", "KLG015"]
HERE = "tests/test_family.py"

Tensors = tuple[torch.Tensor, torch.Tensor]


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def labels(classes: int, *shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(classes, shape, generator=torch.Generator().manual_seed(seed))


def loss(api: str, contract: LossContract, **options: object) -> Callable[..., torch.Tensor]:
    """The loss as the user calls it: ``F.<name>`` with ``options``, or ``nn.<Loss>(**options)``.
    Made while kl_guard is on: a partial keeps the function it was given."""
    if api == "function":
        return functools.partial(getattr(F, contract.name), **options)
    module: Callable[..., torch.Tensor] = getattr(nn, contract.module)(**options)
    return module


@dataclasses.dataclass(frozen=True)
class Idiom:
    id: str
    loss: LossContract
    make: Callable[[], Tensors]
    options: dict[str, object] = dataclasses.field(default_factory=dict)
    code: str | None = None  # None: correct, silent


def sigmoid_pair() -> Tensors:
    z = randn(64, 8, scale=12)  # a confident model's logits
    return torch.sigmoid(z), (z > 0).float()


def binary(scale: float = 1.0, shift: float = 0.0) -> Tensors:
    z = randn(64, 8)
    return z, (z > 0).float() * scale + shift


def bicubic_mask() -> Tensors:
    """A binary mask resized by bicubic interpolation: it overshoots [0, 1]."""
    mask = (randn(1, 1, 8, 8, seed=2) > 0).float()
    resized = F.interpolate(mask, scale_factor=4, mode="bicubic", align_corners=False)
    assert -0.5 < resized.min() < 0 and 1 < resized.max() < 1.5
    return randn(*resized.shape), resized


def padded_255() -> Tensors:
    """Labels in {0, 1}, and 255 where the weight is 0 (padding)."""
    z, y = binary()
    y[:, 6:] = 255
    return z, y


def simclr() -> Tensors:
    """SimCLR's logits: cosine similarities / 0.1, -inf on the diagonal; each view's pair."""
    z = F.normalize(randn(16, 32), dim=1)
    sim = z @ z.T / 0.1
    sim.fill_diagonal_(-torch.inf)
    return sim, (torch.arange(16) + 8) % 16


def top_k_log_probabilities(x: torch.Tensor, k: int) -> torch.Tensor:
    """log of the probabilities renormalized over the top k: -inf elsewhere."""
    probs = F.softmax(x, dim=1)
    top = probs.topk(k, dim=1)
    kept = torch.zeros_like(probs).scatter(1, top.indices, top.values)
    return (kept / kept.sum(1, keepdim=True)).log()


WEIGHT_PADDING = torch.tensor([1.0] * 6 + [0.0] * 2)

MISUSES = [
    Idiom(
        "ce-softmax",
        CROSS_ENTROPY,
        lambda: (F.softmax(randn(16, 10), dim=1), labels(10, 16)),
        code="KLG010",
    ),
    Idiom(
        "ce-softmax-over-batch",
        CROSS_ENTROPY,
        lambda: (F.softmax(randn(16, 10), dim=0), labels(10, 16)),
        code="KLG010",
    ),
    Idiom(
        "ce-softmax-over-time",  # [B, C, T] normalized over T
        CROSS_ENTROPY,
        lambda: (F.softmax(randn(4, 10, 7), dim=-1), labels(10, 4, 7)),
        code="KLG010",
    ),
    Idiom(
        "ce-softmax-two-classes",
        CROSS_ENTROPY,
        lambda: (F.softmax(randn(32, 2), dim=1), labels(2, 32)),
        code="KLG010",
    ),
    Idiom(
        "ce-softmax-vocabulary-bf16",
        CROSS_ENTROPY,
        lambda: (F.softmax(randn(2, 152_064, scale=3).bfloat16(), dim=1), labels(152_064, 2)),
        code="KLG010",
    ),
    Idiom(
        "ce-softmax-simclr",
        CROSS_ENTROPY,
        lambda: (F.softmax(simclr()[0], dim=1), simclr()[1]),
        code="KLG010",
    ),
    Idiom(
        "nll-probabilities",
        NLL_LOSS,
        lambda: (F.softmax(randn(16, 10), dim=1), labels(10, 16)),
        code="KLG011",
    ),
    Idiom(
        "nll-sigmoid",
        NLL_LOSS,
        lambda: (torch.sigmoid(randn(16, 10)), labels(10, 16)),
        code="KLG011",
    ),
    Idiom(
        "nll-softmax-large-vocabulary",  # every probability below the tolerance
        NLL_LOSS,
        lambda: (F.softmax(randn(4, 32_000), dim=1), labels(32_000, 4)),
        code="KLG011",
    ),
    Idiom(
        "nll-sigmoid-prior-bf16",  # sigmoid outputs near 0.01: below bf16's tolerance
        NLL_LOSS,
        lambda: (torch.sigmoid(randn(16, 10, scale=0.1) - 4.6).bfloat16(), labels(10, 16)),
        code="KLG011",
    ),
    Idiom("nll-logits", NLL_LOSS, lambda: (randn(16, 10), labels(10, 16)), code="KLG011"),
    Idiom(
        "nll-log-softmax-over-batch",
        NLL_LOSS,
        lambda: (F.log_softmax(randn(16, 10), dim=0), labels(10, 16)),
        code="KLG011",
    ),
    Idiom(
        "nll-log-softmax-over-time",
        NLL_LOSS,
        lambda: (F.log_softmax(randn(4, 10, 7), dim=-1), labels(10, 4, 7)),
        code="KLG011",
    ),
    Idiom("bce-sigmoid", BCE_WITH_LOGITS, sigmoid_pair, code="KLG012"),
    Idiom(
        "ce-one-class-index",
        CROSS_ENTROPY,
        lambda: (randn(8, 1), torch.zeros(8, dtype=torch.long)),
        code="KLG013",
    ),
    Idiom(
        "ce-one-class-float",
        CROSS_ENTROPY,
        lambda: (randn(8, 1), labels(2, 8, 1).float()),
        code="KLG013",
    ),
    Idiom("bce-target-minus-one", BCE_WITH_LOGITS, lambda: binary(2.0, -1.0), code="KLG014"),
    Idiom("bce-target-255", BCE_WITH_LOGITS, lambda: binary(255.0), code="KLG014"),
    Idiom(
        "bce-target-255-sum",
        BCE_WITH_LOGITS,
        lambda: binary(255.0),
        {"reduction": "sum"},
        code="KLG014",
    ),
    Idiom(
        "ce-log-probability-target",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), F.log_softmax(randn(16, 10, seed=1), dim=1)),
        code="KLG015",
    ),
    Idiom(
        "ce-logit-target",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), randn(16, 10, seed=1)),
        code="KLG015",
    ),
    Idiom(
        "ce-multi-hot-target",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), (randn(16, 10, seed=1) > 0.5).float()),
        code="KLG015",
    ),
]

CORRECT = [
    Idiom("ce-logits", CROSS_ENTROPY, lambda: (randn(16, 10), labels(10, 16))),
    Idiom(
        "ce-log-softmax", CROSS_ENTROPY, lambda: (F.log_softmax(randn(16, 10), 1), labels(10, 16))
    ),
    Idiom(
        "ce-soft-target",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), F.softmax(randn(16, 10, seed=1), dim=1)),
    ),
    Idiom(
        "ce-empty-batch",
        CROSS_ENTROPY,
        lambda: (randn(0, 10), torch.zeros(0, dtype=torch.long)),
    ),
    Idiom(
        "ce-every-row-ignored",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), torch.full((16,), 255)),
        {"ignore_index": 255},
    ),
    Idiom("ce-simclr", CROSS_ENTROPY, simclr),
    Idiom(
        "ce-vocabulary-bf16",
        CROSS_ENTROPY,
        lambda: (randn(2, 152_064, scale=3).bfloat16(), labels(152_064, 2)),
    ),
    Idiom(
        "ce-teacher-bf16",
        CROSS_ENTROPY,
        lambda: (randn(16, 10), F.softmax(randn(16, 10, seed=1).bfloat16(), dim=1).float()),
    ),
    Idiom(
        "nll-log-top-k",  # -inf outside the top 3
        NLL_LOSS,
        lambda: (top_k_log_probabilities(randn(16, 10), 3), labels(3, 16)),
    ),
    Idiom(
        "nll-class-subset",
        NLL_LOSS,
        lambda: (F.log_softmax(randn(16, 10), dim=1)[:, :4], labels(4, 16)),
    ),
    Idiom("nll-log-softmax", NLL_LOSS, lambda: (F.log_softmax(randn(16, 10), 1), labels(10, 16))),
    Idiom("bce-logits", BCE_WITH_LOGITS, binary),
    Idiom("bce-bicubic-mask", BCE_WITH_LOGITS, bicubic_mask),
    Idiom("bce-target-255-none", BCE_WITH_LOGITS, lambda: binary(255.0), {"reduction": "none"}),
    Idiom("bce-target-255-weight-0", BCE_WITH_LOGITS, padded_255, {"weight": WEIGHT_PADDING}),
]


def by_id(idioms: list[Idiom]) -> list[object]:
    return [pytest.param(i, id=i.id) for i in idioms]


API = pytest.mark.parametrize("api", ["function", "module"])


@API
@pytest.mark.parametrize("idiom", by_id(MISUSES))
def test_each_misuse_raises_with_its_code_at_the_users_line(idiom: Idiom, api: str) -> None:
    input, target = idiom.make()
    with kl_guard.guard(mode="raise", check_every=1):
        criterion = loss(api, idiom.loss, **idiom.options)
        with pytest.raises(kl_guard.KLGuardError) as info:
            criterion(input, target)  # raises here
    line = marked_line(__file__, "raises here")
    assert [(f.code, f.location) for f in info.value.findings] == [(idiom.code, f"{HERE}:{line}")]


@API
@pytest.mark.parametrize("idiom", by_id(MISUSES))
def test_each_misuse_warns_at_the_users_line(idiom: Idiom, api: str) -> None:
    input, target = idiom.make()
    with kl_guard.guard(check_every=1), pytest.warns(kl_guard.KLGuardWarning) as record:
        loss(api, idiom.loss, **idiom.options)(input, target)  # warns here
    [warning] = record
    assert warning.category is getattr(kl_guard, f"{idiom.code}Warning")
    line = marked_line(__file__, "warns here")
    assert (warning.filename, warning.lineno) == (__file__, line)
    message = str(warning.message).splitlines()
    assert message[0].startswith(f"{idiom.code}: ")
    assert message[-1] == f"  at: {HERE}:{line}"


@API
@pytest.mark.parametrize("idiom", by_id(CORRECT))
def test_correct_idioms_are_silent(idiom: Idiom, api: str) -> None:
    input, target = idiom.make()
    with kl_guard.guard(mode="raise", check_every=1) as g:
        loss(api, idiom.loss, **idiom.options)(input, target)
    assert (g.findings, g.counts) == ([], kl_guard.Counts(seen=1, checked=1))


def test_keyword_arguments_are_bound_by_name() -> None:
    x, y = randn(16, 10), labels(10, 16)
    with kl_guard.guard(mode="log", check_every=1) as g:
        F.cross_entropy(target=y, input=F.softmax(x, dim=1))
        F.nll_loss(F.log_softmax(x, 1), y, None, None, -100, None, "sum")
        F.binary_cross_entropy_with_logits(*binary(255.0), reduction="none")
    assert [f.code for f in g.findings] == ["KLG010"]


def test_a_modules_reduction_is_read_from_the_module() -> None:
    z, y = binary(255.0)
    with kl_guard.guard(mode="raise", check_every=1):
        nn.BCEWithLogitsLoss(reduction="none")(z, y)
        with pytest.raises(kl_guard.KLGuardError, match="KLG014"):
            nn.BCEWithLogitsLoss(weight=torch.ones(8))(z, y)


def test_a_zero_weight_hides_only_the_elements_it_covers() -> None:
    z, y = padded_255()
    y[0, 0] = 255  # one counted element out of range
    with kl_guard.guard(mode="raise", check_every=1), pytest.raises(kl_guard.KLGuardError) as info:
        F.binary_cross_entropy_with_logits(z, y, weight=WEIGHT_PADDING)
    [finding] = info.value.findings
    assert finding.code == "KLG014"
    assert "values 0..255 where the weight is not 0" in finding.message


# --- which losses are patched ---------------------------------------------------------


def patched() -> set[str]:
    return {c.name for c in _patch.PATCH.losses}


def test_ignoring_every_cross_entropy_code_leaves_it_unpatched() -> None:
    probabilities, y = F.softmax(randn(16, 10), dim=1), labels(10, 16)
    kl_guard.install(mode="raise", check_every=1, ignore=CE_CODES)
    assert patched() == {"kl_div", "nll_loss", "binary_cross_entropy_with_logits"}
    assert F.cross_entropy is ORIGINAL["cross_entropy"]
    F.cross_entropy(probabilities, y)  # torch's own function: nothing to say
    nn.CrossEntropyLoss()(probabilities, y)
    assert kl_guard.counts() == kl_guard.Counts()
    with pytest.raises(kl_guard.KLGuardError, match="KLG011"):
        F.nll_loss(probabilities, y)  # the others stay checked

    # a guard that selects one of its codes patches it while it runs
    with kl_guard.guard(select=["KLG010"], ignore=[]):
        assert "cross_entropy" in patched()
        assert F.cross_entropy is not ORIGINAL["cross_entropy"]
        with pytest.raises(kl_guard.KLGuardError, match="KLG010"):
            F.cross_entropy(probabilities, y)
    # and it stays patched until the last layer ends (a reference taken meanwhile stays
    # checked), reporting nothing the install ignores
    assert "cross_entropy" in patched()
    F.cross_entropy(probabilities, y)

    kl_guard.install(ignore=[])  # selected again
    assert "cross_entropy" in patched()
    with pytest.raises(kl_guard.KLGuardError, match="KLG010"):
        nn.CrossEntropyLoss()(probabilities, y)
    kl_guard.uninstall()
    assert F.cross_entropy is ORIGINAL["cross_entropy"]


def test_ignoring_some_codes_of_a_loss_keeps_it_patched_for_the_others() -> None:
    with kl_guard.guard(mode="raise", check_every=1, ignore=["KLG010"]):
        assert "cross_entropy" in patched()
        F.cross_entropy(F.softmax(randn(16, 10), dim=1), labels(10, 16))
        with pytest.raises(kl_guard.KLGuardError, match="KLG013"):
            F.cross_entropy(randn(8, 1), torch.zeros(8, dtype=torch.long))


def test_selecting_only_kl_div_codes_patches_no_family_loss() -> None:
    with kl_guard.guard(select=["KLG003"]):
        assert patched() == {"kl_div"}
        assert [getattr(F, name) for name in ORIGINAL] == list(ORIGINAL.values())


# --- references taken before install --------------------------------------------------

SOURCE = """\
from torch.nn.functional import cross_entropy, nll_loss


def classify(logits, labels):
    return cross_entropy(logits.softmax(1), labels)  # softmax twice


def pick(log_probs, labels):
    return nll_loss(log_probs, labels)
"""


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module of the user's, imported before kl_guard starts."""
    module = types.ModuleType("klg_user_family")
    module.__file__ = "klg_user_family.py"
    exec(compile(SOURCE, module.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_a_reference_cached_before_install_is_checked(user_module: types.ModuleType) -> None:
    assert user_module.cross_entropy is ORIGINAL["cross_entropy"]
    x, y = randn(16, 10), labels(10, 16)
    with kl_guard.guard(mode="log", check_every=1) as g:
        assert user_module.cross_entropy is F.cross_entropy
        user_module.classify(x, y)
        user_module.pick(x, y)
    assert [(f.code, f.location) for f in g.findings] == [
        ("KLG010", "klg_user_family.py:5"),
        ("KLG011", "klg_user_family.py:9"),
    ]
    assert user_module.cross_entropy is ORIGINAL["cross_entropy"]
    assert user_module.nll_loss is ORIGINAL["nll_loss"]


def test_a_reference_to_a_loss_not_patched_stays_torchs(user_module: types.ModuleType) -> None:
    with kl_guard.guard(ignore=CE_CODES):
        assert user_module.cross_entropy is ORIGINAL["cross_entropy"]
        assert user_module.nll_loss is F.nll_loss is not ORIGINAL["nll_loss"]


# --- counts ---------------------------------------------------------------------------


def test_the_family_calls_are_counted() -> None:
    x, y = randn(16, 10), labels(10, 16)
    with kl_guard.guard(mode="log", check_every=1) as g:
        for _ in range(3):
            F.cross_entropy(x, y)
        nn.NLLLoss()(F.log_softmax(x, 1), y)
        F.binary_cross_entropy_with_logits(*binary())
    assert g.counts == kl_guard.Counts(seen=5, checked=5)
    assert g.findings == []


def test_calls_let_through_by_the_schedule_are_seen_not_checked() -> None:
    x, y = randn(16, 10), labels(10, 16)
    with kl_guard.guard(mode="log", check_every=4) as g:
        for _ in range(8):
            F.cross_entropy(F.softmax(x, dim=1), y)  # one site, checked every 4th call
    assert g.counts == kl_guard.Counts(seen=8, checked=2)
    [finding] = g.findings
    assert (finding.code, finding.count) == ("KLG010", 2)


def test_install_counts_family_calls_with_kl_div() -> None:
    x, y = randn(16, 10), labels(10, 16)
    kl_guard.install(mode="log", check_every=1)
    F.cross_entropy(x, y)
    F.kl_div(F.log_softmax(x, 1), F.softmax(x, 1), reduction="batchmean")
    assert kl_guard.counts() == kl_guard.Counts(seen=2, checked=2)

"""KLG009: a deprecated ``size_average``/``reduce`` that overrides a written ``reduction``.

torch lets the legacy pair decide whenever either is given, so
``nn.KLDivLoss(size_average=False, reduction="batchmean")`` sums. kl_guard
reports it at the ``F.kl_div`` call, where an ``nn.KLDivLoss`` is built (the
module's reduction is fixed there), in compiled code, and in the linter, whose
unsafe fix drops the legacy keywords. A legacy argument alone, or one that
agrees with ``reduction``, computes what it says and stays as it was.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lint_helpers import HEADER, findings
from torch import nn

import kl_guard
from helpers import ORIGINAL, good, logits, marked_line
from kl_guard._cli import main
from kl_guard._lint._model import Applicability

HERE = "tests/test_legacy_override.py"
Kwargs = dict[str, object]


def _line(marker: str) -> int:
    return marked_line(__file__, marker)


def _headline(reduction: str, resolved: str) -> str:
    return (
        f"KLG009: the deprecated size_average/reduce arguments override reduction={reduction!r}: "
        f"torch computes {resolved!r}"
    )


def _computes(resolved: str) -> str:
    return (
        f"  torch computes {resolved!r}: size_average and reduce decide the reduction whenever "
        "either is given, and reduction is ignored"
    )


FIX = "(drop size_average and reduce; keep reduction)"


def torch_kl_div(inp: torch.Tensor, tgt: torch.Tensor, reduction: str) -> torch.Tensor:
    """torch's own F.kl_div, its 'mean' warning silenced: what a reduction computes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ORIGINAL.kl_div(inp, tgt, reduction=reduction)


# -- F.kl_div ----------------------------------------------------------------------


def test_the_functional_override_is_reported_at_the_users_line() -> None:
    inp, tgt = good()
    kl_guard.install(mode="warn", check_every=1)
    with pytest.warns(kl_guard.KLGuardWarning) as record:
        loss = F.kl_div(inp, tgt, size_average=True, reduction="sum")  # averages
    [warning] = [w for w in record if issubclass(w.category, kl_guard.KLGuardWarning)]
    line = _line("averages")
    assert warning.category is kl_guard.KLG009Warning
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert str(warning.message).splitlines() == [
        _headline("sum", "mean"),
        "  written: size_average=True, reduction='sum'",
        _computes("mean"),
        "  'mean' also divides by the number of classes (see KLG001)",
        f'  fix: F.kl_div(input, target, reduction="sum") {FIX}',
        f"  at: {HERE}:{line}",
    ]
    # what the finding says torch computes, it computes; kl_guard changes nothing
    assert torch.equal(loss, torch_kl_div(inp, tgt, "mean"))


def test_the_fix_keeps_log_target() -> None:
    inp, tgt = good()
    with kl_guard.guard(mode="log", check_every=1) as block:
        F.kl_div(inp, tgt.log(), size_average=False, reduction="sum", reduce=False, log_target=True)
    [finding] = block.findings
    assert finding.message.splitlines()[1:4] == [
        "  written: size_average=False, reduce=False, reduction='sum'",
        _computes("none"),
        f'  fix: F.kl_div(input, target, reduction="sum", log_target=True) {FIX}',
    ]


#: size_average, reduce, the reduction written, and what torch computes instead
OVERRIDES = [
    (False, None, "mean", "sum"),
    (False, None, "none", "sum"),
    (None, False, "sum", "none"),
    (False, False, "mean", "none"),
    (True, True, "sum", "mean"),
    (True, None, "none", "mean"),
    (None, True, "sum", "mean"),
]
#: F.kl_div divides by the batch size after whatever reduction the legacy pair
#: chose when 'batchmean' is written; nn.KLDivLoss passes on the resolved one.
MODULE_OVERRIDES = [
    *OVERRIDES,
    (False, None, "batchmean", "sum"),
    (False, False, "batchmean", "none"),
    (None, True, "batchmean", "mean"),
]


def _legacy(size_average: object, reduce: object, reduction: object) -> Kwargs:
    """The arguments as a user writes them: those left out are not passed."""
    given = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
    return {name: value for name, value in given.items() if value is not None}


@pytest.mark.parametrize(("size_average", "reduce", "reduction", "resolved"), OVERRIDES)
def test_every_override_of_a_functional_call(
    size_average: bool | None, reduce: bool | None, reduction: str, resolved: str
) -> None:
    inp, tgt = good()
    kwargs = _legacy(size_average, reduce, reduction)
    with kl_guard.guard(mode="log", check_every=1, select="ALL") as block:
        loss = F.kl_div(inp, tgt, **kwargs)  # type: ignore[arg-type]
    assert torch.equal(loss, torch_kl_div(inp, tgt, resolved))
    # 'mean' is KLG001's business too, but one cause is one finding: KLG009's
    assert [f.code for f in block.findings] == ["KLG009"]
    _assert_override_words(block.findings[0], kwargs, reduction, resolved)


@pytest.mark.parametrize(("size_average", "reduce", "reduction", "resolved"), MODULE_OVERRIDES)
def test_every_override_of_a_module(
    size_average: bool | None, reduce: bool | None, reduction: str, resolved: str
) -> None:
    inp, tgt = good()
    kwargs = _legacy(size_average, reduce, reduction)
    with kl_guard.guard(mode="log", check_every=1, select="ALL") as block:
        criterion = nn.KLDivLoss(**kwargs)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own, for a module that computes 'mean'
        loss = criterion(inp, tgt)
    assert torch.equal(loss, torch_kl_div(inp, tgt, resolved))
    assert [f.code for f in block.findings] == ["KLG009"]
    _assert_override_words(block.findings[0], kwargs, reduction, resolved)


def _assert_override_words(
    finding: kl_guard.Finding, kwargs: Kwargs, reduction: str, resolved: str
) -> None:
    lines = finding.message.splitlines()
    assert lines[0] == _headline(reduction, resolved)
    written = ", ".join(f"{name}={value!r}" for name, value in kwargs.items())
    assert lines[1] == f"  written: {written}"
    assert lines[2] == _computes(resolved)
    mentions_klg001 = "  'mean' also divides by the number of classes (see KLG001)"
    assert (mentions_klg001 in lines) == (resolved == "mean")


def test_torch_divides_a_functional_batchmean_after_the_legacy_reduction() -> None:
    """What F.kl_div computes with 'batchmean' and a legacy argument (its body
    is the same from torch 2.6 to 2.15): the legacy pair's reduction, then
    / input.size(0). The module passes on the resolved reduction instead."""
    inp, tgt = good()
    batch = inp.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy_sum = ORIGINAL.kl_div(inp, tgt, size_average=False, reduction="batchmean")
        legacy_mean = ORIGINAL.kl_div(inp, tgt, reduce=True, reduction="batchmean")
        legacy_none = ORIGINAL.kl_div(inp, tgt, reduce=False, reduction="batchmean")
    assert torch.equal(legacy_sum, torch_kl_div(inp, tgt, "batchmean"))
    assert torch.equal(legacy_mean, torch_kl_div(inp, tgt, "mean") / batch)
    assert torch.equal(legacy_none, torch_kl_div(inp, tgt, "none") / batch)


def test_a_functional_batchmean_after_size_average_false_is_as_written() -> None:
    with kl_guard.guard(mode="log", check_every=1) as block:
        F.kl_div(*good(), size_average=False, reduction="batchmean")
    assert block.findings == []


def test_reduce_true_with_batchmean_is_klg009_only() -> None:
    """torch computes less than 'mean' here (its 'mean', / the batch size): one
    finding, which names KLG001's concern."""
    with kl_guard.guard(mode="log", check_every=1, select="ALL") as block:
        F.kl_div(*good(), reduce=True, reduction="batchmean")
    [finding] = block.findings
    assert finding.code == "KLG009"
    assert "  'mean' also divides by the number of classes (see KLG001)" in (
        finding.message.splitlines()
    )


#: arguments that compute what they say, and the codes they get
AGREEING: list[tuple[Kwargs, list[str]]] = [
    ({"size_average": False}, []),  # sums, as written
    ({"reduce": False}, []),
    ({"reduce": True}, ["KLG001"]),  # 'mean', as written: KLG001, not KLG009
    ({"size_average": True}, ["KLG001"]),
    ({"size_average": False, "reduce": True, "reduction": "sum"}, []),
    ({"reduce": False, "reduction": "none"}, []),
    ({"size_average": True, "reduction": "mean"}, ["KLG001"]),
    ({"size_average": None, "reduce": None, "reduction": "sum"}, []),  # None is not given
    ({"reduction": "batchmean"}, []),
    ({"reduction": "sum"}, []),
    ({"reduction": "mean"}, ["KLG001"]),
]


@pytest.mark.parametrize(("kwargs", "codes"), AGREEING, ids=str)
def test_arguments_that_agree_are_not_klg009(kwargs: Kwargs, codes: list[str]) -> None:
    with kl_guard.guard(mode="log", check_every=1, select="ALL") as block:
        F.kl_div(*good(), **kwargs)  # type: ignore[arg-type]
    assert [f.code for f in block.findings] == codes


@pytest.mark.parametrize(("kwargs", "codes"), AGREEING, ids=str)
def test_a_module_whose_arguments_agree_is_not_klg009(kwargs: Kwargs, codes: list[str]) -> None:
    with kl_guard.guard(mode="log", check_every=1, select="ALL") as block:
        criterion = nn.KLDivLoss(**kwargs)  # type: ignore[arg-type]
        criterion(*good())
    assert [f.code for f in block.findings] == codes


def test_positional_legacy_arguments_are_read_too() -> None:
    inp, tgt = good()
    with kl_guard.guard(mode="log", check_every=1) as block:
        F.kl_div(inp, tgt, True, None, "sum")
        nn.KLDivLoss(False, None, "mean")
    assert [f.message.splitlines()[0] for f in block.findings] == [
        _headline("sum", "mean"),
        _headline("mean", "sum"),
    ]


# -- nn.KLDivLoss: where it is built ----------------------------------------------------


def test_a_module_is_reported_where_it_is_built_once_per_line() -> None:
    kl_guard.install(mode="warn", check_every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "size_average and reduce args will be deprecated")
        criteria = [
            nn.KLDivLoss(size_average=False, reduction="mean")  # built in a loop
            for _ in range(3)
        ]
        for criterion in criteria:
            criterion(*good())
    line = _line("built in a loop")
    [warning] = record
    assert warning.category is kl_guard.KLG009Warning
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert str(warning.message).splitlines() == [
        _headline("mean", "sum"),
        "  written: size_average=False, reduction='mean'",
        _computes("sum"),
        f'  fix: nn.KLDivLoss(reduction="mean") {FIX}',
        f"  at: {HERE}:{line}",
    ]
    [finding] = kl_guard.findings()
    assert (finding.location, finding.count) == (f"{HERE}:{line}", 3)


def test_raise_mode_raises_from_the_constructor() -> None:
    kl_guard.install(mode="raise")
    with pytest.raises(kl_guard.KLGuardError) as raised:
        nn.KLDivLoss(size_average=False, reduction="batchmean", log_target=True)  # raises here
    [finding] = raised.value.findings
    assert (finding.code, finding.location) == ("KLG009", f"{HERE}:{_line('raises here')}")
    assert f'  fix: nn.KLDivLoss(reduction="batchmean", log_target=True) {FIX}' in (
        finding.message.splitlines()
    )


def test_a_comment_on_the_constructors_line_silences_it() -> None:
    with kl_guard.guard(mode="raise", check_every=1) as block:
        criterion = nn.KLDivLoss(size_average=False, reduction="mean")  # kl_guard: ignore[KLG009]
        criterion(*good())
    assert block.findings == []


def test_a_comment_for_another_code_does_not() -> None:
    with pytest.raises(kl_guard.KLGuardError), kl_guard.guard(mode="raise"):
        nn.KLDivLoss(size_average=False, reduction="mean")  # kl_guard: ignore[KLG001]


def test_ignore_silences_it() -> None:
    with kl_guard.guard(mode="raise", check_every=1, ignore="KLG009") as block:
        nn.KLDivLoss(size_average=False, reduction="mean")(*good())
        F.kl_div(*good(), size_average=True, reduction="sum")
    assert block.findings == []


def test_a_module_built_before_the_guard_is_not_reported() -> None:
    criterion = nn.KLDivLoss(size_average=False, reduction="batchmean")
    with kl_guard.guard(mode="raise", check_every=1) as block:
        criterion(*good())  # its reduction is 'sum': nothing wrong at the call
    assert block.findings == []


def test_a_module_whose_legacy_arguments_mean_mean_is_klg009_where_built() -> None:
    # The module has resolved its arguments by the time it is called: its call is
    # KLG001, true of what it computes, and points back at where it was built.
    with kl_guard.guard(mode="log", check_every=1) as block:
        criterion = nn.KLDivLoss(reduce=True, reduction="batchmean")  # mean-module built
        criterion(*good())
    built, called = block.findings
    assert (built.code, called.code) == ("KLG009", "KLG001")
    lines = called.message.splitlines()
    assert lines[1] == "  the module's reduction is 'mean'"
    assert any(f":{_line('mean-module built')}: its reduction is set there" in x for x in lines)


# -- torch.compile ------------------------------------------------------------------------


def _overridden(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_p, q, size_average=True, reduction="sum")  # compiled override


@pytest.mark.slow
def test_a_compiled_override_is_reported_at_the_call() -> None:
    torch._dynamo.reset()
    step = torch.compile(_overridden, backend="eager", fullgraph=True)
    log_p, q = good()
    with kl_guard.guard(mode="log", check_every=1) as block:
        for _ in range(2):
            loss = step(log_p, q)
    assert torch.equal(loss, torch_kl_div(log_p, q, "mean"))
    [finding] = block.findings
    assert (finding.code, finding.location) == ("KLG009", f"{HERE}:{_line('compiled override')}")
    assert finding.message.splitlines()[0] == _headline("sum", "mean")


@pytest.mark.slow
def test_a_module_built_eagerly_and_called_compiled_is_reported_where_built() -> None:
    torch._dynamo.reset()
    with kl_guard.guard(mode="log", check_every=1) as block:
        criterion = nn.KLDivLoss(size_average=False, reduction="batchmean")  # built eagerly

        def step(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            loss: torch.Tensor = criterion(F.log_softmax(s, 1), F.softmax(t, 1))
            return loss

        compiled = torch.compile(step, backend="eager", fullgraph=True)
        for seed in range(2):
            compiled(logits(4, 5, seed=seed), logits(4, 5, seed=seed + 1))
    assert [(f.code, f.location) for f in block.findings] == [
        ("KLG009", f"{HERE}:{_line('built eagerly')}")
    ]


# -- the linter -------------------------------------------------------------------------

FIRST = HEADER.count("\n") + 1  # the snippet's first line, after the header


@pytest.mark.parametrize(
    ("source", "headline"),
    [
        ('loss = F.kl_div(a, b, size_average=True, reduction="sum")\n', _headline("sum", "mean")),
        ('crit = nn.KLDivLoss(size_average=False, reduction="mean")\n', _headline("mean", "sum")),
        (  # 'mean' computed: KLG009, not KLG001 as well
            'crit = nn.KLDivLoss(reduce=True, reduction="batchmean")\n',
            _headline("batchmean", "mean"),
        ),
        ('loss = F.kl_div(a, b, True, None, "sum")\n', _headline("sum", "mean")),
        (
            "from torch.nn import KLDivLoss\n"
            "crit = KLDivLoss(\n"
            '    size_average=False,\n    reduction="sum",\n    reduce=False,\n)\n',
            _headline("sum", "none"),
        ),
    ],
    ids=["function", "module", "module computing mean", "positional", "multi-line"],
)
def test_the_linter_reports_klg009_as_the_runtime_words_it(source: str, headline: str) -> None:
    [found] = findings(source)
    assert found.code == "KLG009"
    assert f"KLG009: {found.message}" == headline
    assert found.line == FIRST + source.startswith("from")


@pytest.mark.parametrize(
    "source",
    [
        "crit = nn.KLDivLoss(size_average=False)\n",
        "loss = F.kl_div(a, b, reduce=False)\n",
        'crit = nn.KLDivLoss(size_average=False, reduce=True, reduction="sum")\n',
        'loss = F.kl_div(a, b, reduce=False, reduction="none")\n',
        'loss = F.kl_div(a, b, size_average=None, reduction="sum")\n',
        'loss = F.kl_div(a, b, reduction="batchmean")\n',
        'crit = nn.KLDivLoss(size_average=False, reduction="mean")  # kl_guard: ignore[KLG009]\n',
    ],
)
def test_the_linter_leaves_what_computes_as_written(source: str) -> None:
    assert findings(source) == []


def test_the_linter_reads_legacy_reduce_alone_as_klg001() -> None:
    assert [f.code for f in findings("loss = F.kl_div(a, b, reduce=True)\n")] == ["KLG001"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


FIXES = {
    "last": (
        'F.kl_div(a, b, reduction="sum", size_average=True)',
        'F.kl_div(a, b, reduction="sum")',
    ),
    "middle": (
        'F.kl_div(a, b, size_average=True, reduction="sum", log_target=True)',
        'F.kl_div(a, b, reduction="sum", log_target=True)',
    ),
    "first": (
        'F.kl_div(size_average=True, input=a, target=b, reduction="sum")',
        'F.kl_div(input=a, target=b, reduction="sum")',
    ),
    "both, apart": (
        'F.kl_div(a, b, reduce=False, reduction="sum", size_average=True)',
        'F.kl_div(a, b, reduction="sum")',
    ),
    "both, apart, trailing comma": (
        'F.kl_div(a, b, reduction="sum", reduce=False, log_target=True, size_average=False,)',
        'F.kl_div(a, b, reduction="sum", log_target=True,)',
    ),
    "both, together": (
        'nn.KLDivLoss(reduction="sum", size_average=True, reduce=False)',
        'nn.KLDivLoss(reduction="sum")',
    ),
    "module": (
        'nn.KLDivLoss(reduce=True, reduction="batchmean", log_target=True)',
        'nn.KLDivLoss(reduction="batchmean", log_target=True)',
    ),
    "module, then KLG001's fix": (  # without the legacy argument, 'mean' is KLG001
        'nn.KLDivLoss(size_average=False, reduction="mean")',
        'nn.KLDivLoss(reduction="batchmean")',
    ),
    "multi-line": (
        'F.kl_div(\n    a,\n    b,\n    size_average=True,  # averaged\n    reduction="sum",\n)',
        'F.kl_div(\n    a,\n    b,\n    reduction="sum",\n)',
    ),
}


@pytest.mark.parametrize(("before", "after"), list(FIXES.values()), ids=list(FIXES))
def test_unsafe_fixes_drop_the_legacy_keywords(project: Path, before: str, after: str) -> None:
    path = project / "train.py"
    path.write_text(f"{HEADER}loss = {before}\n")
    assert main(["lint", "--fix", "train.py"]) == 1  # an unsafe fix: it changes the loss
    assert path.read_text() == f"{HEADER}loss = {before}\n"
    assert main(["lint", "--fix", "--unsafe-fixes", "train.py"]) == 0
    fixed = path.read_text()
    assert fixed == f"{HEADER}loss = {after}\n"
    ast.parse(fixed)
    assert main(["lint", "train.py"]) == 0


@pytest.mark.parametrize(
    "call",
    [
        'F.kl_div(a, b, True, None, "sum")',
        'F.kl_div(a, b, False, reduce=False, reduction="sum")',
        'nn.KLDivLoss(False, None, "mean")',
    ],
)
def test_positional_legacy_arguments_get_no_fix(
    project: Path, capsys: pytest.CaptureFixture[str], call: str
) -> None:
    source = f"{HEADER}loss = {call}\n"
    [found] = findings(f"loss = {call}\n")
    assert (found.code, found.applicability, found.edits) == ("KLG009", Applicability.NONE, ())
    assert found.fix.endswith(FIX)
    path = project / "train.py"
    path.write_text(source)
    assert main(["lint", "--fix", "--unsafe-fixes", "train.py"]) == 1
    assert path.read_text() == source
    assert "KLG009" in capsys.readouterr().out


def test_the_linter_leaves_a_functional_batchmean_after_size_average_false() -> None:
    assert findings('loss = F.kl_div(a, b, size_average=False, reduction="batchmean")\n') == []

"""Direct calls of the op ``torch.kl_div`` (issue 13): checked at the user's line,
while the op that ``F.kl_div`` and ``nn.KLDivLoss`` call inside is not patched."""

from __future__ import annotations

import functools
import pickle
import sys
import types
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import ORIGINAL, fully_removed, good, marked_line, probs_input
from kl_guard import _compat, _patch

HERE = "tests/test_direct_calls.py"
# torch deprecates torch.jit.script: a DeprecationWarning in 2.10 to 2.13, a FutureWarning from 2.14
JIT_SCRIPT_DEPRECATED = "`torch.jit.script` is deprecated"


# The op is named through kl_guard's own reference: a module global of this
# file that held it would be pointed at the patch by install().


def codes() -> list[tuple[str, str]]:
    return [(f.code, f.location) for f in kl_guard.findings()]


def test_a_direct_misuse_is_found_at_the_users_line() -> None:
    kl_guard.install(mode="log", check_every=1)
    torch.kl_div(*probs_input(), 2)  # a direct misuse
    line = marked_line(__file__, "a direct misuse")
    assert codes() == [("KLG003", f"{HERE}:{line}"), ("KLG004", f"{HERE}:{line}")]


def test_a_direct_call_raises_in_raise_mode_after_torch_computed_it() -> None:
    kl_guard.install(mode="raise", check_every=1)
    with pytest.raises(kl_guard.KLGuardError, match="KLG003"):
        torch.kl_div(*probs_input(), 2)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), ((), {"reduction": 1}), ((), {"log_target": False})],
    ids=["default", "positional", "keyword", "log_target-only"],
)
def test_the_ops_mean_enum_is_klg001(args: tuple[int, ...], kwargs: dict[str, object]) -> None:
    kl_guard.install(mode="log", check_every=1)
    torch.kl_div(*good(), *args, **kwargs)  # type: ignore[arg-type]
    [finding] = kl_guard.findings()
    assert finding.code == "KLG001"
    lines = finding.message.splitlines()
    assert lines[1] == "  the op torch.kl_div is called with reduction 1, 'mean' (its default)"
    assert lines[-2] == (
        '  fix: F.kl_div(input, target, reduction="batchmean")'
        "; drop any * num_classes that made up for 'mean'"
    )


@pytest.mark.parametrize("enum", [0, 2])
@pytest.mark.parametrize("log_target", [False, True])
def test_correct_direct_calls_are_silent(enum: int, log_target: bool) -> None:
    log_p, q = good()
    target = q.log() if log_target else q
    kl_guard.install(mode="raise", check_every=1)
    result = torch.kl_div(log_p, target, enum, log_target=log_target)
    assert torch.equal(result, _compat.KL_DIV_OP(log_p, target, enum, log_target=log_target))
    assert kl_guard.counts().checked == 1


def test_f_kl_div_and_the_module_do_not_pass_through_the_ops_patch() -> None:
    """Each is one call, checked once: the op they call inside is not seen."""
    kl_guard.install(mode="log", check_every=1)
    F.kl_div(*good(), reduction="batchmean")
    nn.KLDivLoss(reduction="batchmean")(*good())
    assert kl_guard.counts().seen == 2 and kl_guard.counts().checked == 2


def test_a_direct_call_past_its_checks_takes_the_fast_path() -> None:
    kl_guard.install(mode="log", check_every=1000)
    for _ in range(5):
        torch.kl_div(*good(), 2)
    assert (kl_guard.counts().seen, kl_guard.counts().checked) == (5, 1)


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("_klg_direct_user_module")
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_uninstall_restores_the_op_and_its_cached_references(user_module: types.ModuleType) -> None:
    vars(user_module)["kl_div"] = _compat.KL_DIV_OP  # from torch import kl_div
    kl_guard.install()
    assert torch.kl_div is not _compat.KL_DIV_OP and torch.kl_div.__wrapped__ is _compat.KL_DIV_OP  # type: ignore[attr-defined]
    assert user_module.kl_div is torch.kl_div
    wrapper = torch.kl_div
    kl_guard.uninstall()
    assert torch.kl_div is _compat.KL_DIV_OP and user_module.kl_div is _compat.KL_DIV_OP
    assert F.kl_div is ORIGINAL.kl_div
    assert torch.jit._builtins._find_builtin(wrapper) is None  # type: ignore[no-untyped-call]
    assert _patch.PATCH.op is None and fully_removed()


def test_the_op_pickles_by_its_name() -> None:
    kl_guard.install()
    partial = functools.partial(torch.kl_div, reduction=2)
    assert pickle.loads(pickle.dumps(torch.kl_div)) is torch.kl_div
    blob = pickle.dumps(partial)
    kl_guard.uninstall()
    assert pickle.loads(blob).func is _compat.KL_DIV_OP


def direct(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.kl_div(log_p, q, 2)


def functional(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_p, q, reduction="batchmean")


@pytest.mark.filterwarnings(f"ignore:{JIT_SCRIPT_DEPRECATED}:DeprecationWarning")
@pytest.mark.filterwarnings(f"ignore:{JIT_SCRIPT_DEPRECATED}:FutureWarning")
@pytest.mark.parametrize("function", [direct, functional])
def test_torchscript_compiles_the_patched_entry_points(function: types.FunctionType) -> None:
    expected = function(*good())
    kl_guard.install(mode="raise", check_every=1)
    scripted = torch.jit.script(function)
    assert torch.equal(scripted(*good()), expected)
    assert "aten::kl_div" in str(scripted.inlined_graph)
    kl_guard.uninstall()
    assert torch.equal(scripted(*good()), expected)


def mean_direct(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.kl_div(log_p, q)


def test_a_compiled_direct_call_compiles_whole_and_is_judged_by_its_arguments() -> None:
    """dynamo puts the op in the graph as it is (not the recorder): the call is
    diagnosed from its arguments while torch traces it, at the line that calls
    the compiled function (README, Limits)."""
    torch._dynamo.reset()
    kl_guard.install(mode="log", check_every=1)
    compiled = torch.compile(mean_direct, backend="aot_eager", fullgraph=True)
    loss = compiled(*good())  # compiled with 'mean'
    assert torch.equal(loss, _compat.KL_DIV_OP(*good()))
    line = marked_line(__file__, "compiled with 'mean'")
    assert codes() == [("KLG001", f"{HERE}:{line}")]
    kl_guard.uninstall()
    torch._dynamo.reset()
    again = torch.compile(direct, backend="aot_eager", fullgraph=True)
    assert torch.equal(again(*good()), _compat.KL_DIV_OP(*good(), 2))


def test_torch_func_transforms_run_through_the_ops_patch() -> None:
    log_p, q = good()
    expected = torch.func.grad(lambda x: _compat.KL_DIV_OP(x, q, 2))(log_p)
    kl_guard.install(mode="log", check_every=1)
    assert torch.equal(torch.func.grad(lambda x: torch.kl_div(x, q, 2))(log_p), expected)
    assert kl_guard.findings() == []


def test_kl_guards_own_loss_calls_the_op_unpatched() -> None:
    # torch.kl_div is the op torch's Python bindings define, unpatched
    assert _compat.KL_DIV_OP is torch._C._VariableFunctions.kl_div
    kl_guard.install(mode="log", check_every=1)
    kl_guard.check(*good(), reduction="batchmean")
    assert kl_guard.counts().seen == 0

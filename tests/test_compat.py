"""The compatibility modules: every primary path is the one in use, each
behaviour that differs across supported torch versions is detected as torch
shows it, and no other module names a private detail.

A private torch, CPython or wrapt detail that changes upstream makes kl_guard
fall back to a slower or coarser path; these tests make that loud.
"""

from __future__ import annotations

import ast
import copy
import pathlib
import re
import subprocess
import sys
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kl_guard
from helpers import good, marked_line
from kl_guard import _compat, _compat_compile, _patch

PACKAGE = pathlib.Path(kl_guard.__file__).parent
HERE = "tests/test_compat.py"


def mean_direct(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.kl_div(log_p, q)  # 'mean': a finding at every check


def test_every_primary_path_is_in_use() -> None:
    # some are decided when the patch is made, some when torch compiles or runs a graph
    kl_guard.install(mode="log")
    log_p, q = F.log_softmax(torch.zeros(2, 3), 1), F.softmax(torch.zeros(2, 3), 1)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # F.kl_div is traced into the recorder; the op is called by the graph at run
        # time, whose frames (FX's code, the function dynamo rewrote) _sites skips
        return F.kl_div(a, b, reduction="sum") + mean_direct(a, b)

    torch._dynamo.reset()
    torch.compile(loss, backend="eager", fullgraph=True)(log_p, q)
    kl_guard.uninstall()  # dynamo's table of torch functions is read afresh
    # torch 2.6 has neither torch.compiler.is_exporting nor torch._library.utils.is_impure,
    # nor the cudagraph_unsafe tag
    expected = (
        {"is_exporting", "side_effect_op", "cudagraph_unsafe_tag"}
        if _compat.TORCH_VERSION.startswith("2.6.")
        else set()
    )
    assert {name for name, used in _compat.PRIMARY.items() if not used} == expected
    assert set(_compat.PRIMARY) == {
        "getframe",
        "compiling_flag",
        "fake_mode",
        "compile_context",
        "functorch_wrapped",
        "filters_mutated",
        "wrapt_builtin_binding",
        "wrapt_bound_owner",
        "dynamo_inline",
        "traced_stack",
        "is_exporting",
        "side_effect_op",
        "cudagraph_unsafe_tag",
        "functional_calls_op_copy",
        "script_builtin",
        "dynamo_rules_cache",
        "compiler_packages",
        "fx_graph_file",
        "dynamo_compiled_fn",
    }


def test_a_call_an_eager_graph_makes_is_at_the_line_that_calls_the_compiled_function() -> None:
    """At run time the graph calls the patched op from FX's code, inside the
    function dynamo rewrote; both are told by their names and skipped, so the
    run-time check reports where the trace-time one did. Were either name gone,
    it would report a line of the compiled function."""
    torch._dynamo.reset()
    kl_guard.install(mode="log", check_every=1)
    torch.compile(mean_direct, backend="eager", fullgraph=True)(*good())  # the compiled call
    line = marked_line(__file__, "the compiled call")
    assert kl_guard.counts().checked == 1  # run by the graph, not only traced
    assert [(f.code, f.location) for f in kl_guard.findings()] == [("KLG001", f"{HERE}:{line}")]


def where_called() -> int:
    """The instruction offset of the line that called this function."""
    return _compat.getframe(1).f_lasti


def test_f_lasti_tells_two_calls_on_a_line_apart_and_repeats_for_one() -> None:
    """Sites are keyed by (code, f_lasti), read directly on the per-call path."""
    runs = [(where_called(), where_called()) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]


def test_the_getframe_fallback_walks_to_the_same_frames() -> None:
    assert _compat.getframe is sys._getframe
    assert _compat._walk_up(0) is sys._getframe(0)
    assert _compat._walk_up(1) is sys._getframe(1)
    with pytest.raises(ValueError, match="call stack is not deep enough"):
        _compat._walk_up(10_000)


def test_the_bound_owner_fallback_finds_the_class_by_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For a wrapt that keeps no owner, KLDivLoss.forward taken from the class
    still copies (and pickles) as the class's function."""
    monkeypatch.setattr(_compat, "_has_owner", False)
    kl_guard.install()
    module = nn.KLDivLoss(reduction="batchmean")
    assert _compat.bound_owner(module.forward) is module
    assert _compat.bound_owner(nn.KLDivLoss.forward) is nn.KLDivLoss
    assert copy.copy(nn.KLDivLoss.forward) == nn.KLDivLoss.forward


def test_the_patch_uses_wrapts_builtin_binding() -> None:
    kl_guard.install()
    # the "builtin" binding: wrapt does not look up __self__ on every call
    assert F.kl_div._self_binding == "builtin"  # type: ignore[attr-defined]


def test_f_kl_div_calls_a_copy_whose_torch_kl_div_is_the_op() -> None:
    """The copy that the patched F.kl_div calls is torch's code, every global it
    loads is the module's, and only ``torch.kl_div`` (the op, not its patch) and
    its own name (the patch, as torch's module says) differ: an upstream change
    to F.kl_div's body that this misses fails here."""
    op = torch.kl_div
    kl_guard.install()
    original = F.kl_div.__wrapped__  # type: ignore[attr-defined]
    copy = _patch.PATCH.callee(_patch.FUNCTIONAL)
    assert copy is not original and copy.__code__ is original.__code__  # type: ignore[union-attr]
    names = set(original.__code__.co_names) & set(vars(F))
    assert {"torch", "kl_div", "warnings", "handle_torch_function"} <= names
    for name in names - {"torch", "kl_div"}:
        assert copy.__globals__[name] is vars(F)[name], name  # type: ignore[union-attr]
    assert copy.__globals__["kl_div"] is F.kl_div  # type: ignore[union-attr]
    stand_in = copy.__globals__["torch"]  # type: ignore[union-attr]
    assert stand_in.kl_div is op and torch.kl_div is not op
    assert stand_in.Tensor is torch.Tensor  # any other name is torch's
    assert (copy.__defaults__, copy.__kwdefaults__) == (  # type: ignore[union-attr]
        original.__defaults__,
        original.__kwdefaults__,
    )


@pytest.mark.parametrize("missing", ["calling_op", "script_as_op"])
def test_without_the_copy_or_torchscripts_table_torch_kl_div_is_left_unpatched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, missing: str
) -> None:
    """Each fallback leaves the op alone (direct calls unchecked, as before
    issue 13) rather than tax every F.kl_div call or break TorchScript, and says so."""
    fallback = {"calling_op": lambda function, op: None, "script_as_op": lambda w, op: False}
    monkeypatch.setattr(_compat, missing, fallback[missing])
    monkeypatch.setattr(_patch, "_UNCHECKED_SAID", set())
    op = torch.kl_div
    with caplog.at_level("WARNING", logger="kl_guard"):
        kl_guard.install(mode="log", check_every=1)
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith(
        "kl_guard: direct torch.kl_div calls, and calls through an F.kl_div taken before "
        "install (a local, functools.partial), are not checked: "
    )
    assert torch.kl_div is op and _patch.PATCH.op is None
    log_p, q = F.log_softmax(torch.zeros(2, 3), 1), F.softmax(torch.zeros(2, 3), 1)
    torch.kl_div(log_p, q, 2)
    F.kl_div(log_p, q, reduction="sum")
    assert kl_guard.counts().seen == 1


def test_the_filters_fallback_drops_warning_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``warnings._filters_mutated``, an edit of the filters in place
    still takes effect for a warning already seen once."""
    monkeypatch.setattr(_compat, "_filters_mutated", None)

    def warn() -> None:
        warnings.warn("kl_guard compat probe", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("ignore")
        warn()  # cached as ignored
        warnings.filters[:] = [("always", None, Warning, None, 0)]  # type: ignore[index]
        _compat.filters_changed()
        warn()
    assert [str(w.message) for w in record] == ["kl_guard compat probe"]


def test_torch_warns_for_mean_with_a_stacklevel_from_2_10() -> None:
    """torch 2.6 to 2.9 warn without ``stacklevel``, naming torch.nn.functional."""
    expected = _compat.release(_compat.TORCH_VERSION) >= (2, 10)
    assert _compat.TORCH_WARNS_WITH_STACKLEVEL is expected


def test_torch_compile_sets_the_compiling_flag_from_2_13() -> None:
    """Decided by version in ``_compat_compile`` (a compilation at import would cost
    seconds); here torch shows whether its flag is set while it compiles."""
    seen: list[bool] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        seen.append(torch.compiler._is_compiling_flag)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(torch.sin, backend=backend)(torch.ones(2))
    torch._dynamo.reset()
    assert seen == [_compat_compile.COMPILE_SETS_COMPILING_FLAG]
    assert _compat_compile.COMPILE_SETS_COMPILING_FLAG is (
        _compat.release(_compat.TORCH_VERSION) >= (2, 13)
    )
    flag_is_torchs = _compat_compile.compiler is torch.compiler
    assert flag_is_torchs is _compat_compile.COMPILE_SETS_COMPILING_FLAG


@pytest.mark.parametrize(
    ("version", "release"),
    [("2.6.0+cu124", (2, 6)), ("2.15.0", (2, 15)), ("2.13.0a0+git", (2, 13)), ("unknown", (0, 0))],
)
def test_release_reads_major_and_minor(version: str, release: tuple[int, int]) -> None:
    assert _compat.release(version) == release


FIRST_COMPILE_WHILE_INSTALLED = """\
import warnings
import torch
import torch.nn.functional as F
import kl_guard

kl_guard.install(mode="log")
torch.compile(lambda x: x * 2, backend="eager", fullgraph=True)(torch.ones(3))
kl_guard.uninstall()

def mean_reduction(s, t):
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1))

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compiled = torch.compile(mean_reduction, backend="eager", fullgraph=True)
    compiled(torch.ones(2, 3), torch.ones(2, 3))
print(sum("'mean' divides" in str(w.message) for w in caught))
"""


def test_compiling_after_uninstall_is_as_if_kl_guard_never_ran(tmp_path: Any) -> None:
    """dynamo's first compile, while installed, built its table of torch functions
    with our wrappers in it; after uninstall, F.kl_div is in-graph again, not traced
    into (where its warnings.warn would break a fullgraph compile)."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_COMPILE_WHILE_INSTALLED],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1  # torch's own warning, from the graph's F.kl_div


#: Only these modules name a private torch, CPython or wrapt detail.
COMPAT_MODULES = {"_compat", "_compat_compile"}
#: ``sys._xoptions`` (the runner passes ``-X`` options on): documented in ``sys``; the
#: runner imports no torch, so it cannot read it through a compatibility module.
DOCUMENTED = {("_runner", "sys._xoptions")}
ROOTS = {"torch", "sys", "wrapt"}


def _private_prefix(name: str) -> str | None:
    """``torch._C`` of ``torch._C._functorch.f``: up to the first private part, if any."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.endswith("__"):
            return ".".join(parts[: i + 1])
    return None


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` of an attribute chain on a name; None for any other expression."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def private_details(path: pathlib.Path) -> set[str]:
    """The private torch, sys and wrapt names ``path`` imports, reads or spells
    out in a string (a module's name); docstrings may explain them."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            names = [_dotted(node) or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = re.findall(r"\b(?:torch|wrapt)(?:\.\w+)+", node.value)
        prefixes = {_private_prefix(n) for n in names if n.partition(".")[0] in ROOTS}
        found |= {prefix for prefix in prefixes if prefix is not None}
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.stem not in COMPAT_MODULES),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_other_module_names_a_private_detail(path: pathlib.Path) -> None:
    found = {name for name in private_details(path) if (path.stem, name) not in DOCUMENTED}
    assert found == set(), f"{path.name} names {sorted(found)}: move them into a compat module"


def test_the_private_name_finder_sees_each_form(tmp_path: pathlib.Path) -> None:
    """The check above would pass on a module it cannot read: it must see every form."""
    source = (
        "import torch._library.utils\n"
        "from torch._higher_order_ops import effects\n"
        "from torch import _dynamo\n"
        "mode = torch._C._get_dispatch_mode\n"
        "rules = sys.modules.get('torch._inductor.config')\n"
        "frame = sys._getframe(1)\n"
        "binding = wrapt.FunctionWrapper.__mro__[1]\n"  # a dunder is no private name
        '"""torch._guards, in a docstring: explained, not used."""\n'
    )
    path = tmp_path / "module.py"
    path.write_text(source)
    assert private_details(path) == {
        "torch._library",
        "torch._higher_order_ops",
        "torch._dynamo",
        "torch._C",
        "torch._inductor",
        "sys._getframe",
    }

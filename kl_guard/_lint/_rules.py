"""Rules: each ``kl_div`` call and ``nn.KLDivLoss`` read for KLG001-KLG003, KLG006 and KLG009;
the loss family's calls (``_family``) for KLG010-KLG012.

A rule reports only what the source decides: a reduction, ``log_target`` or
dim that is not a literal (directly, through a name, or as a parameter's
default) and a value without a visible space are not judged. What a loss
expects is its contract (``_contract``), and a finding's words are the
runtime guard's (``_words``), so both name a misuse alike.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator, Sequence

from kl_guard import _words
from kl_guard._contract import KL_DIV, LossContract, Space
from kl_guard._lint import _family, _fixes
from kl_guard._lint._files import Document
from kl_guard._lint._model import Applicability, Edit, LintFinding
from kl_guard._lint._names import Constant, Names
from kl_guard._lint._scopes import Scope
from kl_guard._lint._spaces import Spaces, Visible
from kl_guard._reduction import kl_div_reduction, resolve_reduction

_FUNCTION = KL_DIV.function
_MODULES = KL_DIV.module_names
_LOSS_PARAMETERS = KL_DIV.module_parameters
_FUNCTION_PARAMETERS = KL_DIV.parameters
_MODULE_CALL_PARAMETERS = KL_DIV.tensors
_INPUT_SPACE = KL_DIV.argument("input").space
_TARGET = KL_DIV.argument("target")


@dataclasses.dataclass(frozen=True)
class _LossCall:
    """One call that computes a KL divergence, with what its arguments resolve to."""

    call: ast.Call
    scope: Scope
    input: ast.expr
    target: ast.expr
    log_target: bool | None  # None: the source does not decide
    # where log_target is set (its argument, or the call to add it to); None: no fix
    log_target_at: tuple[ast.Call, ast.expr | None] | None


def _arguments(call: ast.Call, parameters: Sequence[str]) -> dict[str, ast.expr] | None:
    """The call's arguments by parameter name; None when ``*args``/``**kw`` hide them."""
    if len(call.args) > len(parameters) or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    bound = dict(zip(parameters, call.args, strict=False))
    for keyword in call.keywords:
        if keyword.arg is None or keyword.arg not in parameters or keyword.arg in bound:
            return None
        bound[keyword.arg] = keyword.value
    return bound


class Checker:
    def __init__(self, doc: Document, tree: ast.Module) -> None:
        self.doc = doc
        self.names = Names(tree)
        self.spaces = Spaces(self.names)

    def findings(self) -> Iterator[LintFinding]:
        for call, scope in self.names.calls:
            qualname = self.names.qualname(call.func, scope)
            if qualname == _FUNCTION:
                yield from self._function(call, scope)
            elif qualname in _MODULES:
                yield from self._constructor(call, scope)
            elif qualname in _family.BY_FUNCTION:
                contract = _family.BY_FUNCTION[qualname]
                yield from self._family_call(call, scope, contract, contract.parameters)
            elif qualname is None:
                yield from self._module_call(call, scope)

    # -- KLG001 ---------------------------------------------------------------

    def _constant(self, args: dict[str, ast.expr], name: str, scope: Scope) -> Constant | None:
        node = args.get(name)
        return Constant(None, node) if node is None else self.names.constant(node, scope)

    def _mean(
        self, call: ast.Call, scope: Scope, args: dict[str, ast.expr], api: str
    ) -> LintFinding | None:
        size_average = self._constant(args, "size_average", scope)
        reduce = self._constant(args, "reduce", scope)
        reduction = self._constant(args, "reduction", scope)
        if size_average is None or reduce is None or reduction is None:
            return None
        value = reduction.value if "reduction" in args else "mean"
        if not isinstance(value, str):
            return None
        legacy = size_average.value is not None or reduce.value is not None
        if api == "function":
            resolved, divided = kl_div_reduction(size_average.value, reduce.value, value)
        else:
            resolved, divided = resolve_reduction(size_average.value, reduce.value, value), False
        if legacy and "reduction" in args and (resolved != value or divided):
            return self._override(call, args, value, resolved, divided)
        if resolved != "mean":
            return None
        written = args.get("reduction")
        edit: Edit | None = None
        if legacy:
            source = _words.legacy_source(size_average.value, reduce.value, "mean")
        elif written is None:
            source = _words.MEAN_DEFAULT if api == "function" else _words.MEAN_MODULE_DEFAULT
            keyword = f"reduction={_fixes.string(self.doc, None, 'batchmean')}"
            edit = _fixes.set_argument(self.doc, call, None, keyword)
        elif reduction.node is written:
            source = _words.MEAN_WRITTEN
            edit = _fixes.replace(self.doc, written, _fixes.string(self.doc, written, "batchmean"))
        elif reduction.parameter is not None and reduction.node is not None:
            source = f"reduction defaults to 'mean' through the parameter {reduction.parameter!r}"
            node = reduction.node
            edit = _fixes.replace(self.doc, node, _fixes.string(self.doc, node, "batchmean"))
        else:
            source = f"reduction={_fixes.text(self.doc, written)} resolves to 'mean'"
        log_target = self._constant(args, "log_target", scope)
        extra = ", log_target=True" if log_target is not None and log_target.value else ""
        callee = _fixes.text(self.doc, call.func)
        arguments = "input, target, " if api == "function" else ""
        return self._finding(
            "KLG001",
            call,
            f"{_words.MEAN_HEADLINE}: {source}",
            f'{callee}({arguments}reduction="batchmean"{extra}) (this rescales the loss)',
            Applicability.UNSAFE if edit else Applicability.NONE,
            (edit,) if edit else (),
            (reduction.node if reduction.parameter else written,),
            note=_words.MEAN_COMPENSATED,
        )

    def _override(
        self,
        call: ast.Call,
        args: dict[str, ast.expr],
        reduction: str,
        resolved: str,
        divided: bool,
    ) -> LintFinding:
        """KLG009: ``size_average``/``reduce`` that override the written ``reduction``."""
        names = [name for name in KL_DIV.legacy if name in args]
        edits = _fixes.remove_keywords(self.doc, call, names)
        return self._finding(
            "KLG009",
            call,
            _words.override_headline(reduction, resolved, divided),
            f'{_fixes.text(self.doc, call.func)}(..., reduction="{reduction}") '
            f"({_words.OVERRIDE_FIX})",
            Applicability.UNSAFE if edits else Applicability.NONE,
            edits,
            (*(args[name] for name in names), args["reduction"]),
        )

    def _constructor(self, call: ast.Call, scope: Scope) -> Iterator[LintFinding]:
        args = _arguments(call, _LOSS_PARAMETERS)
        if args is None or self.names.holders.get(call, set()) & self.names.mutated:
            return
        finding = self._mean(call, scope, args, "module")
        if finding is not None:
            yield finding

    # -- call sites -------------------------------------------------------------

    def _function(self, call: ast.Call, scope: Scope) -> Iterator[LintFinding]:
        args = _arguments(call, _FUNCTION_PARAMETERS)
        if args is None or "input" not in args or "target" not in args:
            return
        finding = self._mean(call, scope, args, "function")
        if finding is not None:
            yield finding
        log_target = self._constant(args, "log_target", scope)
        value = None if log_target is None else bool(log_target.value)
        written = args.get("log_target")
        literal = written is None or (log_target is not None and log_target.node is written)
        at = (call, written) if literal else None
        yield from self._site(_LossCall(call, scope, args["input"], args["target"], value, at))

    def _module_call(self, call: ast.Call, scope: Scope) -> Iterator[LintFinding]:
        """``nn.KLDivLoss(...)(a, b)``, or ``crit(a, b)`` where ``crit`` holds one."""
        func = call.func
        inline = isinstance(func, ast.Call)
        holders = [(func, scope)] if inline else self.names.values(func, scope)
        if not holders or any(not isinstance(c, ast.Call) for c, _ in holders):
            return
        classes = {self.names.qualname(c.func, s) for c, s in holders if isinstance(c, ast.Call)}
        family = {_family.BY_MODULE.get(name or "") for name in classes}
        if len(family) == 1 and None not in family:  # one loss of the family holds every value
            yield from self._family_call(call, scope, family.pop(), _MODULE_CALL_PARAMETERS)
            return
        if not classes <= _MODULES:
            return
        args = _arguments(call, _MODULE_CALL_PARAMETERS)
        if args is None or len(args) != 2:
            return
        values: set[bool | None] = set()
        constructor: ast.Call | None = None
        for holder, owner in holders:
            assert isinstance(holder, ast.Call)
            constructor = holder
            loss_args = _arguments(holder, _LOSS_PARAMETERS)
            found = None if loss_args is None else self._constant(loss_args, "log_target", owner)
            values.add(None if found is None else bool(found.value))
        value = values.pop() if len(values) == 1 else None
        at = None
        if inline and constructor is not None:
            loss_args = _arguments(constructor, _LOSS_PARAMETERS) or {}
            written = loss_args.get("log_target")
            if written is None or isinstance(written, ast.Constant):
                at = (constructor, written)
        yield from self._site(_LossCall(call, scope, args["input"], args["target"], value, at))

    def _family_call(
        self,
        call: ast.Call,
        scope: Scope,
        contract: LossContract | None,
        parameters: tuple[str, ...],
    ) -> Iterator[LintFinding]:
        """KLG010-KLG012: the input of a loss of the family is visibly what it must not be."""
        args = _arguments(call, parameters)
        if contract is None or args is None or "input" not in args:
            return
        visible = self.spaces.of(args["input"], scope)
        code = _family.misuse(contract, visible)
        if code is None or visible is None:
            return
        applicability, edits = _family.fix(self.doc, self.names, contract, args["input"], scope)
        yield self._finding(
            code,
            call,
            _words.family_input_headline(contract, visible.kind),
            _words.family_input_fix(contract),
            applicability,
            edits,
            (args["input"],),
        )

    def _site(self, site: _LossCall) -> Iterator[LintFinding]:
        spaces = self.spaces
        input_space = spaces.of(site.input, site.scope)
        target_space = spaces.of(site.target, site.scope)
        swapped = (
            input_space is not None
            and target_space is not None
            and input_space.kind is Space.PROB
            and target_space.kind is Space.LOGPROB
            and site.log_target is False
        )
        if swapped:
            yield self._finding(
                "KLG003",
                site.call,
                _words.SWAPPED_HEADLINE,
                "swap them: kl_div(input=log q of the model, target=p of the reference)",
                Applicability.SAFE,
                _fixes.swap(self.doc, site.input, site.target),
                (site.input, site.target),
            )
        elif input_space is not None and input_space.kind is not _INPUT_SPACE:
            yield self._input_finding(site, input_space)
        if not swapped and target_space is not None and site.log_target is not None:
            finding = self._target_finding(site, target_space)
            if finding is not None:
                yield finding
        if input_space is not None and target_space is not None:
            finding = self._dims_finding(site, input_space, target_space)
            if finding is not None:
                yield finding

    def _input_finding(self, site: _LossCall, space: Visible) -> LintFinding:
        edit = _fixes.rename_softmax(self.doc, space.softmax) if space.softmax is not None else None
        dim = "..." if space.dim is None else space.dim
        return self._finding(
            "KLG003",
            site.call,
            _words.input_headline(space.kind),
            f"{_words.log_softmax_input(dim)} as the input",
            Applicability.SAFE if edit else Applicability.NONE,
            (edit,) if edit else (),
            (site.input,),
        )

    def _target_finding(self, site: _LossCall, space: Visible) -> LintFinding | None:
        wanted = _TARGET.expected({"log_target": site.log_target})
        if space.kind is wanted or (space.kind is Space.NONNEG and not site.log_target):
            return None
        edit = None
        if site.log_target_at is not None and space.kind is not Space.NONNEG:
            call, written = site.log_target_at
            edit = _fixes.set_argument(self.doc, call, written, f"log_target={not site.log_target}")
        return self._finding(
            "KLG002",
            site.call,
            _words.log_target_headline(bool(site.log_target), space.kind),
            f"log_target={not site.log_target} (True means the target holds log-probabilities, "
            "False, the default, probabilities)",
            Applicability.SAFE if edit else Applicability.NONE,
            (edit,) if edit else (),
            (site.target,),
        )

    def _dims_finding(self, site: _LossCall, a: Visible, b: Visible) -> LintFinding | None:
        """KLG006: input and target normalized over dims that cannot be the same one."""
        if a.kind is Space.NONNEG or b.kind is Space.NONNEG or a.dim is None or b.dim is None:
            return None
        if a.dim == b.dim or (a.dim < 0) != (b.dim < 0):
            return None  # dim=1 and dim=-1 are one dim of a 2-D tensor
        wrong, right, node = (
            (b.dim, a.dim, site.target) if b.dim == 0 else (a.dim, b.dim, site.input)
        )
        if 0 not in (a.dim, b.dim):
            headline = (
                f"input and target of kl_div are normalized over different dims "
                f"({a.dim} and {b.dim}); kl_div pairs them element by element"
            )
        else:
            headline = _words.misplaced_headline(wrong, right)
        fn = "softmax" if node is site.target and not site.log_target else "log_softmax"
        return self._finding(
            "KLG006",
            site.call,
            headline,
            _words.misplaced_fix(fn, wrong, right),
            Applicability.NONE,
            (),
            (node,),
        )

    def _finding(
        self,
        code: str,
        call: ast.Call,
        message: str,
        fix: str,
        applicability: Applicability,
        edits: Sequence[Edit],
        culprits: Sequence[ast.expr | None],
        *,
        note: str = "",
    ) -> LintFinding:
        lines = {call.lineno} | {n.lineno for n in culprits if n is not None}
        return LintFinding(
            code,
            call.lineno,
            self.doc.column(call.lineno, call.col_offset) + 1,
            message,
            (_fixes.preview(self.doc, call, edits) or fix) + (f"; {note}" if note else ""),
            applicability,
            tuple(edits),
            frozenset(lines),
        )

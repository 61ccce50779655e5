"""Spaces: which expressions are visibly probabilities or log-probabilities, over which dim.

``F.softmax(x, dim=1)`` in any spelling (``torch.softmax``, ``x.softmax(1)``,
an ``nn.Softmax(dim=1)`` module inline, in a local or on ``self``), then
``.log()``/``.exp()`` between the two spaces; ``.detach()``, ``.float()``,
``.to(...)``, a clamp and row indexing keep the space, reshapes keep it
without its dim. Anything else (a
model's output, a parameter, arithmetic) has no visible space: None.
"""

from __future__ import annotations

import ast
import dataclasses

from kl_guard._contract import Space
from kl_guard._lint._names import Names
from kl_guard._lint._scopes import Scope

_F = "torch.nn.functional."
_PROB_FUNCTIONS = frozenset({_F + "softmax", "torch.softmax", "torch.special.softmax"})
_LOGPROB_FUNCTIONS = frozenset(
    {_F + "log_softmax", "torch.log_softmax", "torch.special.log_softmax"}
)
_SIGMOID_FUNCTIONS = frozenset({_F + "sigmoid", "torch.sigmoid", "torch.special.expit"})
_MODULE_PATHS = ("torch.nn.", "torch.nn.modules.", "torch.nn.modules.activation.")
_PROB_MODULES = frozenset(p + "Softmax" for p in _MODULE_PATHS)
_LOGPROB_MODULES = frozenset(p + "LogSoftmax" for p in _MODULE_PATHS)
_SIGMOID_MODULES = frozenset(p + "Sigmoid" for p in _MODULE_PATHS)
_SEQUENTIAL = frozenset(
    p + "Sequential" for p in ("torch.nn.", "torch.nn.modules.", "torch.nn.modules.container.")
)
# Methods that return the same values (another dtype, device or copy); the
# clamps keep the space only roughly, so a fix is not written through them.
_SAME = frozenset({"detach", "float", "double", "half", "bfloat16", "to", "cpu", "cuda", "clone"})
_SAME |= {"contiguous", "detach_"}
_CLAMPS = frozenset({"clamp", "clamp_min", "clamp_", "clamp_min_", "clip"})
# Methods that move or regroup the values (``logits.softmax(-1).flatten(0, 1)``, a
# language model's loss): the space stays, which dim the rows run along does not.
_RESHAPES = frozenset(
    {"flatten", "view", "reshape", "permute", "transpose", "movedim", "squeeze", "unsqueeze"}
)
_DEPTH = 12


@dataclasses.dataclass(frozen=True)
class Visible:
    """What an expression visibly holds: ``dim`` None when not written as a literal.

    ``softmax`` is the inline ``softmax`` call (function, method or module
    constructor) that made it, when nothing but same-value methods and row
    indexing stand between it and the expression: renaming it to
    ``log_softmax`` is then a certain fix.
    """

    kind: Space
    dim: int | None
    softmax: ast.expr | None = None


class Spaces:
    def __init__(self, names: Names) -> None:
        self.names = names

    def of(self, expr: ast.expr, scope: Scope, depth: int = 0) -> Visible | None:
        if depth > _DEPTH:
            return None
        if isinstance(expr, ast.Call):
            return self._call(expr, scope, depth)
        if isinstance(expr, ast.Subscript):
            inner = self.of(expr.value, scope, depth + 1)
            return None if inner is None else _indexed(inner, expr.slice)
        values = self.names.values(expr, scope)
        if not values:
            return None
        spaces = {self.of(value, owner, depth + 1) for value, owner in values}
        space = spaces.pop() if len(spaces) == 1 else None
        return None if space is None else Visible(space.kind, space.dim)

    def _dim(self, call: ast.Call, scope: Scope, position: int) -> int | None:
        node = next((k.value for k in call.keywords if k.arg == "dim"), None)
        if node is None and len(call.args) > position:
            node = call.args[position]
        if node is None:
            return None
        found = self.names.constant(node, scope)
        return found.value if found is not None and type(found.value) is int else None

    def module(self, expr: ast.expr, scope: Scope) -> Visible | None:
        """The space an ``nn.Softmax``/``nn.LogSoftmax``/``nn.Sigmoid`` constructor call
        produces, or an ``nn.Sequential`` whose last module is one of them."""
        if not isinstance(expr, ast.Call) or _starred(expr):
            return None
        qualname = self.names.qualname(expr.func, scope)
        if qualname in _PROB_MODULES:
            return Visible(Space.PROB, self._dim(expr, scope, 0), expr.func)
        if qualname in _LOGPROB_MODULES:
            return Visible(Space.LOGPROB, self._dim(expr, scope, 0))
        if qualname in _SIGMOID_MODULES and not expr.args and not expr.keywords:
            return Visible(Space.NONNEG, None)
        if (
            qualname in _SEQUENTIAL
            and expr.args
            and not expr.keywords
            and not self.names.holders.get(expr, set()) & self.names.mutated
        ):
            last = self.module(expr.args[-1], scope)
            # no fix inside a model's definition: other code may want its probabilities
            return None if last is None else Visible(last.kind, last.dim)
        return None

    def _call(self, call: ast.Call, scope: Scope, depth: int) -> Visible | None:
        if _starred(call):
            return None
        func = call.func
        if isinstance(func, ast.Call):  # nn.Softmax(dim=1)(x)
            return self.module(func, scope) if len(call.args) == 1 else None
        qualname = self.names.qualname(func, scope)
        if qualname is not None:
            if qualname in _PROB_FUNCTIONS and call.args:
                return Visible(Space.PROB, self._dim(call, scope, 1), func)
            if qualname in _LOGPROB_FUNCTIONS and call.args:
                return Visible(Space.LOGPROB, self._dim(call, scope, 1))
            if qualname in _SIGMOID_FUNCTIONS and len(call.args) == 1:
                return Visible(Space.NONNEG, None)
            if qualname in ("torch.log", "torch.exp") and len(call.args) == 1:
                return _log_exp(qualname[6:], self.of(call.args[0], scope, depth + 1))
            return None
        if not isinstance(func, ast.Attribute):
            return self._module_instance(call, scope)
        if self.names.self_class(func.value, scope) is not None:
            return self._module_instance(call, scope)
        return self._method(call, func, scope, depth)

    def _module_instance(self, call: ast.Call, scope: Scope) -> Visible | None:
        """``act(x)`` where ``act`` (a local, a global, ``self.act``) is an nn.Softmax."""
        values = self.names.values(call.func, scope)
        if not values or len(call.args) != 1 or call.keywords:
            return None
        spaces = {self.module(value, owner) for value, owner in values}
        space = spaces.pop() if len(spaces) == 1 else None
        return None if space is None else Visible(space.kind, space.dim)

    def _method(
        self, call: ast.Call, func: ast.Attribute, scope: Scope, depth: int
    ) -> Visible | None:
        name = func.attr
        if name in ("softmax", "log_softmax"):
            # a tensor's method takes the dim alone: x.softmax(1), x.softmax(dim=-1)
            dim = self._dim(call, scope, 0)
            if dim is None or len(call.args) + len(call.keywords) > 2:
                return None
            if name == "softmax":
                return Visible(Space.PROB, dim, func)
            return Visible(Space.LOGPROB, dim)
        if name == "sigmoid" and not call.args and not call.keywords:
            return Visible(Space.NONNEG, None)
        inner = self.of(func.value, scope, depth + 1)
        if inner is None:
            return None
        if name in _SAME:
            return inner
        if name in _CLAMPS:
            return Visible(inner.kind, inner.dim)
        # not x.view(torch.int32), which reads the bytes as another dtype
        if name in _RESHAPES and not any(isinstance(a, ast.Attribute) for a in call.args):
            return Visible(inner.kind, None)
        if name in ("log", "exp") and not call.args and not call.keywords:
            return _log_exp(name, inner)
        return None


def _log_exp(name: str, inner: Visible | None) -> Visible | None:
    if inner is None:
        return None
    if name == "log" and inner.kind is Space.PROB:
        return Visible(Space.LOGPROB, inner.dim)
    if name == "exp" and inner.kind is Space.LOGPROB:
        return Visible(Space.PROB, inner.dim)
    return None


def _starred(call: ast.Call) -> bool:
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    )


def _full_slice(node: ast.expr) -> bool:
    return isinstance(node, ast.Slice) and node.lower is node.upper is node.step is None


def _indexed(inner: Visible, index: ast.expr) -> Visible:
    """The space of ``x[index]``: the values keep their kind, the dim only where certain.

    Probabilities indexed any way are still values in [0, 1], never
    log-probabilities; but which dim the rows run along survives only a
    slice or an int on dim 0, or a tuple that ends in ``:`` with dim -1.
    """
    dim = inner.dim
    if dim is None:
        pass
    elif isinstance(index, ast.Tuple):
        if not (index.elts and _full_slice(index.elts[-1]) and dim == -1):
            dim = None
    elif isinstance(index, ast.Constant) and type(index.value) is int:
        dim = None if dim == 0 else dim - 1 if dim > 0 else dim
    elif not isinstance(index, ast.Slice) or dim == 0:
        dim = None
    return Visible(inner.kind, dim, inner.softmax)

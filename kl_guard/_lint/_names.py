"""Names: what a name or ``self`` attribute resolves to, read from the scopes ``_binder`` built.

A name resolves only when every binding it may hold where it is read agrees
(one import, or values that resolve alike; ``_scopes`` says which those
are); a parameter, a loop variable or a name that may be bound two
different ways resolves to nothing, which the rules read as "the source does
not decide". A value resolves where it is written.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator

from kl_guard._lint._binder import Binder
from kl_guard._lint._scopes import Binding, ClassInfo, Scope, point_of, self_class

_DEPTH = 12  # aliases of aliases: deeper than real code goes, and no cycle runs away


@dataclasses.dataclass(frozen=True)
class Constant:
    """A literal a name or argument resolves to: ``node`` is where it is written.

    ``parameter`` names the parameter whose default it is, when it comes from one.
    """

    value: object
    node: ast.expr | None  # None: the argument is not written (its default)
    parameter: str | None = None


class Names:
    """A module's bindings and calls, and the queries the rules ask of them."""

    def __init__(self, tree: ast.Module) -> None:
        binder = Binder(tree)
        self.calls = binder.calls
        self.mutated = binder.mutated
        self.holders = binder.holders

    def self_class(self, expr: ast.expr, scope: Scope) -> ClassInfo | None:
        """The class whose instance ``expr`` is, when ``expr`` is a method's ``self``."""
        return self_class(expr, scope)

    def bindings(self, expr: ast.expr, scope: Scope) -> list[Binding] | None:
        """The bindings a name or ``self.attr`` may hold where ``expr`` is read.

        ``self.attr`` is any method's assignment, or the class body's own last one.
        """
        if isinstance(expr, ast.Name):
            found = scope.lookup(expr.id, point_of(expr))
            return found[0] if found else None
        if isinstance(expr, ast.Attribute):
            cls = self_class(expr.value, scope)
            if cls is None:
                return None
            own = cls.attrs.get(expr.attr, [])
            body = next((s for s in _class_scopes(scope) if s.cls is cls), None)
            in_body = body.last(expr.attr) if body else []
            return [*own, *in_body] or None
        return None

    def values(self, expr: ast.expr, scope: Scope) -> list[tuple[ast.expr, Scope]] | None:
        """The expressions a name or ``self.attr`` is assigned, when it is only assigned.

        A parameter with a default counts as its default.
        """
        found = self.bindings(expr, scope)
        if not found:
            return None
        out: list[tuple[ast.expr, Scope]] = []
        for binding in found:
            if binding.kind not in ("value", "param") or binding.value is None:
                return None
            out.append((binding.value, binding.scope))
        return out

    def qualname(self, expr: ast.expr, scope: Scope, depth: int = 0) -> str | None:
        """``torch.nn.functional.kl_div`` for ``F.kl_div`` and every alias of it, else None."""
        if depth > _DEPTH:
            return None
        if isinstance(expr, ast.Attribute):
            base = self.qualname(expr.value, scope, depth + 1)
            if base is not None:
                return f"{base}.{expr.attr}"
        found = self.bindings(expr, scope)
        if not found:
            return None
        names: set[str | None] = set()
        for binding in found:
            if binding.kind == "import":
                names.add(binding.qualname)
            elif binding.kind == "value" and binding.value is not None:
                names.add(self.qualname(binding.value, binding.scope, depth + 1))
            else:
                return None
        return names.pop() if len(names) == 1 else None

    def constant(self, expr: ast.expr, scope: Scope, depth: int = 0) -> Constant | None:
        """The literal ``expr`` is, through names and a parameter's default, else None."""
        if isinstance(expr, ast.Constant):
            return Constant(expr.value, expr)
        if (
            isinstance(expr, ast.UnaryOp)
            and isinstance(expr.op, ast.USub)
            and isinstance(expr.operand, ast.Constant)
            and type(expr.operand.value) is int
        ):
            return Constant(-expr.operand.value, expr)
        found = self.bindings(expr, scope) if depth <= _DEPTH else None
        if not found or len(found) != 1:
            return None
        binding = found[0]
        value = binding.value
        if value is None:
            return None
        if binding.kind == "value":
            return self.constant(value, binding.scope, depth + 1)
        if binding.kind == "param" and isinstance(expr, ast.Name):
            inner = self.constant(value, binding.scope, depth + 1)
            if inner is not None and inner.node is value:  # a literal default
                return dataclasses.replace(inner, parameter=expr.id)
            return inner
        return None


def _class_scopes(scope: Scope) -> Iterator[Scope]:
    s: Scope | None = scope
    while s is not None:
        if s.kind == "class":
            yield s
        s = s.parent

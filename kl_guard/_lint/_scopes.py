"""Scopes: each scope's bindings of each name, and which of them a name read there refers to.

A ``Binding`` is one way a name is bound (an import, a value, a parameter);
a ``Scope`` holds a module's, class body's, function's, lambda's or
comprehension's bindings, following Python's rules: a class body is not
visible from its methods, ``global``/``nonlocal`` send a name to another
scope. ``_binder`` fills them in; ``_names`` answers what a name resolves to.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Literal

Kind = Literal["import", "value", "param", "other"]


@dataclasses.dataclass(frozen=True)
class Binding:
    """One way a name is bound: an import (``qualname``), a value, a parameter (its default)."""

    kind: Kind
    scope: Scope
    qualname: str | None = None
    value: ast.expr | None = None


class ClassInfo:
    """A class's ``self.name = ...`` assignments, from every method."""

    def __init__(self) -> None:
        self.attrs: dict[str, list[Binding]] = {}


class Scope:
    def __init__(
        self,
        node: ast.AST,
        parent: Scope | None,
        kind: Literal["module", "class", "function", "comprehension"],
        *,
        cls: ClassInfo | None = None,
        self_name: str | None = None,
    ) -> None:
        self.node = node
        self.parent = parent
        self.kind = kind
        self.cls = cls  # the class of a method, or of a class body
        self.self_name = self_name  # a method's first parameter
        self.bindings: dict[str, list[Binding]] = {}
        self.redirect: dict[str, Scope] = {}  # global / nonlocal names

    def bind(self, name: str, binding: Binding) -> None:
        target = self.redirect.get(name, self)
        target.bindings.setdefault(name, []).append(binding)

    def lookup(self, name: str) -> tuple[list[Binding], Scope] | None:
        """The bindings ``name`` refers to from here, or None (a builtin or undefined)."""
        scope: Scope | None = self
        while scope is not None:
            target = scope.redirect.get(name, scope)
            if target is not scope:
                return target.lookup(name)
            if name in scope.bindings:
                return scope.bindings[name], scope
            scope = scope.parent
            while scope is not None and scope.kind == "class":
                scope = scope.parent  # a class body is not an enclosing scope
        return None

    @property
    def function(self) -> Scope:
        scope = self
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        return scope


def self_class(expr: ast.expr, scope: Scope) -> ClassInfo | None:
    """The class whose instance ``expr`` is, when ``expr`` is a method's ``self``."""
    if not isinstance(expr, ast.Name):
        return None
    found = scope.lookup(expr.id)
    if found is None:
        return None
    _, owner = found
    return owner.cls if owner.self_name == expr.id else None

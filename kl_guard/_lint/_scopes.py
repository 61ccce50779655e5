"""Scopes: each scope's bindings of each name, and which of them a name read there refers to.

A ``Binding`` is one way a name is bound (an import, a value, a parameter);
a ``Scope`` holds a module's, class body's, function's, lambda's or
comprehension's bindings, following Python's rules: a class body is not
visible from its methods, ``global``/``nonlocal`` send a name to another
scope. ``_binder`` fills them in; ``_names`` answers what a name resolves to.

Which binding a read sees follows the order Python runs them in, where the
source fixes it. When every binding of a name in a scope is a plain
statement of that scope's own body (or a parameter), a read in the same
body, or in a class body or list comprehension run there, sees the last one
bound before it; a read from a function sees the last of all, as a function
runs once the module (or enclosing function) has finished; a generator's
body may run at any later time, so the last one before it and every later
one count. A binding that may or may not be made (under ``if``, ``try``,
``for``, ``while``, ``with``, ``match``; a loop target, ``del``, ``:=``) or
made from another scope (``global``, ``nonlocal``) has no place in that
order: then every binding counts, and the name resolves only when they agree.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from typing import Literal

Kind = Literal["import", "value", "param", "other"]
Point = tuple[int, int]  # (line, column) in the source, as ast numbers them
ENTRY: Point = (0, 0)  # a parameter is bound when the function is entered, before its body
_LATER: Point = (sys.maxsize, 0)  # a function's body runs after its scope has finished


@dataclasses.dataclass(frozen=True)
class Binding:
    """One way a name is bound: an import (``qualname``), a value, a parameter (its default).

    ``scope`` is where the value is evaluated; ``at`` where the binding is
    certainly made: the end of its statement in the scope's own body, None
    when it is conditional or made from another scope.
    """

    kind: Kind
    scope: Scope
    qualname: str | None = None
    value: ast.expr | None = None
    at: Point | None = None


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
        if target is not self:
            binding = dataclasses.replace(binding, at=None)  # no place in the target's order
        target.bindings.setdefault(name, []).append(binding)

    def lookup(self, name: str, point: Point) -> tuple[list[Binding], Scope] | None:
        """The bindings ``name`` may hold when read at ``point`` here, and its scope.

        The scope is the nearest one that binds ``name``; None when none does
        (a builtin, or undefined).
        """
        found: list[Binding] = []
        home: Scope | None = None
        later = False
        scope: Scope | None = self
        while scope is not None:
            owner = scope.redirect.get(name, scope)
            if owner is not scope:
                point, later = _leaving(scope, point, later)
            bindings = owner.bindings.get(name)
            if bindings:
                home = home or owner
                current, maybe_unbound = _current(bindings, point, later)
                if owner.kind != "class":
                    # unbound at this point: a NameError, or code run out of
                    # textual order (notebook cells); every binding counts
                    return [*found, *(current or bindings)], home
                found += current
                if not maybe_unbound:
                    return found, home
                # a class body reads on into the enclosing scopes while unbound
            if owner is not scope:
                break
            point, later = _leaving(scope, point, later)
            scope = scope.parent
            while scope is not None and scope.kind == "class":
                scope = scope.parent  # a class body is not an enclosing scope
        return (found, home) if found and home is not None else None

    def last(self, name: str) -> list[Binding]:
        """The bindings ``name`` may hold here once this scope has finished."""
        bindings = self.bindings.get(name, [])
        current, _ = _current(bindings, _LATER, False)
        return current or bindings

    @property
    def function(self) -> Scope:
        scope = self
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        return scope


def _leaving(scope: Scope, point: Point, later: bool) -> tuple[Point, bool]:
    """Where a read in ``scope`` happens, as the enclosing scope's body runs."""
    if scope.kind == "function":
        return _LATER, later
    if isinstance(scope.node, ast.GeneratorExp):
        return point, True
    return point, later  # a class body and a list comprehension run where they are written


def _current(bindings: list[Binding], point: Point, later: bool) -> tuple[list[Binding], bool]:
    """(the bindings that may hold at ``point``, whether the name may still be unbound there)."""
    ordered = [b.at for b in bindings if b.at is not None]
    if len(ordered) < len(bindings):
        return bindings, True
    before = [i for i, at in enumerate(ordered) if at <= point]
    if not before:
        return [], True
    last = before[-1]
    return (bindings[last:] if later else [bindings[last]]), False


def point_of(expr: ast.expr) -> Point:
    """Where ``expr`` is read."""
    return expr.lineno, expr.col_offset


def self_class(expr: ast.expr, scope: Scope) -> ClassInfo | None:
    """The class whose instance ``expr`` is, when ``expr`` is a method's ``self``."""
    if not isinstance(expr, ast.Name):
        return None
    found = scope.lookup(expr.id, point_of(expr))
    if found is None:
        return None
    _, owner = found
    return owner.cls if owner.self_name == expr.id else None

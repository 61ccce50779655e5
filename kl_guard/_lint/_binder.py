"""Binder: one pass over a module's tree that records every binding in its scope.

It visits each statement and expression once, in source order, creating a
``Scope`` for each module, class body, function, lambda and comprehension
and binding there what imports, assignments, parameters, loops, ``with``,
``except``, ``match`` and ``del`` bind; it also lists every call with the
scope it is in, and which objects have ``.reduction``/``.log_target``
assigned after construction.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator

from kl_guard._lint._scopes import ENTRY, Binding, ClassInfo, Kind, Point, Scope, self_class

#: Methods that change which module an nn.Sequential ends in.
_CONTAINER_EDITS = frozenset({"append", "extend", "insert", "add_module", "register_module", "pop"})


class Binder(ast.NodeVisitor):
    """Every binding of a module, and the calls with the scope each is in."""

    def __init__(self, tree: ast.Module) -> None:
        self.module = Scope(tree, None, "module")
        self.calls: list[tuple[ast.Call, Scope]] = []
        # "crit", "self.crit": objects whose .reduction or .log_target is assigned,
        # and the names each constructor call is assigned to
        self.mutated: set[str | None] = set()
        self.holders: dict[ast.Call, set[str | None]] = {}
        self._scope = self.module
        # the statement of the scope's own body being visited; None inside a
        # nested one, whose bindings may or may not be made
        self._top: ast.stmt | None = None
        self._enter(self.module, tree.body)

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt) and node is not self._top:
            top, self._top = self._top, None
            try:
                super().visit(node)
            finally:
                self._top = top
        else:
            super().visit(node)

    @property
    def _here(self) -> Point | None:
        """Where a binding made now is certainly made (see ``Binding.at``)."""
        top = self._top
        if top is None:
            return None
        assert top.end_lineno is not None and top.end_col_offset is not None
        return top.end_lineno, top.end_col_offset

    def _other(self, target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                self._scope.bind(node.id, Binding("other", self._scope))

    def _assign(self, target: ast.expr, value: ast.expr | None, at: Point | None) -> None:
        scope = self._scope
        if isinstance(target, ast.Name):
            kind: Kind = "value" if value is not None else "other"
            scope.bind(target.id, Binding(kind, scope, value=value, at=at))
        elif isinstance(target, ast.Subscript):  # model[-1] = ..., del model[-1]
            self.mutated.add(_dotted(target.value))
        elif isinstance(target, ast.Attribute):
            if target.attr in ("reduction", "log_target"):
                self.mutated.add(_dotted(target.value))
            cls = self_class(target.value, scope)
            if cls is not None:
                kind = "value" if value is not None else "other"
                cls.attrs.setdefault(target.attr, []).append(Binding(kind, scope, value=value))
        elif isinstance(target, ast.Starred | ast.Tuple | ast.List):
            for node in ast.walk(target):
                if isinstance(node, ast.Name | ast.Attribute):
                    self._assign(node, None, at)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                binding = Binding("import", self._scope, alias.name, at=self._here)
                self._scope.bind(alias.asname, binding)
            else:
                top = alias.name.partition(".")[0]
                self._scope.bind(top, Binding("import", self._scope, top, at=self._here))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                continue
            name = alias.asname or alias.name
            if node.level or not node.module:  # a relative import is the project's own
                self._scope.bind(name, Binding("other", self._scope, at=self._here))
            else:
                qualname = f"{node.module}.{alias.name}"
                self._scope.bind(name, Binding("import", self._scope, qualname, at=self._here))

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        if isinstance(node.value, ast.Call):
            self.holders[node.value] = {_dotted(t) for t in node.targets} - {None}
        for target in node.targets:
            self._assign(target, node.value, self._here)
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        if node.value is not None:
            self._assign(node.target, node.value, self._here)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.generic_visit(node)
        self._assign(node.target, None, self._here)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._scope.function.bind(node.target.id, Binding("other", self._scope))

    def visit_Global(self, node: ast.Global) -> None:
        if self._scope is not self.module:
            for name in node.names:
                self._scope.redirect[name] = self.module

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        outer = self._scope.parent or self.module
        while outer.kind == "class" and outer.parent is not None:
            outer = outer.parent
        for name in node.names:
            outer.bind(name, Binding("other", outer))  # changed from inside: undecided
            self._scope.redirect[name] = outer

    def _targets(self, node: ast.AST) -> None:
        self._other(node)
        self.generic_visit(node)

    def _loop(self, node: ast.For | ast.AsyncFor) -> None:
        self._targets(node.target)
        for child in (node.iter, *node.body, *node.orelse):
            self.visit(child)

    visit_For = _loop
    visit_AsyncFor = _loop

    def visit_withitem(self, node: ast.withitem) -> None:
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            self._other(node.optional_vars)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._scope.bind(node.name, Binding("other", self._scope))
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            # unbinding has no place in the order kept: every binding then counts
            self._assign(target, None, None)

    def visit_match_case(self, node: ast.match_case) -> None:
        for sub in ast.walk(node.pattern):
            name = getattr(sub, "name", None) or getattr(sub, "rest", None)
            if isinstance(name, str):
                self._scope.bind(name, Binding("other", self._scope))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.calls.append((node, self._scope))
        if isinstance(node.func, ast.Attribute) and node.func.attr in _CONTAINER_EDITS:
            self.mutated.add(_dotted(node.func.value))  # model.append(...): its last module moves
        self.generic_visit(node)

    @contextlib.contextmanager
    def _inside(self, scope: Scope) -> Iterator[None]:
        outer, top = self._scope, self._top
        self._scope, self._top = scope, None
        try:
            yield
        finally:
            self._scope, self._top = outer, top

    def _enter(self, scope: Scope, body: list[ast.stmt] | list[ast.expr]) -> None:
        with self._inside(scope):
            for child in body:
                self._top = child if isinstance(child, ast.stmt) else None
                self.visit(child)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        for default in (*args.defaults, *args.kw_defaults):
            if default is not None:
                self.visit(default)
        outer = self._scope
        positional = [*args.posonlyargs, *args.args]
        self_name = cls = None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                self.visit(decorator)
            outer.bind(node.name, Binding("other", outer, at=self._here))
            static = any(
                isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
                for d in node.decorator_list
            )
            if outer.kind == "class" and positional and not static:
                self_name, cls = positional[0].arg, outer.cls
        scope = Scope(node, outer, "function", cls=cls, self_name=self_name)
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += args.defaults
        pairs = [
            *zip(positional, defaults, strict=True),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        for arg in (args.vararg, args.kwarg):
            if arg is not None:
                pairs.append((arg, None))
        for arg, default in pairs:
            scope.bind(arg.arg, Binding("param", outer, value=default, at=ENTRY))
        body = node.body if isinstance(node.body, list) else [node.body]
        self._enter(scope, body)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child)
        self._scope.bind(node.name, Binding("other", self._scope, at=self._here))
        self._enter(Scope(node, self._scope, "class", cls=ClassInfo()), node.body)

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        with self._inside(Scope(node, self._scope, "comprehension")):
            for index, generator in enumerate(node.generators):
                self._other(generator.target)
                if index:
                    self.visit(generator.iter)
                for condition in generator.ifs:
                    self.visit(condition)
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for element in elements:
                self.visit(element)

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_GeneratorExp = _comprehension
    visit_DictComp = _comprehension


def _dotted(expr: ast.expr) -> str | None:
    """``crit`` or ``self.crit``; None for anything longer."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        return f"{expr.value.id}.{expr.attr}"
    return None

"""The loss family's rule: the input's visible space against its contract, and the certain fix.

``F.cross_entropy(F.softmax(x, 1), y)``, ``F.nll_loss(x.softmax(-1), y)``,
``nn.BCEWithLogitsLoss()(torch.sigmoid(x), y)``: each contract
(``_contract.FAMILY``) names the spaces that are certainly wrong for its
input and the code that says so. A fix is written only where the activation
is the input expression itself.
"""

from __future__ import annotations

import ast

from kl_guard._contract import FAMILY, LossContract, Space
from kl_guard._lint import _fixes
from kl_guard._lint._files import Document
from kl_guard._lint._model import Applicability, Edit
from kl_guard._lint._names import Names
from kl_guard._lint._scopes import Scope
from kl_guard._lint._spaces import Visible

#: Each family loss by its functional form's and its module class's qualified names.
BY_FUNCTION = {contract.function: contract for contract in FAMILY}
BY_MODULE = {name: contract for contract in FAMILY for name in contract.module_names}

_ACTIVATIONS = {
    "torch.nn.functional.softmax": Space.PROB,
    "torch.softmax": Space.PROB,
    "torch.special.softmax": Space.PROB,
    "torch.nn.functional.sigmoid": Space.NONNEG,
    "torch.sigmoid": Space.NONNEG,
    "torch.special.expit": Space.NONNEG,
}
_METHODS = {"softmax": Space.PROB, "sigmoid": Space.NONNEG}


def misuse(contract: LossContract, visible: Visible | None) -> str | None:
    """The code of a visibly wrong input, or None."""
    return None if visible is None else contract.argument("input").misuse.get(visible.kind)


def fix(
    doc: Document, names: Names, contract: LossContract, node: ast.expr, scope: Scope
) -> tuple[Applicability, tuple[Edit, ...]]:
    """The edit that corrects an input made by an inline activation, and how safe it is.

    A loss that applies its own activation gets the activation's argument
    (the logits); nll_loss gets ``log_softmax`` for ``softmax``. Dropping a
    sigmoid before cross_entropy trains a softmax the code never had: unsafe.
    """
    made = _activation(names, node, scope)
    if made is None:
        return Applicability.NONE, ()
    space, inner = made
    if contract.applies is None:
        assert isinstance(node, ast.Call)
        edit = _fixes.rename_softmax(doc, node.func) if space is Space.PROB else None
        return (Applicability.SAFE, (edit,)) if edit else (Applicability.NONE, ())
    safe = space is Space.PROB or contract.applies == "the sigmoid"
    applicability = Applicability.SAFE if safe else Applicability.UNSAFE
    return applicability, (_fixes.replace(doc, node, _fixes.text(doc, inner)),)


def _tensor_method_arguments(call: ast.Call) -> bool:
    """Whether ``call``'s arguments are a tensor method's: ``x.softmax(1)`` or
    ``x.softmax(dim=-1)``, ``x.sigmoid()``; a module's ``act(h)`` takes a tensor."""
    assert isinstance(call.func, ast.Attribute)
    if call.func.attr == "sigmoid":
        return not call.args and not call.keywords
    dims = [*call.args, *(k.value for k in call.keywords if k.arg == "dim")]
    return len(dims) == 1 and len(call.args) + len(call.keywords) == 1 and _int(dims[0])


def _int(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _activation(names: Names, node: ast.expr, scope: Scope) -> tuple[Space, ast.expr] | None:
    """The space an inline softmax or sigmoid call makes, and its argument; None for
    anything else (a name, a method chain, a dim or keyword beyond the tensor's)."""
    if not isinstance(node, ast.Call) or any(k.arg is None for k in node.keywords):
        return None
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr in _METHODS
        and names.qualname(func, scope) is None
        and names.self_class(func.value, scope) is None  # self.softmax(h): a module's
        and _tensor_method_arguments(node)
    ):
        return _METHODS[func.attr], func.value  # x.softmax(1), x.sigmoid()
    qualname = names.qualname(func, scope)
    if qualname in _ACTIVATIONS and node.args and not isinstance(node.args[0], ast.Starred):
        return _ACTIVATIONS[qualname], node.args[0]
    return None

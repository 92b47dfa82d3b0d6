"""Safe expressions for `when:` and `set:`: Python syntax, a whitelist interpreter, never eval.

Allowed: literals (numbers, strings, true/false/null, lists), variable names, `a.b` and
`a["b"]`/`a[0]` on variables (dict keys and list items only, never object attributes),
arithmetic (+ - * / // %), comparisons (incl. `in`, `not in`), `and`/`or`/`not`,
`x if c else y`, and calls to the functions in FUNCTIONS. Everything else is refused
when the flow is validated.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any


class ExprError(Exception):
    """An expression that is not allowed (at validation) or failed (at run time)."""


def _lower(x: Any) -> str:
    return str(x).lower()


def _upper(x: Any) -> str:
    return str(x).upper()


def _digits(x: Any) -> str:
    return "".join(c for c in str(x) if c.isdigit())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "lower": _lower,
    "upper": _upper,
    "digits": _digits,
}
# Functions whose answer depends on the service (bound per call by the interpreter):
# open("support") is whether the `[hours support]` business hours are open now;
# opening_hours("support") says them ("Monday to Friday from 8 AM to 6 PM").
SERVICE_FUNCTIONS = frozenset({"open", "opening_hours"})
CONSTANTS = {"true": True, "false": False, "null": None, "none": None, "True": True, "False": False,
             "None": None}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_MAX_LEN = 10_000  # strings/lists built by `*` or `+`: a flow must not exhaust memory


class Expr:
    """A checked expression; `names` are the root variables it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExprError(f"not a valid expression: {exc.msg}") from None
        self.names: set[str] = set()
        self._check(tree.body)
        self._tree = tree.body

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    # ---- validation ------------------------------------------------------
    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (str, int, float, bool, type(None))):
                raise ExprError(f"literal {node.value!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise ExprError(f"name {node.id!r} is not allowed (names starting with _ are private)")
            if node.id not in CONSTANTS:
                self.names.add(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise ExprError(f"attribute {node.attr!r} is not allowed (dunder/private access)")
            self._check(node.value)
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                raise ExprError("slices are not allowed")
            self._check(node.value)
            self._check(node.slice)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ExprError(f"operator {type(node.op).__name__} is not allowed")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
                raise ExprError(f"operator {type(node.op).__name__} is not allowed")
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise ExprError(f"comparison {type(op).__name__} is not allowed")
            self._check(node.left)
            for c in node.comparators:
                self._check(c)
        elif isinstance(node, ast.IfExp):
            for part in (node.test, node.body, node.orelse):
                self._check(part)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for e in node.elts:
                self._check(e)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExprError("only plain function calls are allowed, e.g. len(x) (no methods)")
            if node.func.id not in FUNCTIONS and node.func.id not in SERVICE_FUNCTIONS:
                allowed = ", ".join(sorted({*FUNCTIONS, *SERVICE_FUNCTIONS}))
                raise ExprError(f"function {node.func.id!r} is not allowed (allowed: {allowed})")
            if node.keywords:
                raise ExprError("keyword arguments are not allowed")
            for a in node.args:
                if isinstance(a, ast.Starred):
                    raise ExprError("*args is not allowed")
                self._check(a)
        else:
            raise ExprError(f"{type(node).__name__} is not allowed in an expression")

    # ---- evaluation ------------------------------------------------------
    def evaluate(self, variables: Mapping[str, Any],
                 functions: Mapping[str, Callable[..., Any]] | None = None) -> Any:
        """The value; `functions` binds SERVICE_FUNCTIONS (unbound ones fail with ExprError)."""
        try:
            return self._eval(self._tree, _Scope(variables, functions or {}))
        except ExprError:
            raise
        except Exception as exc:  # ZeroDivisionError, TypeError on bad operand types...
            raise ExprError(f"{self.source!r} failed: {type(exc).__name__}: {exc}") from None

    def _eval(self, node: ast.AST, v: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            return v.get(node.id)
        if isinstance(node, ast.Attribute):
            return _item(self._eval(node.value, v), node.attr)
        if isinstance(node, ast.Subscript):
            return _item(self._eval(node.value, v), self._eval(node.slice, v))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for part in node.values:
                    result = self._eval(part, v)
                    if not result:
                        return result
                return result
            result = False
            for part in node.values:
                result = self._eval(part, v)
                if result:
                    return result
            return result
        if isinstance(node, ast.BinOp):
            out = _BINOPS[type(node.op)](self._eval(node.left, v), self._eval(node.right, v))
            if isinstance(out, (str, list)) and len(out) > _MAX_LEN:
                raise ExprError(f"{self.source!r} built a value longer than {_MAX_LEN}")
            return out
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, v)
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, v)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, v)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body if self._eval(node.test, v) else node.orelse, v)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, v) for e in node.elts]
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            bound = v.functions if isinstance(v, _Scope) else {}
            fn = FUNCTIONS.get(node.func.id) or bound.get(node.func.id)
            if fn is None:
                raise ExprError(f"{node.func.id}() is not available here")
            return fn(*(self._eval(a, v) for a in node.args))
        raise ExprError(f"{type(node).__name__} is not allowed")  # unreachable after _check


class _Scope(Mapping[str, Any]):
    """The variables of one evaluation, with the service functions bound for it."""

    def __init__(self, variables: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> None:
        self.variables, self.functions = variables, functions

    def __getitem__(self, key: str) -> Any:
        return self.variables[key]

    def __iter__(self) -> Any:
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)

    def get(self, key: str, default: Any = None) -> Any:
        return self.variables.get(key, default)


def _item(container: Any, key: Any) -> Any:
    """`a.b` / `a[k]`: dict keys and list indexes only; a missing key gives null."""
    if container is None:
        return None
    if isinstance(container, Mapping):
        return container.get(key)
    if isinstance(container, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else None
    raise ExprError(f"cannot look up {key!r} in a {type(container).__name__}")

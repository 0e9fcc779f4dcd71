"""A small, safe expression language, for grad-demo and for models' predictions.

Only numbers, names (grad-demo's `x`; a model's parameters and data columns), the constant `pi`,
+ - * / **, unary minus, parentheses, the comparisons < <= > >= and the functions of one table
(functions.py: each with its torch form, its numpy form and its derivative). User text is parsed
by `ast.parse`, checked against that whitelist and never evaluated, executed or compiled to code:
grad-demo walks the tree, and `compile_model` turns it once into nested closures over torch calls.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Callable, Collection, Mapping

from gdfit.lazy import torch

from gdfit.errors import ExpressionError
from gdfit.expr.functions import BY_NAME, COMPARISONS, FUNCTION_NAMES
from gdfit.words import plural

MAX_LENGTH = 400
MAX_DEPTH = 40
MAX_NODES = 200

# grad-demo's forms: its sum and mean reduce the whole tensor (a model's, the data points)
FUNCTIONS: dict[str, Callable] = {name: BY_NAME[name].torch for name in FUNCTION_NAMES}
FUNCTIONS.update(sum=lambda t: torch.sum(t), mean=lambda t: torch.mean(t))  # torch read at the call
CONSTANTS = {"pi": math.pi}
BINARY = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul),
          ast.Div: ("/", operator.truediv), ast.Pow: ("**", operator.pow)}
UNARY = {ast.USub: "-", ast.UAdd: "+"}
COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
ALLOWED = ("numbers, names, pi, + - * / **, unary minus, parentheses, " + " ".join(COMPARISONS)
           + " and " + " ".join(FUNCTION_NAMES))


@dataclass
class Node:
    """A named intermediate: `x3 = x1 * x2`, its value and the grad_fn autograd gave it."""

    name: str
    operation: str
    value: torch.Tensor


def parse(text: str, key: str = "--expr", names: Collection[str] = ("x",),
          unknown: str = "the only variable is x") -> ast.Expression:
    """Parse and check an expression; ExpressionError (exit 2) for anything outside the language.
    `names` are the variables it may use; `unknown` says which they are, for the error."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters; at most {MAX_LENGTH} are allowed", key=key)
    if not text.strip():
        raise ExpressionError("expression is empty", key=key)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"not a valid expression: {err.msg} (column {err.offset})", key=key) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("expression is nested too deeply", key=key) from None
    count = _Checker(key, names, unknown).check(tree.body, 0, 0)
    if count > MAX_NODES:
        raise ExpressionError(f"expression has {plural(count, 'part')}; at most {MAX_NODES} are allowed", key=key)
    return tree


def names_in(tree: ast.Expression) -> set[str]:
    """The variables a checked expression uses (not pi, not function names)."""
    return _parts(tree.body, set(), set())[0]


def functions_in(tree: ast.Expression) -> set[str]:
    """The functions a checked expression calls."""
    return _parts(tree.body, set(), set())[1]


def _parts(node: ast.AST, names: set[str], functions: set[str]) -> tuple[set[str], set[str]]:
    """The variables and functions below node, by the checked language's own node types (a
    generic ast.walk visits every field of every node, several times slower)."""
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            names.add(node.id)
    elif isinstance(node, ast.BinOp):
        _parts(node.left, names, functions)
        _parts(node.right, names, functions)
    elif isinstance(node, ast.UnaryOp):
        _parts(node.operand, names, functions)
    elif isinstance(node, ast.Call):
        functions.add(node.func.id)
        for arg in node.args:
            _parts(arg, names, functions)
    elif isinstance(node, ast.Compare):
        _parts(node.left, names, functions)
        _parts(node.comparators[0], names, functions)
    return names, functions


def call_parts(node: ast.AST) -> tuple[str, list[ast.AST]] | None:
    """A checked call or comparison as (its table name, its arguments); None for other nodes."""
    if isinstance(node, ast.Call):
        return node.func.id, node.args
    if isinstance(node, ast.Compare):
        return COMPARE[type(node.ops[0])], [node.left, node.comparators[0]]
    return None


class _Checker:
    def __init__(self, key: str, names: Collection[str], unknown: str) -> None:
        self.key, self.names, self.unknown = key, names, unknown

    def check(self, node: ast.AST, depth: int, count: int) -> int:
        try:
            return _check(node, depth, count, self)
        except ExpressionError as err:
            err.key = self.key
            raise


def _check(node: ast.AST, depth: int, count: int, checker: _Checker) -> int:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression is nested more than {MAX_DEPTH} levels deep", key="--expr")
    count += 1
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}", key="--expr")
        if isinstance(node.value, int) and abs(node.value) > 10**15:
            raise ExpressionError(f"the number {str(node.value)[:20]}... is too large", key="--expr")
        return count
    if isinstance(node, ast.Name):
        if node.id not in checker.names and node.id not in CONSTANTS:
            raise ExpressionError(f"unknown name {node.id!r}: {checker.unknown}", key="--expr")
        return count
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        count = _check(node.right, depth + 1, _check(node.left, depth + 1, count, checker), checker)
        if isinstance(node.op, ast.Div) and _constant(node.right) == 0:
            # inf or NaN wherever it is evaluated: no start value or data could fix it
            raise ExpressionError(f"{ast.unparse(node)[:40]!r} divides by zero", key="--expr")
        return count
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return _check(node.operand, depth + 1, count, checker)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)[:30]
            raise ExpressionError(f"unknown function {name!r}; allowed: {', '.join(FUNCTIONS)}", key="--expr")
        arity = BY_NAME[node.func.id].arity
        if len(node.args) != arity or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{node.func.id}() takes exactly {plural(arity, 'argument')}, got "
                                  f"{len(node.args) + len(node.keywords)}", key="--expr")
        for arg in node.args:
            count = _check(arg, depth + 1, count, checker)
        return count
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise ExpressionError("chained comparisons (a < b < c) are not allowed; the language has "
                                  "(a < b) * (b < c)", key="--expr")
        if type(node.ops[0]) not in COMPARE:
            raise ExpressionError(f"the comparison {ast.unparse(node)[:30]!r} is not allowed; the language has "
                                  f"{' '.join(COMPARISONS)}", key="--expr")
        return _check(node.comparators[0], depth + 1, _check(node.left, depth + 1, count, checker), checker)
    raise ExpressionError(f"{describe(node)} not allowed; the language has {ALLOWED}", key="--expr")


# Python's syntax in the user's words, for "... is not allowed" (ast class names mean nothing to them)
WORDS = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing",
    ast.BoolOp: "and/or", ast.IfExp: "if-else", ast.Lambda: "lambda", ast.NamedExpr: "assignment (:=)",
    ast.JoinedStr: "f-strings", ast.List: "lists", ast.Tuple: "tuples", ast.Set: "sets", ast.Dict: "dicts",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.Starred: "unpacking (*)", ast.Slice: "slices",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}
OPERATORS = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
             ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~", ast.Not: "not"}


def _constant(node: ast.AST) -> float | None:
    """The value of a sub-expression of numbers and + - * / only (checked already), else None."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        inner = _constant(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.Pow):
        left, right = _constant(node.left), _constant(node.right)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return BINARY[type(node.op)][1](left, right)
    return None


def describe(node: ast.AST) -> str:
    """`attribute access (b1.x) is`, `the operator // is`: what the user wrote, in words."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        symbol = OPERATORS.get(type(node.op), type(node.op).__name__)
        return f"the operator {symbol} is"
    what = WORDS.get(type(node), "this kind of expression")
    text = ast.unparse(node)
    shown = "" if len(text) > 30 else f" {text}" if text.startswith("(") and text.endswith(")") else f" ({text})"
    plural = what.endswith("s") and what not in ("attribute access", "and/or")
    return f"{what}{shown} {'are' if plural else 'is'}"


class Evaluator:
    """Evaluates a checked tree on x, naming each x-dependent sub-expression x1, x2, ..."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.nodes: list[Node] = []

    def run(self, tree: ast.Expression) -> tuple[torch.Tensor, str]:
        """The value of the whole expression and its display text."""
        return self._eval(tree.body)

    def _name(self, value: torch.Tensor | float, operation: str) -> tuple[torch.Tensor | float, str]:
        if not isinstance(value, torch.Tensor) or not value.requires_grad:  # a constant sub-expression: show it inline, unnamed
            return value, operation
        name = f"x{len(self.nodes) + 1}"
        self.nodes.append(Node(name, operation, value))
        return value, name

    def _eval(self, node: ast.AST) -> tuple[torch.Tensor, str]:
        if isinstance(node, ast.Constant):
            # a plain number, as in the tutorial's `x + 2` (so x ** 3 is PowBackward0, not 1)
            return float(node.value), repr(node.value)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id], node.id
            return self.x, "x"
        if isinstance(node, ast.UnaryOp):
            value, text = self._eval(node.operand)
            if isinstance(node.op, ast.UAdd):
                return value, text
            return self._name(-value, f"-{_wrap(text)}")
        if isinstance(node, ast.BinOp):
            left, ltext = self._eval(node.left)
            right, rtext = self._eval(node.right)
            symbol, op = BINARY[type(node.op)]
            if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
                left = torch.tensor(left, dtype=self.x.dtype)  # no Python float overflow or huge ints
            return self._name(op(left, right), f"{_wrap(ltext)} {symbol} {_wrap(rtext)}")
        name, args = call_parts(node)  # a call or a comparison, guaranteed by _check
        evaluated = [self._eval(arg) for arg in args]
        values = [v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=self.x.dtype) for v, _ in evaluated]
        texts = [text for _, text in evaluated]
        if isinstance(node, ast.Compare):
            return self._name(BY_NAME[name].torch(*values), f"{_wrap(texts[0])} {name} {_wrap(texts[1])}")
        return self._name(FUNCTIONS[name](*values), f"{name}({', '.join(texts)})")


def _wrap(text: str) -> str:
    return f"({text})" if " " in text and not text.endswith(")") else text


def evaluate(tree: ast.Expression, x: torch.Tensor) -> tuple[torch.Tensor, list[Node]]:
    """y and the named nodes; the last node is y itself when y depends on x."""
    evaluator = Evaluator(x)
    y, _ = evaluator.run(tree)
    return y, evaluator.nodes


def function_of(tree: ast.Expression) -> Callable[[torch.Tensor], torch.Tensor]:
    """The expression as a plain function of x (for finite differences)."""
    return lambda x: evaluate(tree, x)[0]


# ---------------------------------------------------------------- models: compiled once

Compiled = Callable[[Mapping[str, "torch.Tensor"]], "torch.Tensor"]
# The table's torch and numpy forms; reductions in a model run over the data points (the last
# dimension), one value per run.
MODEL_FUNCTIONS: dict[str, Callable] = {f.name: f.torch for f in BY_NAME.values()}
NUMPY_FUNCTIONS: dict[str, Callable] = {f.name: f.numpy for f in BY_NAME.values()}


def compile_model(tree: ast.Expression, functions: Mapping[str, Callable] = MODEL_FUNCTIONS) -> Compiled:
    """The checked expression as a function of its variables (parameters [K, 1], columns [n]):
    nested closures over torch calls (or, given NUMPY_FUNCTIONS, numpy calls), built
    once, so an update never walks the tree again. Sub-expressions without variables are folded
    into one number here, in float64."""
    compiled = _compile(tree.body, functions)
    if isinstance(compiled, float):
        if functions is MODEL_FUNCTIONS:
            return lambda env: torch.tensor(compiled, dtype=torch.float64)
        return lambda env: compiled
    return compiled


def _compile(node: ast.AST, functions: Mapping[str, Callable]) -> Compiled | float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        name = node.id
        return lambda env: env[name]
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, functions)
        if isinstance(node.op, ast.UAdd):
            return inner
        return _fold(operator.neg, inner) if isinstance(inner, float) else (lambda env: -inner(env))
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left, functions), _compile(node.right, functions)
        op = BINARY[type(node.op)][1]
        if isinstance(left, float) and isinstance(right, float):
            return _fold(op, left, right)
        if isinstance(left, float):
            return lambda env: op(left, right(env))
        if isinstance(right, float):
            return lambda env: op(left(env), right)
        return lambda env: op(left(env), right(env))
    name, args = call_parts(node)  # a call or a comparison, guaranteed by _check
    fn, inner = functions[name], [_compile(arg, functions) for arg in args]
    if all(isinstance(arg, float) for arg in inner):  # folded by torch on either path: the same number
        return _fold(MODEL_FUNCTIONS[name], *inner)
    if len(inner) == 1:
        (only,) = inner
        return lambda env: fn(only(env))
    parts = [(lambda env, c=arg: c) if isinstance(arg, float) else arg for arg in inner]
    return lambda env: fn(*(part(env) for part in parts))


def _fold(op: Callable, *values: float) -> float:
    """A constant sub-expression's value, as float64 tensors compute it (inf, not an exception)."""
    return float(op(*(torch.tensor(v, dtype=torch.float64) for v in values)))

"""A model expression's value and exact Jacobian in one pass: forward-mode derivatives, compiled once.

`compile_dual` turns a checked expression tree into nested closures, as `expr.compile_model` does,
each returning a value and its tangent: d value / d (fitted parameters), or None where the value
does not depend on them. A tangent is sparse, {parameter's index: d value / d parameter}, each
entry shaped as the value (or broadcasting to it): a sub-expression depends on a few of the
parameters, and an operation then costs one numpy call per parameter it depends on, on arrays of
the points alone, where a dense [..., P] tangent costs a few calls on arrays P times the size
(and a parameter's own seed, 1, multiplies nothing: b2*x's tangent is x). Every rule is the
chain rule of one operation, the same derivative torch's autograd uses for it
(tests/expr/test_derivatives.py holds them to autograd). The operators' rules are here; each
function's partials are its entry in functions.py's table (tests/expr/test_functions.py holds them to
finite differences and autograd).

They work on numpy arrays, on the host: lm's algebra is there already (lm.py), and for a curve
fit's few parameters and points a numpy operation costs a fraction of a torch call's dispatch, so
a whole update's evaluations stay on the host (hostcurve.py).
"""

from __future__ import annotations

import ast
import operator
from typing import Callable, Mapping

import numpy as np

from gdfit.expr.functions import BY_NAME, Function
from gdfit.expr.language import BINARY, CONSTANTS, MODEL_FUNCTIONS, NUMPY_FUNCTIONS, _fold, call_parts

Value = np.ndarray | float
Tangent = dict[int, Value] | None  # parameter's index -> derivative; None: no dependence on the fitted parameters
Dual = tuple[Value, Tangent]
DualCompiled = Callable[[Mapping[str, Value], Mapping[str, np.ndarray]], Dual]


def compile_dual(tree: ast.Expression) -> DualCompiled:
    """The checked expression as f(values, tangents) -> (value, tangent): `values` as for
    `compile_model`, in numpy; `tangents` maps each fitted parameter to its own tangent, {i: SEED}
    for parameter i (or {i: a [K, 1] mask}, 0 for runs where it is held)."""
    compiled = _dual(tree.body)
    if isinstance(compiled, float):
        return lambda env, seeds: (np.float64(compiled), None)
    return compiled


def _dual(node: ast.AST) -> DualCompiled | float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        name = node.id
        return lambda env, seeds: (env[name], seeds.get(name))
    if isinstance(node, ast.UnaryOp):
        inner = _dual(node.operand)
        if isinstance(node.op, ast.UAdd):
            return inner
        if isinstance(inner, float):
            return _fold(operator.neg, inner)
        return lambda env, seeds: _negate(*inner(env, seeds))
    if isinstance(node, ast.BinOp):
        left, right = _dual(node.left), _dual(node.right)
        if isinstance(left, float) and isinstance(right, float):
            return _fold(BINARY[type(node.op)][1], left, right)
        rule = RULES[type(node.op)]
        lhs = (lambda env, seeds: (left, None)) if isinstance(left, float) else left
        rhs = (lambda env, seeds: (right, None)) if isinstance(right, float) else right
        return lambda env, seeds: rule(*lhs(env, seeds), *rhs(env, seeds))
    name, args = call_parts(node)  # a call or a comparison, guaranteed by expr's checker
    inner = [_dual(arg) for arg in args]
    if all(isinstance(arg, float) for arg in inner):
        return _fold(MODEL_FUNCTIONS[name], *inner)  # as expr folds it
    rule = FUNCTION_RULES[name]
    if len(inner) == 1:
        (only,) = inner
        return lambda env, seeds: rule(*only(env, seeds))
    parts = [(lambda env, seeds, c=arg: (c, None)) if isinstance(arg, float) else arg for arg in inner]
    return lambda env, seeds: rule(*(part(env, seeds) for part in parts))


# ---------------------------------------------------------------- the chain rule, one operation each

# d parameter / d itself. A tangent entry that is this very object is not multiplied (1.0 * f is f,
# bit for bit): the test is `is`, for one comparison per entry instead of an array's
SEED = 1.0


def _times(t: Tangent, factor: Value) -> Tangent:
    """t scaled point by point."""
    if t is None:
        return None
    return {i: factor if d is SEED else d * factor for i, d in t.items()}


def _over(t: Tangent, divisor: Value) -> Tangent:
    if t is None:
        return None
    # numpy's division: a constant divisor of 0 (folded, as sin(0)) gives inf, as torch does, not an exception
    return {i: np.divide(d, divisor) for i, d in t.items()}


def _sum(a: Tangent, b: Tangent) -> Tangent:
    if a is None or b is None:
        return a if b is None else b
    total = dict(a)
    for i, d in b.items():
        total[i] = total[i] + d if i in total else d
    return total


def _negative(t: Tangent) -> Tangent:
    return None if t is None else {i: -d for i, d in t.items()}


def _negate(v: Value, t: Tangent) -> Dual:
    return -v, _negative(t)


def _add(lv, lt, rv, rt) -> Dual:
    return lv + rv, _sum(lt, rt)


def _subtract(lv, lt, rv, rt) -> Dual:
    return lv - rv, _sum(lt, _negative(rt))


def _multiply(lv, lt, rv, rt) -> Dual:
    return lv * rv, _sum(_times(lt, rv), _times(rt, lv))


def _divide(lv, lt, rv, rt) -> Dual:
    value = np.divide(lv, rv)
    return value, _sum(_over(lt, rv), _over(_times(rt, value), -rv))


def _power(lv, lt, rv, rt) -> Dual:
    """d(l^r) = r l^(r-1) dl + l^r log(l) dr; a constant exponent needs only the first term and
    a constant base only the second (autograd's pow rules: no log of a negative base then). As
    autograd, a zero exponent has no slope in l, and l = 0 none in r where r >= 0 (the limit of
    l^r log(l), not 0 * -inf). Where l does not move (dl = 0, as t / tau at t = 0), l^r does not
    either, even where r l^(r-1) is infinite (l = 0, r < 1): there autograd says 0 * inf = NaN,
    and lm could not step at all."""
    value = np.power(lv, rv)
    tangent = None
    if lt is not None:
        slope = np.where(rv == 0, 0.0, rv * np.power(lv, rv - 1))
        tangent = {i: np.where(d == 0, 0.0, d * slope) for i, d in _times(lt, 1.0).items()}
    if rt is not None:
        tangent = _sum(tangent, _times(rt, np.where((lv == 0) & (rv >= 0), 0.0, value * np.log(lv))))
    return value, tangent


RULES = {ast.Add: _add, ast.Sub: _subtract, ast.Mult: _multiply, ast.Div: _divide, ast.Pow: _power}


def _reduce(v: np.ndarray, t: Tangent, how: str) -> Dual:
    """sum or mean over the data points (the last dimension), as NUMPY_FUNCTIONS: a tangent that
    is the same at every point (a parameter's) counts once per point in a sum."""
    value = NUMPY_FUNCTIONS[how](v)
    if t is None:
        return value, None
    reduce = NUMPY_FUNCTIONS[how]
    return value, {i: reduce(np.broadcast_to(d, np.broadcast_shapes(np.shape(v), np.shape(d)))) for i, d in t.items()}


def _unary(function: Callable, derivative: Callable) -> Callable[[Value, Tangent], Dual]:
    """The rule for f(l): derivative(l, f(l)) is f'(l)."""
    def rule(v, t):
        value = function(v)
        return value, _times(t, derivative(v, value))
    return rule


def _many(function: Callable, partials: tuple) -> Callable[..., Dual]:
    """The rule for f(a, b, ...), given (value, tangent) pairs: the sum over the arguments that
    depend on the fitted parameters of their tangent times partial(a, b, ..., f)."""
    def rule(*duals: Dual) -> Dual:
        values = [v for v, _ in duals]
        value = function(*values)
        tangent = None
        for (_, t), partial in zip(duals, partials):
            if t is not None and partial is not None:
                tangent = _sum(tangent, _times(t, partial(*values, value)))
        return value, tangent
    return rule


def _rule(function: Function) -> Callable[..., Dual]:
    if function.reduction:
        return lambda v, t: _reduce(v, t, function.name)
    if function.arity == 1:
        return _unary(function.numpy, function.partials[0])
    return _many(function.numpy, function.partials)


FUNCTION_RULES: dict[str, Callable[..., Dual]] = {name: _rule(f) for name, f in BY_NAME.items()}

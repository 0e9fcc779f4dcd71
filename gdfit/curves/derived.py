"""Derived parameters: `params: {b: {expr: "2 * a"}}` makes b a function of the other parameters.

A derived parameter is not fitted. Its expression is substituted into the model's wherever its
name appears (so the fit and its Jacobian see only the fitted parameters), and it is reported with
its value and a standard error propagated from the covariance to first order (the delta method, as
lmfit does through `uncertainties`): var b = g^T C g, with g = d b / d (fitted parameters).
"""

from __future__ import annotations

import ast
import copy
import math
from typing import Any, Mapping

import numpy as np

from gdfit.errors import ConfigError
from gdfit.expr.derivatives import SEED, compile_dual
from gdfit.expr.language import NUMPY_FUNCTIONS, compile_model, names_in, parse


def resolve(exprs: Mapping[str, str], params: tuple[str, ...], source: str | None) -> dict[str, ast.Expression]:
    """Each derived parameter's expression, parsed and with every derived name in it replaced by
    that parameter's own expression: a tree over the other parameters only. ConfigError (exit 2)
    for a name that is no parameter and for parameters defined through each other in a circle."""
    trees = {}
    for name, text in exprs.items():
        others = [p for p in params if p != name]
        trees[name] = parse(text, key=f"model.params.{name}.expr", names=set(others),
                            unknown=f"a derived parameter is a function of the parameters ({', '.join(others)})")
    resolved: dict[str, ast.Expression] = {}
    for name in trees:
        _resolve(name, trees, resolved, [], source)
    return resolved


def _resolve(name: str, trees: dict[str, ast.Expression], done: dict[str, ast.Expression], path: list[str],
             source: str | None) -> ast.Expression:
    if name in done:
        return done[name]
    if name in path:
        circle = " -> ".join(path[path.index(name):] + [name])
        raise ConfigError(f"derived parameters are defined through each other in a circle: {circle}",
                          source=source, key=f"model.params.{path[path.index(name)]}.expr")
    inner = {n: _resolve(n, trees, done, path + [name], source) for n in names_in(trees[name]) if n in trees}
    done[name] = substitute(trees[name], inner)
    return done[name]


def substitute(tree: ast.Expression, trees: Mapping[str, ast.Expression]) -> ast.Expression:
    """`tree` with each name in `trees` replaced by that tree's body (a new tree; `tree` is kept)."""
    if not trees or not names_in(tree) & set(trees):
        return tree

    class Replace(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            return copy.deepcopy(trees[node.id].body) if node.id in trees else node

    return ast.fix_missing_locations(Replace().visit(copy.deepcopy(tree)))


class Derived:
    """The derived parameters of one model: their trees over the other parameters, compiled once."""

    def __init__(self, trees: Mapping[str, ast.Expression]) -> None:
        self.trees = dict(trees)
        self.functions = {name: compile_model(tree, NUMPY_FUNCTIONS) for name, tree in self.trees.items()}
        self.duals = {name: compile_dual(tree) for name, tree in self.trees.items()}

    def __bool__(self) -> bool:
        return bool(self.trees)

    def __contains__(self, name: str) -> bool:
        return name in self.trees

    def values(self, named: Mapping[str, float]) -> dict[str, float]:
        """Each derived parameter's value at the parameters `named` (fitted and fixed)."""
        env = _environment(named)
        with np.errstate(all="ignore"):
            return {name: _scalar(function(env)) for name, function in self.functions.items()}

    def report(self, named: Mapping[str, float], fitted: tuple[str, ...], covariance: np.ndarray | None
               ) -> dict[str, dict[str, Any]]:
        """`{NAME: {value, stderr, derived: true}}`: each value at the fitted parameters and its
        stderr by the delta method, sqrt(g^T C g) (None without a covariance)."""
        env = _environment(named)
        seeds = {name: {i: SEED} for i, name in enumerate(fitted)}
        entries = {}
        with np.errstate(all="ignore"):
            for name, dual in self.duals.items():
                value, tangent = dual(env, seeds)
                gradient = np.zeros(len(fitted))
                for i, d in (tangent or {}).items():
                    gradient[i] = _scalar(d)
                stderr = None
                if covariance is not None and math.isfinite(_scalar(value)):  # no error bar on an inf or NaN
                    variance = float(gradient @ covariance @ gradient)
                    stderr = math.sqrt(variance) if variance >= 0 else math.nan
                entries[name] = {"value": _scalar(value), "stderr": stderr, "derived": True}
        return entries


def _environment(named: Mapping[str, float]) -> dict[str, np.ndarray]:
    # each parameter as a [1, 1] array: one run, as the host model holds them (reductions see a row)
    return {name: np.full((1, 1), value, dtype=np.float64) for name, value in named.items() if value is not None}


def _scalar(value: Any) -> float:
    return float(np.asarray(value).reshape(-1)[0])

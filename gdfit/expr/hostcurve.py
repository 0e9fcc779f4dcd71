"""A curve fit evaluated on the host in numpy: its weighted prediction and exact Jacobian.

lm (lm.py) does its small dense algebra in float64 numpy. For a curve fit it evaluates the model
there too: a numpy operation on a few hundred points costs a fraction of a torch call's dispatch,
and every trial step, acceleration probe and Jacobian stays on the host without a round trip
through tensors. The expression is the same checked tree, compiled for numpy
(`expr.compile_model` with language.NUMPY_FUNCTIONS, `derivatives.compile_dual`), and the model's
meaning is ExpressionFit's: parameters clamped to their bounds, prediction and Jacobian divided by
sigma. Values are computed in the fit's dtype, as the model on the device computes them.
"""

from __future__ import annotations

import copy

import numpy as np
from gdfit.lazy import torch

from gdfit.expr.derivatives import SEED, compile_dual
from gdfit.expr.language import NUMPY_FUNCTIONS, compile_model


class HostCurve:
    """ExpressionFit's `predict` and its Jacobian for parameters given as a [K, p] numpy array."""

    def __init__(self, model, dtype: np.dtype) -> None:
        self.dtype, self.names, self.points = np.dtype(dtype), model.names, model.points
        host = self.array
        self.fn = compile_model(model.tree, NUMPY_FUNCTIONS)
        self.dual = compile_dual(model.tree)
        self.data = {name: host(column) for name, column in model.columns.items()}  # and the fixed parameters
        self.data.update((name, self.dtype.type(value)) for name, value in model.fixed.items())
        self.bounded = model.bounded
        self.low, self.high, self.sigma = host(model.low), host(model.high), host(model.sigma)
        self.free = {name: {i: SEED} for i, name in enumerate(self.names)}  # each parameter's own tangent

    def select(self, rows: np.ndarray) -> "HostCurve":
        """This form for some of its runs only, where each run has its own data (many fits:
        data and sigma [K, n]); the same form where the runs share them."""
        part = copy.copy(self)
        pick = lambda a: a[rows] if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[0] > 1 else a  # noqa: E731
        part.data = {name: pick(value) for name, value in self.data.items()}
        part.sigma = pick(self.sigma)
        return part

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype.name)

    def array(self, t: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
        """A tensor or an array (the data, a target) as a numpy array in this form's dtype, on the host."""
        if t is None or isinstance(t, np.ndarray):
            return None if t is None else t.astype(self.dtype, copy=False)
        return t.detach().to("cpu", self.torch_dtype).numpy()

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Parameters projected into their bounds (the model's `constrain_`)."""
        return np.clip(x, self.low, self.high) if self.bounded else x

    def _environment(self, theta: np.ndarray) -> dict:
        env = self.data.copy()
        env.update(zip(self.names, theta.T[:, :, None]))  # each parameter as a column [K, 1]
        return env

    def _shaped(self, value, runs: int) -> np.ndarray:
        value = np.asarray(value, dtype=self.dtype)
        shape = (runs, self.points)
        return value if value.shape == shape else np.broadcast_to(value, shape)

    def curve(self, x: np.ndarray) -> np.ndarray:
        """The unweighted prediction f [K, n] at parameters x [K, p] (any float dtype)."""
        theta = self.inside(x.astype(self.dtype, copy=False))
        with np.errstate(all="ignore"):  # overflow is inf and a bad log NaN, as in torch
            return self._shaped(self.fn(self._environment(theta)), len(x))

    def curve_on(self, columns: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The unweighted prediction [K, m] on other values of the columns (a plot's fine grid)."""
        theta = self.inside(x.astype(self.dtype, copy=False))
        env = self._environment(theta)
        env.update((name, self.array(column)) for name, column in columns.items())
        points = len(next(iter(columns.values())))
        with np.errstate(all="ignore"):
            value = np.asarray(self.fn(env), dtype=self.dtype)
        return np.broadcast_to(value, (len(x), points))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The weighted prediction f / sigma [K, n]."""
        value = self.curve(x)
        return value / self.sigma if self.sigma is not None else value

    def predict_and_jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weighted prediction [K, n] and its exact Jacobian d prediction / d theta [K, n, p]
        in one forward-mode pass. A parameter outside its bounds has a zero column, as through
        the clamp; one at a bound has its whole column (the derivative from inside, where lm moves
        it), where autograd through the clamp halves it."""
        theta = x.astype(self.dtype, copy=False)
        runs, count = theta.shape
        if self.bounded:  # per run: 1, or 0 while parameter i is outside its bounds, [K, 1]
            inside = ((theta >= self.low) & (theta <= self.high)).astype(self.dtype)
            theta = np.clip(theta, self.low, self.high)
            seeds = {name: {i: inside[:, i, None]} for i, name in enumerate(self.names)}
        else:
            seeds = self.free
        with np.errstate(all="ignore"):
            value, tangent = self.dual(self._environment(theta), seeds)
            J = np.zeros((runs, count, self.points), self.dtype)  # each parameter's column a row here
            for i, d in (tangent or {}).items():
                J[:, i] = d
            J = J.transpose(0, 2, 1)
            value = self._shaped(value, runs)
            if self.sigma is not None:
                return value / self.sigma, J / self.sigma[..., None]  # sigma [n], or [K, n] per run
            return value, J

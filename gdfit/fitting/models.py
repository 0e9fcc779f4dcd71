"""Models: named parameters and the prediction they make of the target.

The loop updates a model's parameters, whatever the model. Each parameter tensor carries a
leading run dimension, so K runs of one model are one tensor program.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from gdfit.lazy import torch

from gdfit.expr.language import compile_model

Params = dict[str, "torch.Tensor"]


class Model(Protocol):
    """What the descent loop needs of a model."""

    def parameters(self, start: torch.Tensor) -> Params:
        """The runs' starting parameters, from the starts built by `init`."""

    def predict(self, params: Params) -> torch.Tensor:
        """The prediction of the target for each run, [K, *target_shape]."""

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        """The chain rule: d loss / d parameter from d loss / d prediction."""

    def constrain_(self, params: Params) -> None:
        """Put parameters that left their bounds back inside (in place)."""

    def named_tensors(self, params: Params) -> dict[str, torch.Tensor]:
        """One run's parameters by name, and its prediction as `prediction` (for --save)."""


class Identity:
    """The tutorial's problem: x itself is the prediction, fitted element by element."""

    names = ("x",)

    def parameters(self, start: torch.Tensor) -> Params:
        return {"x": start}

    def predict(self, params: Params) -> torch.Tensor:
        return params["x"]

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        return {"x": grad_of_prediction}

    def constrain_(self, params: Params) -> None:
        """x has no bounds."""

    def named_tensors(self, params: Params) -> dict[str, torch.Tensor]:
        return {"x": params["x"].detach(), "prediction": params["x"].detach()}


class ExpressionFit:
    """A curve fit: named scalar parameters and data columns, through a compiled expression.

    The fitted parameters (those with `vary`) are packed as one tensor `theta` [K, p]; fixed ones
    are constants. Bounds are kept by projection: the model only ever sees parameters clamped to
    [min, max], and every update's result is clamped back (`constrain_`), whatever the optimizer.
    With `sigma`, the prediction and the target are both divided by it, so that every loss and
    optimizer works on the weighted residuals (y - f) / sigma.
    """

    def __init__(self, tree, columns: dict[str, torch.Tensor], order: tuple[str, ...], names: tuple[str, ...],
                 fixed: dict[str, float], low: torch.Tensor, high: torch.Tensor, sigma: torch.Tensor | None,
                 points: int) -> None:
        self.tree, self._fn = tree, None  # the checked expression, and its torch form once needed
        self.hosts: dict = {}  # its numpy forms, by dtype
        self.columns, self.order, self.names, self.fixed = columns, order, names, fixed
        self.low, self.high, self.sigma, self.points = low, high, sigma, points
        self.bounded = not all(math.isinf(v) for v in low.tolist() + high.tolist())  # a tensor or a numpy array
        self.missing = 0  # target values left out as missing (NaN)
        self.derived = None  # the derived parameters (fitting.derived.Derived), if any
        self.guess: dict[str, float] = {}  # a built-in curve's starts guessed from the data
        self.pointwise = True  # no sum or mean over the data: the curve may be drawn on a finer grid

    def parameters(self, start: torch.Tensor) -> Params:
        return {"theta": start}

    @property
    def fn(self):
        """The expression as torch calls, compiled on first use (lm and the reports use `host`)."""
        if self._fn is None:
            self._fn = compile_model(self.tree)
        return self._fn

    def environment(self, theta: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """The expression's variables: columns [n], fixed parameters as numbers, and each fitted
        parameter as a column [K, 1]."""
        if self.bounded:
            theta = theta.clamp(self.low, self.high)  # the gradient passes where low <= theta <= high
        env: dict[str, torch.Tensor | float] = dict(self.columns)
        env.update(self.fixed)
        env.update(zip(self.names, theta.unsqueeze(-1).unbind(1)))
        return env

    def curve(self, theta: torch.Tensor) -> torch.Tensor:
        """The unweighted prediction f, [K, n]."""
        value = self.fn(self.environment(theta))
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=theta.dtype, device=theta.device)
        return value.to(theta.dtype).expand(theta.shape[0], self.points)

    def host(self, dtype="float64"):
        """The same model on the host in numpy (hostcurve.py), computing in `dtype` (a torch or
        numpy dtype, or its name; float32 for bfloat16, which numpy lacks): lm's evaluations, the
        reports' curve and the Jacobian for the standard errors. Built once per dtype."""
        from gdfit.expr.hostcurve import HostCurve

        name = str(dtype).removeprefix("torch.")
        if name not in self.hosts:
            self.hosts[name] = HostCurve(self, "float32" if name == "bfloat16" else name)
        return self.hosts[name]

    def curve_on(self, columns: dict[str, torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
        """The unweighted prediction on other values of the columns (a plot's fine grid), [K, m]."""
        env = self.environment(theta)
        env.update(columns)
        points = len(next(iter(columns.values())))
        return torch.as_tensor(self.fn(env), dtype=theta.dtype).expand(theta.shape[0], points)

    def predict(self, params: Params) -> torch.Tensor:
        value = self.curve(params["theta"])
        return value / self.sigma if self.sigma is not None else value

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        # the chain rule through the expression, by autograd (a vector-Jacobian product)
        with torch.enable_grad():
            theta = params["theta"].detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.predict({"theta": theta}), theta, grad_of_prediction)
        return {"theta": grad}

    def constrain_(self, params: Params) -> None:
        if self.bounded:
            theta = params["theta"]
            with torch.no_grad():
                theta.clamp_(self.low, self.high)

    def named_tensors(self, params: Params) -> dict[str, torch.Tensor]:
        """Every parameter (fixed ones too) as a 0-d float64, and the unweighted curve as
        `prediction`, as the reports show it (the host form's): numpy arrays for a fit computed
        on the host, else tensors."""
        theta = params["theta"]
        named = {name: np.array(value, dtype=np.float64) for name, value in self.named(theta).items()}
        host = self.host(theta.dtype)
        prediction = host.curve(host.array(theta)[None])[0]
        if isinstance(theta, np.ndarray):
            return {**named, "prediction": prediction}
        named = {name: torch.from_numpy(value) for name, value in named.items()}
        return {**named, "prediction": torch.tensor(prediction).to(theta.dtype)}

    def fixing(self, name: str, value: float) -> ExpressionFit:
        """The same fit with the fitted parameter `name` held at `value` (a profile's refits)."""
        keep = [i for i, other in enumerate(self.names) if other != name]
        model = ExpressionFit(self.tree, self.columns, self.order, tuple(self.names[i] for i in keep),
                              {**self.fixed, name: float(value)}, self.low[keep], self.high[keep], self.sigma,
                              self.points)
        model.missing, model.pointwise = self.missing, self.pointwise
        return model

    def named(self, theta: torch.Tensor) -> dict[str, float]:
        """One run's parameters by name, fixed ones included, in the config's order."""
        values = dict(zip(self.names, theta.tolist()))
        values.update(self.fixed)
        if self.derived:
            values.update(self.derived.values(values))
        return {name: values.get(name) for name in self.order}

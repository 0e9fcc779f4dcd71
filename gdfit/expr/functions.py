"""The expression language's functions and comparisons: one table, one entry each.

Each entry gives a function's torch form (the model on the device, grad-demo), its numpy form (the
model on the host, where lm works) and its derivative: one partial per argument, `partial(*args,
value)` = d f / d argument, in numpy (derivatives.py applies them by the chain rule, forward mode),
or None where f is piecewise constant in that argument (a comparison, where's condition). `domain`
is, per argument, an interval where f is smooth: tests/expr/test_functions.py walks the table and holds
every partial to finite differences and to torch's autograd of the torch form there. Adding a
function is adding one entry; the parser, both compilers and the derivative read the table.

Comparisons are 1.0 where they hold and 0.0 elsewhere, in the arguments' dtype, so that
`where(x < x0, a, b)` and `(x < x0) * a` both read as a piecewise model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gdfit.lazy import torch

Partial = Callable[..., object] | None
SQRT_2PI = math.sqrt(2 * math.pi)
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
SQRT_2LN2 = math.sqrt(2 * math.log(2))  # pseudovoigt's Gaussian sigma is sigma / this (same FWHM)


@dataclass(frozen=True)
class Function:
    """One function of the language: its forms, its derivative and where it is smooth."""

    name: str
    torch: Callable
    numpy: Callable
    partials: tuple[Partial, ...]  # one per argument
    domain: tuple[tuple[float, float], ...]  # one per argument: test inputs where f is smooth
    reduction: bool = False  # sum, mean: over the data points (the last dimension); linear, so the
    # tangent is the reduction of the tangent (partials is empty)
    symbol: str | None = None  # an operator's spelling (`<`), for functions written infix

    @property
    def arity(self) -> int:
        return len(self.domain)


def _tensor(value, like):
    """A Python number as a tensor of `like`'s dtype (torch.where and minimum need tensors)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype if isinstance(like, torch.Tensor) else torch.float64,
                           device=like.device if isinstance(like, torch.Tensor) else None)


def _pair(a, b):
    return _tensor(a, b), _tensor(b, a)


def _late(path: str) -> Callable:
    """torch's function at `path` (`exp`, `special.erf`), read at the call: reading it when this
    table is built would load torch, which a fit computed in numpy never needs."""
    def call(*args):
        f = torch
        for part in path.split("."):
            f = getattr(f, part)
        return f(*args)
    return call


def _torch_compare(name: str) -> Callable:
    def compare(a, b):
        a, b = _pair(a, b)
        return getattr(torch, name)(a, b).to(torch.promote_types(a.dtype, b.dtype))
    return compare


def _numpy_compare(op: Callable) -> Callable:
    return lambda a, b: op(a, b).astype(np.result_type(a, b))


def _host_erf(x):
    # numpy has no erf, and math.erf point by point is slow; torch's, on the same memory, is exact
    return torch.special.erf(torch.as_tensor(np.asarray(x))).numpy()


def _host_erfc(x):
    return torch.special.erfc(torch.as_tensor(np.asarray(x))).numpy()


def _tie(a, b):
    """Where a == b, 1/2: torch splits the gradient of min and max evenly at a tie."""
    return 0.5 * np.equal(a, b)


def _lower(a, b):
    return np.less(a, b) + _tie(a, b)


# ---------------------------------------------------------------- lmfit's line shapes, on the host


def _gaussian(xp, x, amplitude, center, sigma):
    return amplitude / (sigma * SQRT_2PI) * xp.exp(-(x - center) ** 2 / (2 * sigma ** 2))


def _lorentzian(xp, x, amplitude, center, sigma):
    return amplitude / math.pi * sigma / ((x - center) ** 2 + sigma ** 2)


def _pseudovoigt(xp, x, amplitude, center, sigma, fraction):
    return ((1 - fraction) * _gaussian(xp, x, amplitude, center, sigma / SQRT_2LN2)
            + fraction * _lorentzian(xp, x, amplitude, center, sigma))


def _logistic4(xp, x, bottom, top, ec50, hill):
    return bottom + (top - bottom) / (1 + (ec50 / x) ** hill)


def _gaussian_partials(x, amplitude, center, sigma):
    """d gaussian / d (x, amplitude, center, sigma)."""
    unit = np.exp(-(x - center) ** 2 / (2 * sigma ** 2)) / (sigma * SQRT_2PI)
    g = amplitude * unit
    slope = g * (x - center) / sigma ** 2
    return -slope, unit, slope, g * ((x - center) ** 2 / sigma ** 3 - 1 / sigma)


def _lorentzian_partials(x, amplitude, center, sigma):
    """d lorentzian / d (x, amplitude, center, sigma)."""
    d = (x - center) ** 2 + sigma ** 2
    slope = amplitude / math.pi * sigma * 2 * (x - center) / d ** 2
    return -slope, sigma / (math.pi * d), slope, amplitude / math.pi * ((x - center) ** 2 - sigma ** 2) / d ** 2


def _pseudovoigt_partial(k: int) -> Callable:
    def partial(x, amplitude, center, sigma, fraction, value):
        if k == 4:
            return (_lorentzian(np, x, amplitude, center, sigma)
                    - _gaussian(np, x, amplitude, center, sigma / SQRT_2LN2))
        g = _gaussian_partials(x, amplitude, center, sigma / SQRT_2LN2)[k]
        lo = _lorentzian_partials(x, amplitude, center, sigma)[k]
        return (1 - fraction) * (g / SQRT_2LN2 if k == 3 else g) + fraction * lo
    return partial


def _logistic_share(x, ec50, hill):
    """s = 1 / (1 + (ec50 / x)^hill) and s (1 - s), the logistic's slope factor (0, not NaN, on a
    plateau: at x = 0, (ec50 / x)^hill is inf)."""
    s = 1 / (1 + (ec50 / x) ** hill)
    return s, s * (1 - s)


def _logistic4_partial(k: int) -> Callable:
    def partial(x, bottom, top, ec50, hill, value):
        s, slope = _logistic_share(x, ec50, hill)
        if k == 1:
            return 1 - s
        if k == 2:
            return s
        span = (top - bottom) * slope
        if k == 0:
            return span * hill / x
        if k == 3:
            return -span * hill / ec50
        return np.where(slope == 0, 0.0, -span * np.log(ec50 / x))
    return partial


def _gaussian_partial(k: int) -> Callable:
    return lambda x, amplitude, center, sigma, value: _gaussian_partials(x, amplitude, center, sigma)[k]


def _lorentzian_partial(k: int) -> Callable:
    return lambda x, amplitude, center, sigma, value: _lorentzian_partials(x, amplitude, center, sigma)[k]


def _shape(function: Callable, xp) -> Callable:
    return lambda *args: function(xp, *args)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


ANY = (-3.0, 3.0)
POSITIVE = (0.2, 3.0)
UNIT = (-0.9, 0.9)
PEAK = ((-3.0, 3.0), (-2.0, 2.0), (-1.0, 1.0), (0.3, 2.0))

TABLE: tuple[Function, ...] = (
    Function("sum", lambda t: t.sum(-1, keepdim=True), lambda t: np.sum(t, -1, keepdims=True), (), (ANY,),
             reduction=True),
    Function("mean", lambda t: t.mean(-1, keepdim=True), lambda t: np.mean(t, -1, keepdims=True), (), (ANY,),
             reduction=True),
    Function("exp", _late("exp"), np.exp, (lambda x, y: y,), (ANY,)),
    Function("log", _late("log"), np.log, (lambda x, y: 1 / x,), (POSITIVE,)),
    Function("sqrt", _late("sqrt"), np.sqrt, (lambda x, y: 0.5 / y,), (POSITIVE,)),
    Function("abs", _late("abs"), np.abs, (lambda x, y: np.sign(x),), (ANY,)),
    Function("sin", _late("sin"), np.sin, (lambda x, y: np.cos(x),), (ANY,)),
    Function("cos", _late("cos"), np.cos, (lambda x, y: -np.sin(x),), (ANY,)),
    Function("tanh", _late("tanh"), np.tanh, (lambda x, y: 1 - y * y,), (ANY,)),
    Function("sigmoid", _late("sigmoid"), _sigmoid, (lambda x, y: y * (1 - y),), (ANY,)),
    Function("relu", _late("relu"), lambda x: np.maximum(x, 0.0),
             (lambda x, y: np.asarray(x > 0, dtype=np.result_type(x)),), (ANY,)),
    Function("square", _late("square"), np.square, (lambda x, y: 2 * x,), (ANY,)),
    Function("tan", _late("tan"), np.tan, (lambda x, y: 1 + y * y,), (UNIT,)),
    Function("atan", _late("atan"), np.arctan, (lambda x, y: 1 / (1 + x * x),), (ANY,)),
    Function("erf", _late("special.erf"), _host_erf, (lambda x, y: TWO_OVER_SQRT_PI * np.exp(-x * x),), (ANY,)),
    Function("erfc", _late("special.erfc"), _host_erfc, (lambda x, y: -TWO_OVER_SQRT_PI * np.exp(-x * x),), (ANY,)),
    Function("log10", _late("log10"), np.log10, (lambda x, y: 1 / (x * math.log(10)),), (POSITIVE,)),
    Function("log1p", _late("log1p"), np.log1p, (lambda x, y: 1 / (1 + x),), ((-0.8, 3.0),)),
    Function("expm1", _late("expm1"), np.expm1, (lambda x, y: y + 1,), (ANY,)),
    Function("sinh", _late("sinh"), np.sinh, (lambda x, y: np.cosh(x),), (ANY,)),
    Function("cosh", _late("cosh"), np.cosh, (lambda x, y: np.sinh(x),), (ANY,)),
    Function("asin", _late("asin"), np.arcsin, (lambda x, y: 1 / np.sqrt(1 - x * x),), (UNIT,)),
    Function("acos", _late("acos"), np.arccos, (lambda x, y: -1 / np.sqrt(1 - x * x),), (UNIT,)),
    Function("atan2", lambda a, b: torch.atan2(*_pair(a, b)), np.arctan2,
             (lambda a, b, y: b / (a * a + b * b), lambda a, b, y: -a / (a * a + b * b)), (ANY, POSITIVE)),
    Function("min", lambda a, b: torch.minimum(*_pair(a, b)), np.minimum,
             (lambda a, b, y: _lower(a, b), lambda a, b, y: _lower(b, a)), (ANY, ANY)),
    Function("max", lambda a, b: torch.maximum(*_pair(a, b)), np.maximum,
             (lambda a, b, y: _lower(b, a), lambda a, b, y: _lower(a, b)), (ANY, ANY)),
    Function("where", lambda c, a, b: torch.where(_tensor(c, a) != 0, *_pair(a, b)),
             lambda c, a, b: np.where(np.not_equal(c, 0), a, b),
             (None, lambda c, a, b, y: np.not_equal(c, 0) * 1.0, lambda c, a, b, y: np.equal(c, 0) * 1.0),
             ((-1.0, 1.0), ANY, ANY)),
    Function("<", _torch_compare("lt"), _numpy_compare(np.less), (None, None), (ANY, ANY), symbol="<"),
    Function("<=", _torch_compare("le"), _numpy_compare(np.less_equal), (None, None), (ANY, ANY), symbol="<="),
    Function(">", _torch_compare("gt"), _numpy_compare(np.greater), (None, None), (ANY, ANY), symbol=">"),
    Function(">=", _torch_compare("ge"), _numpy_compare(np.greater_equal), (None, None), (ANY, ANY), symbol=">="),
    Function("gaussian", _shape(_gaussian, torch), _shape(_gaussian, np),
             tuple(_gaussian_partial(k) for k in range(4)), PEAK),
    Function("lorentzian", _shape(_lorentzian, torch), _shape(_lorentzian, np),
             tuple(_lorentzian_partial(k) for k in range(4)), PEAK),
    Function("pseudovoigt", _shape(_pseudovoigt, torch), _shape(_pseudovoigt, np),
             tuple(_pseudovoigt_partial(k) for k in range(5)), (*PEAK, (0.05, 0.95))),
    Function("logistic4", _shape(_logistic4, torch), _shape(_logistic4, np),
             tuple(_logistic4_partial(k) for k in range(5)), (POSITIVE, ANY, ANY, POSITIVE, (0.3, 3.0))),
)

BY_NAME: dict[str, Function] = {f.name: f for f in TABLE}
FUNCTION_NAMES = tuple(f.name for f in TABLE if f.symbol is None)  # called by name: f(a, b)
COMPARISONS = tuple(f.symbol for f in TABLE if f.symbol is not None)  # written infix: a < b

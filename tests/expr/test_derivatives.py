"""A model expression on the host (numpy): its value against the torch model's, and its forward-mode
Jacobian against torch's reverse-mode autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdfit.expr.functions import TABLE
from gdfit.expr.language import parse
from gdfit.fitting.models import ExpressionFit

NAMES = ("b1", "b2", "b3")
EXPRESSIONS = [
    "b1 * exp(-b2 * x)",
    "b1 / (1 + exp(b2 - b3 * x)) ** (1 / b3)",
    "(b1 + b2 * x) / (1 + b3 * x ** 2)",
    "2 ** b1 + x ** b2 - b3 ** 2 + -b1 + +b2",
    "sum(b1 * x) + mean(b2 * x ** 2) + b3",  # reductions over the data points
    "sum(b1 + x) * b2 + b3",  # a parameter's tangent counts once per point in a sum
    "b1 + 0 * b2 * b3",
    "b1 * b2 * b3 + pi",  # no data column at all
    "atan2(b1 * x, b2 + x) * b3",
    "min(b1 * x, b2) + max(b3, x) + min(1, 2) * b1",
    "where(x < b1, b2 * x, b3) + (x >= b2) * b1 + (b3 > 0.8) + (x <= 1) * b3",
    "gaussian(x, b1, b2, b3) + lorentzian(x, b2, b1, b3)",
    "pseudovoigt(x, b1, b2, b3, 0.3) + pseudovoigt(x, 1, b1, 0.5, b2 * 0.1)",
    "logistic4(x, b1, b2, b3, 1.5) + logistic4(x + 1, 0, 1, b1, b3)",
] + [f"{f.name}(0.5 * (b1 * x + b2)) * b3" for f in TABLE if f.arity == 1 and not f.reduction]


def fit_of(text: str, low=None, high=None, sigma=None) -> ExpressionFit:
    x = torch.linspace(0.2, 1.4, 9, dtype=torch.float64)
    tree = parse(text, names={*NAMES, "x"})
    inf = torch.full((3,), torch.inf, dtype=torch.float64)
    return ExpressionFit(tree, {"x": x}, NAMES, NAMES, {}, -inf if low is None else low,
                         inf if high is None else high, sigma, 9)


def autograd_jacobian(model: ExpressionFit, theta: torch.Tensor) -> torch.Tensor:
    full = torch.autograd.functional.jacobian(lambda t: model.predict({"theta": t}), theta)  # [K, n, K, p]
    return torch.stack([full[k, :, k, :] for k in range(theta.shape[0])])


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_value_and_jacobian_equal_autograd(text):
    model = fit_of(text)
    theta = torch.tensor([[0.7, 0.3, 1.1], [1.3, -0.2, 0.6]], dtype=torch.float64)
    host = model.host()
    value, J = host.predict_and_jacobian(theta.numpy())
    expected = model.predict({"theta": theta})
    # numpy's and torch's exp, log, ... may differ in the last bit
    torch.testing.assert_close(torch.from_numpy(np.array(value)), expected, rtol=4e-16, atol=0)
    torch.testing.assert_close(torch.from_numpy(np.array(host.predict(theta.numpy()))), expected, rtol=4e-16, atol=0)
    torch.testing.assert_close(torch.from_numpy(np.array(J)), autograd_jacobian(model, theta), rtol=1e-13, atol=1e-13)


def test_a_parameter_outside_its_bounds_has_a_zero_column_and_one_at_a_bound_its_full_one():
    # autograd through the clamp gives 0 outside the bounds, and half the column exactly at one
    # (torch splits the gradient of a tie); a parameter held at its bound moves inward, so its
    # column there is the derivative from inside: the unbounded model's
    sigma = torch.linspace(1.0, 2.0, 9, dtype=torch.float64)
    low, high = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 5.0, 1.0], dtype=torch.float64)
    bounded = fit_of("b1 * exp(-b2 * x) + b3 * x", low=low, high=high, sigma=sigma)
    free = fit_of("b1 * exp(-b2 * x) + b3 * x", sigma=sigma)
    # b1 above its bound; b3 at its high bound, then below its low one; b2 at its low bound
    theta = torch.tensor([[0.9, 0.3, 1.0], [0.2, 0.0, -3.0]], dtype=torch.float64)
    _, J = bounded.host().predict_and_jacobian(theta.numpy())
    J = torch.from_numpy(np.array(J))
    expected = autograd_jacobian(free, theta.clamp(low, high))
    expected[0, :, 0] = 0
    expected[1, :, 2] = 0
    torch.testing.assert_close(J, expected, rtol=1e-13, atol=1e-13)
    assert J[0, :, 2].abs().min() > 0 and J[1, :, 1].abs().min() > 0


def test_a_power_of_a_base_that_does_not_move_has_no_slope():
    """(x / b1)^b2 at x = 0 with b2 < 1: 0 whatever b1 and b2, so both derivatives are 0 there
    (the closed forms' limits), where autograd's chain rule gives 0 * inf = NaN for b1."""
    x = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    tree = parse("(x / b1) ** b2", names={"b1", "b2", "x"})
    inf = torch.full((2,), torch.inf, dtype=torch.float64)
    model = ExpressionFit(tree, {"x": x}, ("b1", "b2"), ("b1", "b2"), {}, -inf, inf, None, 3)
    b1, b2 = 1.5, 0.8
    _, J = model.host().predict_and_jacobian(np.array([[b1, b2]]))
    xs = x.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        d_b1 = np.where(xs == 0, 0.0, -b2 * (xs / b1) ** b2 / b1)
        d_b2 = np.where(xs == 0, 0.0, (xs / b1) ** b2 * np.log(xs / b1))
    np.testing.assert_allclose(J[0], np.stack([d_b1, d_b2], axis=1), rtol=1e-15, atol=0)
    assert J[0, 0].tolist() == [0.0, 0.0]


def test_a_constant_zero_divisor_folded_from_a_function_is_inf_as_autograd_says_not_an_exception():
    # sin(0) folds to 0: the checker cannot see it, so the forward mode divides as torch does
    model = fit_of("b1 * x + b2 / sin(0) + b3")
    theta = torch.tensor([[0.7, 0.3, 1.1]], dtype=torch.float64)
    with np.errstate(all="ignore"):
        value, J = model.host().predict_and_jacobian(theta.numpy())
    expected = model.predict({"theta": theta})
    assert torch.isinf(expected).all() and np.isinf(np.array(value)).all()
    assert np.isinf(np.array(J)[..., 1]).all()  # d/d b2 of b2 / 0

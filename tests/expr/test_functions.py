"""The expression language's table of functions (gdfit/expr/functions.py), walked entry by entry:
every entry has all its forms, the numpy form computes the torch form's values, and every partial
derivative equals central finite differences and torch's autograd of the torch form."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gdfit.expr.functions import BY_NAME, COMPARISONS, FUNCTION_NAMES, TABLE, Function
from gdfit.expr.language import COMPARE, FUNCTIONS, MODEL_FUNCTIONS, NUMPY_FUNCTIONS

STEP = 1e-6  # central differences: error ~ STEP^2 f''' , rounding ~ eps / STEP
KINKS = {"abs": 0.0, "relu": 0.0}  # not differentiable there: finite differences skip it (autograd does not)


def test_every_entry_has_every_form():
    # an entry without a torch form, a host form or a derivative per argument is an error here
    for f in TABLE:
        assert callable(f.torch) and callable(f.numpy), f.name
        assert f.arity >= 1, f.name
        if f.reduction:
            assert f.partials == () and f.arity == 1, f.name
        else:
            assert len(f.partials) == f.arity, f.name
            assert any(p is not None for p in f.partials) or f.symbol is not None, f.name
            assert all(p is None or callable(p) for p in f.partials), f.name
        for low, high in f.domain:
            assert low < high, f.name


def test_the_parser_and_both_compilers_read_the_table_and_nothing_else():
    assert set(FUNCTIONS) == set(FUNCTION_NAMES)
    assert set(COMPARE.values()) == set(COMPARISONS)
    assert set(MODEL_FUNCTIONS) == set(NUMPY_FUNCTIONS) == set(BY_NAME)
    spec = {"erf", "erfc", "log10", "log1p", "expm1", "sinh", "cosh", "asin", "acos", "atan2", "where",
            "min", "max", "gaussian", "lorentzian", "pseudovoigt", "logistic4", "<", "<=", ">", ">="}
    assert spec <= set(BY_NAME)


def _inputs(f: Function):
    """One draw of f's arguments inside its domain, each a small array."""
    return st.tuples(*(st.lists(st.floats(low, high), min_size=3, max_size=3) for low, high in f.domain))


@pytest.mark.parametrize("f", [f for f in TABLE if not f.reduction], ids=lambda f: f.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_partials_equal_finite_differences_and_autograd(f, data):
    args = [np.array(a, dtype=np.float64) for a in data.draw(_inputs(f))]
    value = f.numpy(*args)
    torch_args = [torch.tensor(a, requires_grad=True) for a in args]
    torch_value = f.torch(*torch_args)
    np.testing.assert_allclose(value, torch_value.detach().numpy(), rtol=1e-14, atol=1e-300)
    if torch_value.requires_grad:
        grads = torch.autograd.grad(torch_value.sum(), torch_args, allow_unused=True)
    else:  # a comparison: no gradient anywhere
        grads = [None] * f.arity
    for k, partial in enumerate(f.partials):
        up, down = list(args), list(args)
        up[k], down[k] = args[k] + STEP, args[k] - STEP
        high, low = f.numpy(*up), f.numpy(*down)
        if partial is None:
            # piecewise constant in this argument: no change, unless the step crosses a jump
            assume(np.array_equal(high, value) and np.array_equal(low, value))
            assert grads[k] is None or not grads[k].any(), f.name
            continue
        derivative = np.broadcast_to(partial(*args, value), value.shape)
        assume(np.array_equal(f.numpy(*[a.copy() for a in args]), value))
        if f.name in ("min", "max"):
            assume(np.abs(args[0] - args[1]).min() > 10 * STEP)  # no tie inside the step
        if f.name in KINKS:
            assume(np.abs(args[0] - KINKS[f.name]).min() > 10 * STEP)
        if f.name == "where":
            assume(np.abs(args[0]).min() > 10 * STEP)
        numeric = (high - low) / (2 * STEP)
        scale = np.maximum(1.0, np.abs(derivative))
        assert np.all(np.abs(derivative - numeric) <= 1e-6 * scale), (f.name, k, derivative, numeric)
        expected = np.zeros_like(value) if grads[k] is None else grads[k].numpy()
        np.testing.assert_allclose(derivative, expected, rtol=1e-12, atol=1e-14, err_msg=f"{f.name} argument {k}")


@pytest.mark.parametrize("name", ["min", "max"])
def test_min_and_max_split_a_tie_as_autograd_does(name):
    f = BY_NAME[name]
    a = torch.tensor([1.5, 2.0, -1.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    ga, gb = torch.autograd.grad(f.torch(a, b).sum(), (a, b))
    x, y = a.detach().numpy(), b.detach().numpy()
    value = f.numpy(x, y)
    np.testing.assert_array_equal(f.partials[0](x, y, value), ga.numpy())
    np.testing.assert_array_equal(f.partials[1](x, y, value), gb.numpy())


@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reductions_run_over_the_last_dimension(name):
    f = BY_NAME[name]
    rows = np.arange(6.0).reshape(2, 3)
    expected = rows.sum(-1, keepdims=True) / (3 if name == "mean" else 1)
    np.testing.assert_array_equal(f.numpy(rows), expected)
    np.testing.assert_array_equal(f.torch(torch.from_numpy(rows)).numpy(), expected)


def test_line_shapes_are_lmfits():
    lineshapes = pytest.importorskip("lmfit.lineshapes")
    x = np.linspace(-4, 5, 41)
    np.testing.assert_allclose(BY_NAME["gaussian"].numpy(x, 2.5, 0.3, 0.8), lineshapes.gaussian(x, 2.5, 0.3, 0.8),
                               rtol=1e-14)
    np.testing.assert_allclose(BY_NAME["lorentzian"].numpy(x, 2.5, 0.3, 0.8),
                               lineshapes.lorentzian(x, 2.5, 0.3, 0.8), rtol=1e-14)
    np.testing.assert_allclose(BY_NAME["pseudovoigt"].numpy(x, 2.5, 0.3, 0.8, 0.35),
                               lineshapes.pvoigt(x, 2.5, 0.3, 0.8, 0.35), rtol=1e-14)
    # a 4PL by its closed form (lmfit has no 4PL model): the midpoint is (bottom + top) / 2 at ec50
    dose = np.array([0.0, 0.5, 2.0, 1e9])
    y = BY_NAME["logistic4"].numpy(dose, 1.0, 9.0, 2.0, 1.3)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(y, 1 + 8 / (1 + (2.0 / dose) ** 1.3), rtol=1e-15)
    assert y[0] == 1.0 and y[2] == 5.0 and math.isclose(y[3], 9.0)


def test_logistic4_partials_stay_finite_at_zero_dose():
    f = BY_NAME["logistic4"]
    x, args = np.array([0.0, 1.0]), (np.float64(1.0), np.float64(9.0), np.float64(2.0), np.float64(1.3))
    with np.errstate(all="ignore"):
        value = f.numpy(x, *args)
        for k, partial in enumerate(f.partials[1:], start=1):
            assert np.isfinite(partial(x, *args, value)).all(), k


def test_comparisons_and_where_parse_as_the_table_says():
    tree = ast.parse("where(x < 1, x, 2)", mode="eval")
    assert isinstance(tree.body.args[0], ast.Compare)
    assert BY_NAME["<"].numpy(np.array([0.5, 1.0]), 1.0).tolist() == [1.0, 0.0]
    assert BY_NAME[">="].numpy(np.array([0.5, 1.0]), 1.0).tolist() == [0.0, 1.0]
    assert BY_NAME["where"].numpy(np.array([1.0, 0.0]), 3.0, 4.0).tolist() == [3.0, 4.0]

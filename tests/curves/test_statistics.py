"""The fit statistics held to hand computations on a line (whose least-squares fit is a closed
form) and to lmfit's, weighted and not; MINPACK's trust-region rules held to MINPACK's own
variables (lmder.f: fnorm, pnorm, actred, prered, dirder)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.fitting.trust import ACCEPT, cutoff, new_radius
from test_curvefit import run_fit, write_data

X = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
Y = [2.1, 2.9, 4.2, 4.8, 6.1, 7.2, 7.7, 9.1, 9.8]
S = [0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.4, 0.2, 0.3]


def hand_statistics(weighted: bool) -> dict:
    """Weighted least squares of y = a + b x in closed form, and each statistic's textbook formula."""
    x, y = np.array(X), np.array(Y)
    w = 1 / np.array(S) ** 2 if weighted else np.ones_like(x)
    A = np.stack([np.ones_like(x), x], 1)
    a, b = np.linalg.solve(A.T @ (w[:, None] * A), A.T @ (w * y))
    r = y - (a + b * x)
    n, p = len(x), 2
    chi2 = float(np.sum(w * r * r))
    rss = float(r @ r)
    return {"a": a, "b": b, "n": n, "p": p, "dof": n - p, "chi2": chi2, "rss": rss,
            "reduced_chi2": chi2 / (n - p), "residual_std": math.sqrt(rss / (n - p)),
            "r2": 1 - rss / float(np.sum((y - y.mean()) ** 2)),
            "aic": n * math.log(chi2 / n) + 2 * p, "bic": n * math.log(chi2 / n) + p * math.log(n)}


def gdfit_line(tmp_path, weighted: bool):
    data = write_data(tmp_path, {"x": X, "y": Y, "s": S})
    extra = {"sigma": {"column": "s"}} if weighted else {}
    _, result = run_fit(tmp_path, optimizer="lm", data={"file": data},
                        model={"expr": "a + b * x", "params": {"a": 0, "b": 1}}, **extra)
    assert result.status == "converged"
    return result


@pytest.mark.parametrize("weighted", [False, True])
def test_the_statistics_are_their_textbook_formulas(tmp_path, weighted):
    expected = hand_statistics(weighted)
    result = gdfit_line(tmp_path, weighted)
    assert result.params["a"]["value"] == pytest.approx(expected["a"], rel=1e-10)
    for key in ("n", "p", "dof"):
        assert result.fit[key] == expected[key]
    for key in ("chi2", "rss", "reduced_chi2", "residual_std", "r2", "aic", "bic"):
        assert result.fit[key] == pytest.approx(expected[key], rel=1e-10), key


@pytest.mark.parametrize("weighted", [False, True])
def test_the_statistics_are_lmfits(tmp_path, weighted):
    lmfit = pytest.importorskip("lmfit", reason="lmfit is a test-only oracle (extra `test`)")
    x, y = np.array(X), np.array(Y)
    model = lmfit.models.LinearModel()
    fitted = model.fit(y, model.make_params(slope=1, intercept=0), x=x,
                       weights=1 / np.array(S) if weighted else None)
    result = gdfit_line(tmp_path, weighted)
    assert result.fit["chi2"] == pytest.approx(fitted.chisqr, rel=1e-9)
    assert result.fit["reduced_chi2"] == pytest.approx(fitted.redchi, rel=1e-9)
    assert result.fit["aic"] == pytest.approx(fitted.aic, rel=1e-9)
    assert result.fit["bic"] == pytest.approx(fitted.bic, rel=1e-9)
    assert result.params["b"]["stderr"] == pytest.approx(fitted.params["slope"].stderr, rel=1e-6)
    if not weighted:  # lmfit's rsquared is of the weighted residuals; gdfit's R² is of the data's
        assert result.fit["r2"] == pytest.approx(fitted.rsquared, rel=1e-9)


# ---------------------------------------------------------------- MINPACK's trust region


def minpack_delta(delta, fnorm, fnorm1, pnorm, jp_norm, par):
    """lmder.f's radius update, in its own variables (fnorm = |r|, pnorm = |D p|, jp_norm = |J p|)."""
    actred = 1 - (fnorm1 / fnorm) ** 2 if 0.1 * fnorm1 < fnorm else -1.0
    temp1, temp2 = jp_norm / fnorm, math.sqrt(par) * pnorm / fnorm
    prered = temp1 ** 2 + 2 * temp2 ** 2
    dirder = -(temp1 ** 2 + temp2 ** 2)
    ratio = actred / prered if prered != 0 else 0.0
    if ratio <= 0.25:
        temp = 0.5 if actred >= 0 else 0.5 * dirder / (dirder + 0.5 * actred)
        if 0.1 * fnorm1 >= fnorm or temp < 0.1:
            temp = 0.1
        return temp * min(delta, pnorm / 0.1), ratio
    if par == 0 or ratio >= 0.75:
        return pnorm / 0.5, ratio
    return delta, ratio


@settings(max_examples=300, deadline=None)
@given(delta=st.floats(1e-3, 1e3), fnorm=st.floats(0.1, 10), change=st.floats(-200.0, 0.999),
       pnorm=st.floats(1e-3, 1e3), jp=st.floats(0.01, 10), par=st.sampled_from([0.0, 1e-3, 0.5, 3.0]))
def test_the_radius_follows_minpack(delta, fnorm, change, pnorm, jp, par):
    fnorm1 = fnorm * math.sqrt(1 - change)  # change = 1 - (fnorm1 / fnorm)^2
    expected, ratio = minpack_delta(delta, fnorm, fnorm1, pnorm, jp * fnorm, par)
    cost, new_cost = fnorm ** 2, fnorm1 ** 2
    predicted = (jp * fnorm) ** 2 + 2 * par * pnorm ** 2  # lmder's prered times |r|^2
    rho = (cost - new_cost) / predicted
    if 0.1 * fnorm1 >= fnorm:
        rho = -1.0 if rho > 0 else rho
    # as lm calls it: arrays over runs (np.where evaluates both branches, and with plain floats
    # the unused one's slope + actual / 2 = 0 would raise ZeroDivisionError)
    arrays = (np.array([v], float) for v in (delta, rho, cost - new_cost, predicted, cost, new_cost, pnorm, par))
    got = new_radius(*arrays)[0]
    assert got == pytest.approx(expected, rel=1e-9)


def test_a_good_step_sets_the_radius_to_twice_the_step_not_twice_the_radius():
    assert new_radius(10.0, 0.9, 1.0, 1.0, 2.0, 1.0, 0.3, 0.5) == pytest.approx(0.6)
    assert new_radius(0.1, 0.5, 1.0, 2.0, 2.0, 1.0, 0.3, 0.0) == pytest.approx(0.6)  # Gauss-Newton, par 0
    assert new_radius(0.7, 0.5, 1.0, 2.0, 2.0, 1.0, 0.3, 0.5) == 0.7  # between: unchanged


def test_a_step_is_taken_when_rho_reaches_minpacks_threshold():
    from gdfit.fitting.lm import _Updates

    J = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    r = np.array([1.0, -1.0, 0.5])
    one = np.array([0])  # one run
    update = _Updates(J[None], r[None], np.ones((1, 2)), np.zeros((1, 2)), np.array([False]), np.array([r @ r]))
    par, h, (length, predicted) = update.step(one, np.array([10.0]), np.array([0.0]))
    for rho, taken in ((ACCEPT * 1.001, True), (ACCEPT * 0.99, False), (0.5, True), (-1.0, False)):
        _, better = update.judge(one, np.array([10.0]), par, r @ r - rho * predicted, length, predicted)
        assert bool(better[0]) is taken, rho
    assert ACCEPT == 1e-4  # lmder's p0001


@pytest.mark.parametrize("shape", [(20, 4), (5, 5), (8, 3)])  # lm's J: at least as many rows as columns
def test_the_rank_cutoff_is_numpys_matrix_rank_tolerance(shape):
    rng = np.random.default_rng(1)
    A = rng.standard_normal(shape) @ np.diag([1.0] * (shape[1] - 1) + [0.0])  # rank one short
    s = np.linalg.svd(A, compute_uv=False)
    assert int((s > cutoff(s, shape[0])).sum()) == np.linalg.matrix_rank(A)
    assert cutoff(s, shape[0]) == pytest.approx(s.max() * max(shape) * np.finfo(float).eps, rel=1e-15, abs=0)

"""lbfgs held to independent oracles: the SVD's low-rank optimum, lstsq, lm's curve fits (where
both converge), and the strong Wolfe conditions themselves for its line search."""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.fitting.lbfgs import C1, C2, History, cubic_minimum, line_search
from helpers import fit

ROOT = Path(__file__).parents[2]


def rosenbrock(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    (g,) = torch.autograd.grad(f, x)
    return f.item(), g


def search(fn, x, d, t):
    """Drive line_search with fn; (t, f, g) or None, and the trials it asked for."""
    f0, g0 = fn(x)
    steps = line_search(f0, float(g0 @ d), t, d)
    trials = []
    answer = None
    try:
        while True:
            t_asked, _ = steps.send(answer)
            trials.append(t_asked)
            answer = fn(x + t_asked * d)
    except StopIteration as done:
        return done.value, trials, f0, float(g0 @ d)


@settings(max_examples=60, deadline=None)
@given(st.floats(-2, 2), st.floats(-1, 3), st.floats(1e-4, 10))
def test_the_line_search_meets_the_strong_wolfe_conditions(a, b, t):
    x = torch.tensor([a, b], dtype=torch.float64)
    _, g = rosenbrock(x)
    if float(g @ g) < 1e-12:
        return
    d = -g
    found, trials, f0, gtd0 = search(rosenbrock, x, d, t)
    assert found is not None and len(trials) <= 25
    step, f, g_new = found
    assert f <= f0 + C1 * step * gtd0  # sufficient decrease
    assert abs(float(g_new @ d)) <= C2 * abs(gtd0)  # the curvature condition, strong form
    assert (f, g_new.tolist()) == (rosenbrock(x + step * d)[0], rosenbrock(x + step * d)[1].tolist())


def test_the_line_search_treats_an_overflow_as_too_far():
    def steep(x):  # exp overflows for x > ~709
        x = x.detach().requires_grad_(True)
        f = torch.exp(x[0]) - 2 * x[0]
        (g,) = torch.autograd.grad(f, x)
        return float(f), g

    x = torch.tensor([0.0], dtype=torch.float64)
    found, trials, f0, gtd0 = search(steep, x, torch.tensor([1.0], dtype=torch.float64), 1e4)
    step, f, g = found
    assert trials[0] == 1e4 and math.isfinite(f)  # the first trial overflowed; the search came back
    assert f <= f0 + C1 * step * gtd0 and abs(float(g[0])) <= C2 * abs(gtd0)


def test_the_cubic_through_two_equal_tiny_slopes_is_a_line_and_gives_the_middle():
    # on a plateau: equal losses, and slopes whose squares underflow (d2 = 0, no cubic to minimise)
    g = -3.589444045622725e-278
    assert cubic_minimum(0.0, 0.0175, g, 1.0, 0.0175, g, 1.01, 10.0) == pytest.approx(5.505)


def test_a_direction_that_leads_nowhere_lower_finds_nothing():
    def kink(x):  # |x|, at its minimum: every step goes up
        x = x.detach().requires_grad_(True)
        f = x.abs().sum()
        (g,) = torch.autograd.grad(f, x)
        return float(f), g

    f0, g0 = 0.0, torch.tensor([-1.0], dtype=torch.float64)  # a subgradient that points down, falsely
    steps = line_search(f0, -1.0, 1.0, torch.tensor([1.0], dtype=torch.float64))
    answer = None
    with pytest.raises(StopIteration) as done:
        while True:
            t, d = steps.send(answer)
            answer = kink(torch.tensor([0.0], dtype=torch.float64) + t * d)
    assert done.value.value is None


def test_the_two_loop_recursion_is_bfgs_inverse_update_from_scaled_identity():
    # the oracle: the dense BFGS inverse-Hessian updates (Nocedal and Wright, eq. 6.17) from
    # H0 = (s.y / y.y) I of the newest pair, applied to g
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    A = A @ A.T + 5 * torch.eye(5, dtype=torch.float64)
    history = History(10)
    pairs = []
    for _ in range(4):
        s = torch.randn(5, generator=gen, dtype=torch.float64)
        y = A @ s
        history.remember(s, y)
        pairs.append((s, y))
    g = torch.randn(5, generator=gen, dtype=torch.float64)
    s, y = pairs[-1]
    H = float(s @ y) / float(y @ y) * torch.eye(5, dtype=torch.float64)
    for s, y in pairs:
        rho = 1 / float(y @ s)
        V = torch.eye(5, dtype=torch.float64) - rho * torch.outer(y, s)
        H = V.T @ H @ V + rho * torch.outer(s, s)
    assert torch.allclose(history.direction(g), -H @ g, rtol=1e-12, atol=1e-14)


def test_a_pair_without_positive_curvature_is_not_kept():
    history = History(3)
    history.remember(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]))
    assert history.pairs == []
    for k in range(5):  # and at most `size` are kept, the newest
        history.remember(torch.tensor([1.0, float(k)]), torch.tensor([1.0, float(k)]))
    assert [float(p[0][1]) for p in history.pairs] == [2.0, 3.0, 4.0]


# ---------------------------------------------------------------- the matrix models' optima


def svd_optimum(target: torch.Tensor, rank: int) -> float:
    s = torch.linalg.svdvals(target)
    return float((s[rank:] ** 2).sum() / target.numel())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lowrank_reaches_the_svd_optimum(seed):
    # a normal 60 x 40 target from seed 0 has optimum 0.69375984505 at rank 5: torch's LBFGS
    # stepped one iteration at a time stops at twice the loss, its line search stuck at t = 0
    target = torch.randn(60, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    _, result, _ = fit(every=0, target=target.tolist(), model={"name": "lowrank", "rank": 5}, dtype="float64",
                       optimizer="lbfgs", ftol=1e-14, max_iters=3000, seed=seed)
    optimum = svd_optimum(target, 5)
    assert result.status == "converged"
    assert abs(result.loss - optimum) <= 1e-6 * optimum


def test_lowrank_on_a_uniform_target_reaches_the_svd_optimum():
    _, result, _ = fit(every=0, target={"random": {"shape": [60, 40], "seed": 0}}, model={"name": "lowrank", "rank": 5},
                       dtype="float64", optimizer="lbfgs", ftol=1e-14, max_iters=3000)
    target = torch.rand(60, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    optimum = svd_optimum(target, 5)
    assert result.status == "converged" and abs(result.loss - optimum) <= 1e-6 * optimum


def test_linear_reaches_lstsq():
    inputs = np.loadtxt(ROOT / "configs" / "linear-inputs.csv", delimiter=",", ndmin=2)
    targets = np.loadtxt(ROOT / "configs" / "linear-targets.csv", delimiter=",", ndmin=2)
    _, result, descent = fit(every=0, target={"file": str(ROOT / "configs" / "linear-targets.csv")},
                             model={"name": "linear", "inputs": {"file": str(ROOT / "configs" / "linear-inputs.csv")},
                                    "bias": True}, dtype="float64", optimizer="lbfgs", max_iters=1000)
    design = np.hstack([inputs, np.ones((len(inputs), 1))])
    solution = np.linalg.lstsq(design, targets, rcond=None)[0]
    W, b = descent.final_params["W"].numpy(), descent.final_params["b"].numpy().reshape(-1)
    assert result.status == "converged"
    assert np.abs(W - solution[:-1]).max() <= 1e-6 * np.abs(solution).max()
    assert np.abs(b - solution[-1]).max() <= 1e-6 * np.abs(solution).max()


def test_a_sweep_of_lbfgs_runs_equals_their_single_runs():
    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    target = torch.randn(12, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64).tolist()
    base = {"target": target, "model": {"name": "lowrank", "rank": 2}, "dtype": "float64", "device": "cpu",
            "optimizer": "lbfgs", "max_iters": 400}
    grid = {"seed": [0, 1, 2], "learning_rate": [1.0, 0.5]}
    runs = list(expand(base, grid, "test", Path(".")))
    swept = list(execute(runs, 1000, lambda: False))[-1]
    for run, record in zip(runs, swept):
        single = fit(every=0, **base, **run.params)[1]
        assert (record.status, record.iters) == (single.status, single.iters), run.params
        assert record.loss == pytest.approx(single.loss, rel=1e-12)
    assert {record.status for record in swept} == {"converged"}


# ---------------------------------------------------------------- curve fits: lm's answer or no claim


CURVES = [
    ("decay", "a * exp(-t / tau) + c", {"a": 1, "tau": 1, "c": 0}, True),
    ("decay", "a * exp(-t / tau) + c", {"a": 8, "tau": 0.2, "c": 3}, False),
    ("misra", "b1 * (1 - exp(-b2 * x))", {"b1": 500, "b2": 1e-4}, False),
    ("misra", "b1 * (1 - exp(-b2 * x))", {"b1": 250, "b2": 5e-4}, False),
]


@pytest.mark.parametrize("data,expr,start,weighted", CURVES)
def test_a_curve_fit_agrees_with_lm_or_does_not_say_converged(tmp_path, data, expr, start, weighted):
    from test_curvefit import X, Y, run_fit, write_data

    if data == "decay":
        shutil.copy(ROOT / "configs" / "decay.csv", tmp_path / "decay.csv")
        problem = {"data": {"file": "decay.csv"}}
    else:
        problem = {"data": {"file": write_data(tmp_path, {"x": X, "y": Y})}}
    if weighted:
        problem["sigma"] = {"column": "sigma"}
    problem["model"] = {"expr": expr, "params": start}
    _, lm = run_fit(tmp_path, optimizer="lm", **problem)
    _, lbfgs = run_fit(tmp_path, optimizer="lbfgs", max_iters=3000, **problem)
    assert lm.status == "converged"
    if lbfgs.status == "converged":
        for name, entry in lm.params.items():
            assert lbfgs.params[name]["value"] == pytest.approx(entry["value"], rel=1e-6), name
    else:
        assert all(entry["stderr"] is None for entry in lbfgs.params.values())
        assert lbfgs.covariance is None and "did not converge" in lbfgs.fit["stderr_reason"]


def test_lbfgs_refuses_bounds_and_says_which_optimizer_keeps_them(cli, write_config, tmp_path):
    shutil.copy(ROOT / "configs" / "decay.csv", tmp_path / "decay.csv")
    path = write_config("data: {file: decay.csv}\ntarget: {column: y}\noptimizer: lbfgs\n"
                        "model: {expr: 'a * exp(-t / tau) + c', params: {a: 1, tau: {value: 1, min: 0}, c: 0}}\n")
    result = cli("run", path)
    assert result.exit_status == 2
    assert "lbfgs does not keep bounds" in result.stderr and "use optimizer lm" in result.stderr
    assert "model.params.tau" in result.stderr


def test_a_run_whose_line_search_finds_nothing_lower_is_stalled_not_converged(tmp_path):
    # float32 rounds Misra1a's loss too coarsely for the line search long before the optimum
    # (b1 = 238.94): with every tolerance off, the run stops where no step lowers the loss
    from test_curvefit import EXPR, run_fit

    _, result = run_fit(tmp_path, optimizer="lbfgs", dtype="float32", ftol=0, xtol=0, gtol=0, max_iters=2000,
                        model={"expr": EXPR, "params": {"b1": 250, "b2": 5e-4}})
    assert result.status == "stalled" and "no move" in result.stop_rule and result.iters < 2000
    assert abs(result.params["b1"]["value"] - 238.94212918) > 1  # short of the optimum: no convergence claimed
    assert [entry["stderr"] for entry in result.params.values()] == [None, None]
    assert result.covariance is None and "status stalled" in result.fit["stderr_reason"]


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e12])
def test_a_pair_with_positive_curvature_is_kept_in_any_scale(scale):
    # torch's LBFGS drops pairs with y.s <= 1e-10 in absolute terms, which is every pair of a
    # problem whose gradients are small; the curvature y.s / s.s = 2 is the same in each scale
    history = History(3)
    s = torch.tensor([1.0, -2.0], dtype=torch.float64) * scale
    history.remember(s, 2 * s)
    assert len(history.pairs) == 1
    g = torch.tensor([4.0, 2.0], dtype=torch.float64) * scale
    assert torch.allclose(history.direction(g), -g / 2, rtol=1e-14, atol=0)  # H0 = s.y / y.y = 1/2


def test_a_steepest_descent_step_claims_nothing_for_xtol():
    # the first update has no curvature pairs: its step is a line search along -g, whose length
    # says nothing about the distance to the minimum (NaN: no claim); later whole steps do
    from gdfit.engine.descent import make_stepper, prepare
    from helpers import resolved

    target = torch.randn(12, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64).tolist()
    problem = prepare(resolved(target=target, model={"name": "lowrank", "rank": 2}, dtype="float64",
                               optimizer="lbfgs"))
    stepper = make_stepper(problem, torch.stack([problem.model.start(0, torch.float64, torch.device("cpu"))]))
    stepper.advance(1, 1.0, None)
    assert math.isnan(float(stepper.motion[0][0]))
    # next to the optimum (the truncated SVD, nudged), where the relative gradient is small too
    U, S, Vh = torch.linalg.svd(torch.tensor(target, dtype=torch.float64))
    near = torch.cat([(U[:, :2] * S[:2].sqrt()).flatten(), (Vh[:2].T * S[:2].sqrt()).flatten()])
    near = near + 1e-9 * torch.randn(near.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fresh = make_stepper(problem, near.unsqueeze(0))
    fresh.advance(1, 1.0, None)
    assert float(fresh._relative_gradient()[0]) < 1e-6 and math.isnan(float(fresh.motion[0][0]))
    steps = []
    for k in range(2, 200):
        stepper.advance(k, 1.0, None)
        steps.append(float(stepper.motion[0][0]))
    assert any(math.isfinite(step) and step > 0 for step in steps)


# ---------------------------------------------------------------- plateaus: a curve that stopped depending on a parameter

RISE = "a * (1 - exp(-b * x))"  # NIST's BoxBOD and Misra1a: as b runs off, the curve tends to the constant a


def rise_data(scale_x: float = 1.0, scale_y: float = 1.0, seed: int = 0, b: float = 0.5, a: float = 10.0):
    """y = a (1 - exp(-b x)) + noise at x = 1..10, in units scaled by scale_x and scale_y."""
    x = np.arange(1.0, 11.0)
    y = a * (1 - np.exp(-b * x)) + np.random.default_rng(seed).normal(0, 0.1, x.size)
    return x * scale_x, y * scale_y


def write_rise(tmp_path, x, y) -> Path:
    path = tmp_path / "rise.csv"
    path.write_text("x,y\n" + "".join(f"{float(u)!r},{float(v)!r}\n" for u, v in zip(x, y)))
    return path


def rise_problem(tmp_path, x, y, start, optimizer="lbfgs", **config):
    """RISE on the data (x, y) from the start {a, b}, prepared as the engine runs it."""
    from gdfit.config import build_config
    from gdfit.engine.descent import prepare

    write_rise(tmp_path, x, y)
    raw = {"data": {"file": "rise.csv"}, "target": {"column": "y"}, "dtype": "float64", "device": "cpu",
           "optimizer": optimizer, "max_iters": 2000, "model": {"expr": RISE, "params": start}, **config}
    return prepare(build_config(raw, source=str(tmp_path / "rise.yaml"), base_dir=tmp_path))


def fit_rise(tmp_path, x, y, start, optimizer="lbfgs", **config):
    """One fit of RISE through the engine; its result."""
    from gdfit.engine.descent import Descent

    descent = Descent(rise_problem(tmp_path, x, y, start, optimizer, **config), report=lambda k: False, advice=False)
    for _ in descent.steps():
        pass
    return descent.result


def least_squares_optimum(x, y, truth):
    """scipy's least_squares from the true parameters at tight tolerances: the oracle's optimum."""
    from scipy.optimize import least_squares

    found = least_squares(lambda p: p[0] * (1 - np.exp(-p[1] * x)) - y, truth, method="lm",
                          xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return found.x


def values(result):
    return np.array([result.params["a"]["value"], result.params["b"]["value"]])


@pytest.mark.parametrize("scale", [(1.0, 1.0), (1e-3, 1e3), (1e4, 1e-5)])
def test_a_rate_run_off_onto_the_plateau_is_stalled_in_any_units(tmp_path, scale):
    # from b = 40 the curve is flat in b (exp(-40) = 4e-18 at the first point): the gradient
    # vanishes, and lbfgs said `converged` at a = mean(y), b = 40, a loss 43 times the optimum's.
    # The same problem in other units (x times sx, y times sy) must say the same.
    sx, sy = scale
    x, y = rise_data(sx, sy)
    result = fit_rise(tmp_path, x, y, {"a": sy, "b": 40 / sx})
    optimum = least_squares_optimum(x, y, [10 * sy, 0.5 / sx])
    assert result.status == "stalled", result.stop_rule
    assert abs(result.params["b"]["value"] - optimum[1]) > optimum[1]  # far from the minimum indeed
    assert "a plateau, not a minimum" in result.stop_rule and "depends on b here" in result.stop_rule
    assert all(entry["stderr"] is None for entry in result.params.values()) and result.covariance is None


def test_a_curve_that_does_not_depend_on_a_parameter_at_all_is_stalled(tmp_path):
    # from b = 1000, exp(-b x) is exactly 0: b's Jacobian column is 0, and no optimum determines b
    x, y = rise_data()
    result = fit_rise(tmp_path, x, y, {"a": 1, "b": 1000})
    assert result.status == "stalled"
    assert "does not depend on b at all here (b = 1000)" in result.stop_rule


@pytest.mark.parametrize("b0", [0.01, 1.0, 20.0])
def test_from_starts_off_the_plateau_lbfgs_converges_to_the_least_squares_optimum(tmp_path, b0):
    # b0 = 20 lies at the plateau's edge: lbfgs used to stop there; now it goes on, and down
    x, y = rise_data()
    result = fit_rise(tmp_path, x, y, {"a": 1, "b": b0})
    optimum = least_squares_optimum(x, y, [10, 0.5])
    assert result.status == "converged", result.stop_rule
    assert np.allclose(values(result), optimum, rtol=1e-7, atol=0)


def rss_and_stderr(x, y, p):
    """The RSS of RISE at p and the standard errors there, s^2 (J^T J)^-1 with the closed-form J."""
    r = p[0] * (1 - np.exp(-p[1] * x)) - y
    J = np.stack([1 - np.exp(-p[1] * x), p[0] * x * np.exp(-p[1] * x)], axis=1)
    rss = float(r @ r)
    return rss, np.sqrt(np.diag(np.linalg.inv(J.T @ J)) * rss / (len(x) - 2))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 3), st.floats(-2, 4), st.floats(0.5, 50), st.integers(0, 10_000))
def test_an_lbfgs_curve_fit_that_says_converged_is_at_the_least_squares_optimum(b, log_b0, a, seed):
    # what ftol = 1e-10 promises: a loss within about 1e-10 of the optimum's, so values within
    # sqrt(1e-10 dof) = 3e-5 standard errors of it, however ill-determined (at b = 0.05 the curve
    # is nearly the line a b x, and a alone is known to a few digits only)
    import tempfile

    x, y = rise_data(seed=seed, b=b, a=a)
    with tempfile.TemporaryDirectory() as folder:
        result = fit_rise(Path(folder), x, y, {"a": 1, "b": 10**log_b0})
    optimum = least_squares_optimum(x, y, [a, b])
    best, stderr = rss_and_stderr(x, y, optimum)
    if result.status == "converged":
        assert rss_and_stderr(x, y, values(result))[0] <= best * (1 + 1e-9)
        assert np.all(np.abs(values(result) - optimum) <= 1e-3 * stderr), (values(result), optimum, stderr)
    else:
        assert all(entry["stderr"] is None for entry in result.params.values())


def test_the_gauss_newton_verdict_is_the_projection_of_the_residuals_on_the_jacobian(tmp_path):
    # the oracle: the closed-form Jacobian of a (1 - exp(-b x)) and lstsq's Gauss-Newton step
    from gdfit.fitting.lbfgs import GaussNewton

    x, y = rise_data()
    problem = rise_problem(tmp_path, x, y, {"a": 1, "b": 1})
    check = GaussNewton(problem.model, problem.target)
    for a, b in [(9.0, 0.6), (8.47, 3.0), (10.5, 0.3)]:
        J = np.stack([1 - np.exp(-b * x), a * x * np.exp(-b * x)], axis=1)
        r = a * (1 - np.exp(-b * x)) - y
        h = np.linalg.lstsq(J, -r, rcond=None)[0]
        (verdict,) = check.judge(np.array([[a, b]]))
        assert verdict.promise == pytest.approx(float((J @ h) @ (J @ h)) / float(r @ r), rel=1e-9)
        assert verdict.step == pytest.approx(float(np.linalg.norm(h)), rel=1e-9)
    (flat,) = check.judge(np.array([[8.47, 40.0]]))  # on the plateau: b's own step is huge
    assert flat.promise > 0.5 and flat.runaway.name == "b" and flat.runaway.step > 1e10


# ---------------------------------------------------------------- NIST StRD: a converged lbfgs fit is a certified one

from benchmarks import nist  # noqa: E402

needs_nist = pytest.mark.skipif(not nist.available(), reason=f"NIST StRD data not found at {nist.FOLDER}")
STARTS = [(p.name, start) for p in nist.load_all() for start in (1, 2)] if nist.available() else [("Misra1a", 1)]


@functools.cache
def nist_fit(name: str, start: int, optimizer: str) -> dict:
    import tempfile

    from benchmarks.nist_fit import gdfit_fit

    problem = nist.load(name)
    with tempfile.TemporaryDirectory() as folder:
        fit = gdfit_fit(problem, start, Path(folder), optimizer=optimizer)
    return {**fit, "score": nist.score(fit["values"], fit["stderr"], fit["rss"], problem)}


@needs_nist
@pytest.mark.parametrize("name,start", STARTS, ids=[f"{n}-{s}" for n, s in STARTS])
def test_an_lbfgs_fit_that_says_converged_has_the_certified_digits_lm_has(name, start):
    # the digits: 4 in every value, stderr and the RSS (the NIST table's bar), or fewer where lm
    # itself has fewer (Lanczos1's RSS is below float64's resolution)
    fit = nist_fit(name, start, "lbfgs")
    if fit["status"] != "converged":
        assert fit["stderr"] == [None] * len(fit["stderr"])
        return
    bar = min(4.0, nist_fit(name, start, "lm")["score"]["min"])
    assert fit["score"]["min"] >= bar, (fit["score"], fit["stop_rule"])


@needs_nist
def test_from_the_nist_plateaus_lbfgs_reaches_the_certified_values_or_says_where_it_stopped():
    # lbfgs said `converged` from these two starts with a loss 8 and 123 times NIST's: BoxBOD's
    # rate b2 went to 24 and Rat43's b3 to 124, where exp(b2 - b3 x) underflows
    boxbod = nist_fit("BoxBOD", 2, "lbfgs")
    assert boxbod["status"] == "converged" and boxbod["score"]["ok4"]  # it went on, off the plateau
    rat43 = nist_fit("Rat43", 1, "lbfgs")
    assert rat43["status"] == "stalled"
    assert "a plateau, not a minimum" in rat43["stop_rule"] and "barely depends on b2 here" in rat43["stop_rule"]


@needs_nist
def test_a_stall_by_float32_rounding_short_of_the_minimum_is_no_plateau(tmp_path):
    # Misra1a from NIST's first start in float32: the line search finds nothing lower at b2 = 2.4e-4
    # (NIST's is 5.5e-4); the Gauss-Newton step there is about b2's own size, not 1e12 times it
    from benchmarks.nist_fit import gdfit_fit

    fit = gdfit_fit(nist.load("Misra1a"), 1, tmp_path, optimizer="lbfgs", dtype="float32")
    assert fit["status"] == "stalled" and fit["stop_rule"].startswith("no move"), fit["stop_rule"]


@needs_nist
def test_lbfgs_certifies_at_least_43_of_the_54_nist_fits():
    # 29 before the Gauss-Newton model backed its claims (docs/robust-fits.md), torch's LBFGS 17
    assert sum(nist_fit(name, start, "lbfgs")["score"]["ok4"] for name, start in STARTS) >= 43


def test_a_sweep_of_curve_starts_ends_each_run_as_its_single_fit(tmp_path):
    # the runs' Gauss-Newton verdicts are per run: two reach the optimum, two stop on the plateau
    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    x, y = rise_data()
    base = {"data": {"file": str(write_rise(tmp_path, x, y))}, "target": {"column": "y"}, "dtype": "float64",
            "device": "cpu", "optimizer": "lbfgs", "max_iters": 400, "model": {"expr": RISE, "params": {"a": 1, "b": 1}}}
    runs = list(expand(base, {"model.params.b": [1.0, 20.0, 40.0, 1000.0]}, "test", tmp_path))
    swept = list(execute(runs, 1000, lambda: False))[-1]
    singles = [fit_rise(tmp_path, x, y, {"a": 1, "b": b}) for b in (1.0, 20.0, 40.0, 1000.0)]
    assert [r.status for r in swept] == [s.status for s in singles] == ["converged", "converged", "stalled", "stalled"]
    for record, single in zip(swept, singles):
        assert record.loss == pytest.approx(single.loss, rel=1e-9)

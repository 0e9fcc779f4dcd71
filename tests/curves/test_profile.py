"""Profile-likelihood confidence intervals (`--ci`) held to lmfit's conf_interval (an optional
oracle of the `test` extra), to an independent refit by scipy's least_squares, and the F-test's
distribution to scipy.special."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.config import build_config
from gdfit.engine.descent import Descent, every_n, prepare
from gdfit.curves.ftest import f_compare, f_one_cdf, probability

special = pytest.importorskip("scipy.special", reason="scipy is the test-only oracle (extra `test`)")
scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is the test-only oracle (extra `test`)")
lmfit = pytest.importorskip("lmfit", reason="lmfit is the test-only oracle of intervals (extra `test`)")

EXPR = "a1 * exp(-x / t1) + a2 * exp(-x / t2)"
NAMES = ("a1", "t1", "a2", "t2")
START = {"a1": 2.0, "t1": 0.6, "a2": 2.0, "t2": 3.9}
TIGHT = 1e-15


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3000), st.floats(0, 60))
def test_f_cdf_is_scipys(nu, f):
    assert f_one_cdf(f, nu) == pytest.approx(special.fdtr(1, nu, f), abs=1e-12)


def test_levels_are_erf_of_sigma_over_root_two_below_one_a_probability():
    assert [probability(s) for s in (1, 2, 3)] == pytest.approx([0.6826894921370859, 0.9544997361036416,
                                                                  0.9973002039367398], rel=1e-15)
    assert probability(0.9) == 0.9
    assert f_compare(10.0, 10.0, 5) == 0.0 and f_compare(9.0, 10.0, 5) == 0.0  # no worse than the best: 0


def double_exponential(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """An ill-conditioned double exponential (time constants 1 and 3, seeded noise): t2's
    interval is lopsided, about -0.16/+0.20 against a stderr of 0.17."""
    rng = np.random.default_rng(3)
    x = np.linspace(0, 10, 60)
    y = 3.0 * np.exp(-x / 1.0) + 2.0 * np.exp(-x / 3.0) + rng.normal(0, 0.05, x.size)
    (folder / "d.csv").write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    return x, y


def gdfit_config(**extra) -> dict:
    params = {name: value for name, value in START.items()}
    data = {"data": {"file": "d.csv"}, "target": {"column": "y"}, "model": {"expr": EXPR, "params": params},
            "optimizer": "lm", "dtype": "float64", "device": "cpu", "ftol": TIGHT, "xtol": TIGHT, "gtol": TIGHT,
            "confidence": [1, 2, 3]}
    data.update(extra)
    return data


def run(folder: Path, data: dict):
    descent = Descent(prepare(build_config(data, source=str(folder / "d.yaml"), base_dir=folder)),
                      report=every_n(0), advice=False)
    list(descent.steps())
    return descent.result, descent


def lmfit_intervals(x, y, bounds: dict | None = None):
    def residual(p):
        v = p.valuesdict()
        return v["a1"] * np.exp(-x / v["t1"]) + v["a2"] * np.exp(-x / v["t2"]) - y

    params = lmfit.Parameters()
    for name, value in START.items():
        params.add(name, **{"value": value, **(bounds or {}).get(name, {})})
    minimizer = lmfit.Minimizer(residual, params, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    best = minimizer.leastsq()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lmfit warns where a bound is unreachable
        ci = lmfit.conf_interval(minimizer, best, sigmas=[1, 2, 3])
    return best, {name: [bound for _, bound in rows] for name, rows in ci.items()}


def profile_probability(x, y, name: str, value: float, best: np.ndarray, nfree: int, best_chi2: float) -> float:
    """An independent profile point: least_squares with `name` held at `value`, then lmfit's
    f_compare with scipy's F distribution."""
    i = NAMES.index(name)

    def residual(free):
        p = np.insert(free, i, value)
        return p[0] * np.exp(-x / p[1]) + p[2] * np.exp(-x / p[3]) - y

    fit = scipy_optimize.least_squares(residual, np.delete(best, i), method="lm", ftol=TIGHT, xtol=TIGHT, gtol=TIGHT)
    chi2 = float(fit.fun @ fit.fun)
    return float(special.fdtr(1, nfree, (chi2 / best_chi2 - 1) * nfree))


def test_intervals_are_lmfits_conf_interval_and_lopsided(tmp_path):
    x, y = double_exponential(tmp_path)
    result, _ = run(tmp_path, gdfit_config())
    best, expected = lmfit_intervals(x, y)
    assert result.status == "converged"
    for name in NAMES:
        entry = result.params[name]
        ours = [entry["ci"]["3"][0], entry["ci"]["2"][0], entry["ci"]["1"][0], entry["value"],
                entry["ci"]["1"][1], entry["ci"]["2"][1], entry["ci"]["3"][1]]
        # lmfit stops its root search at a relative tolerance of 5e-5: agreement to that
        assert ours == pytest.approx(expected[name], rel=5e-5, abs=0)
    t2 = result.params["t2"]
    below, above = t2["value"] - t2["ci"]["1"][0], t2["ci"]["1"][1] - t2["value"]
    assert below < 0.97 * t2["stderr"] < above / 1.1  # lopsided: about -0.16/+0.20 against 0.17
    assert result.confidence["probabilities"] == {"1": probability(1), "2": probability(2), "3": probability(3)}
    assert result.confidence["notes"] == [] and result.confidence["refits"] > 0


def test_each_bound_is_where_an_independent_refit_reaches_the_level(tmp_path):
    """Far tighter than lmfit's tolerance: at every bound, scipy's refit with the parameter held
    there gives the F-test probability of the level."""
    x, y = double_exponential(tmp_path)
    result, _ = run(tmp_path, gdfit_config(confidence=[1, 2]))
    best = np.array([result.params[n]["value"] for n in NAMES])
    nfree, chi2 = result.fit["dof"], result.fit["chi2"]
    for name in NAMES:
        for level in ("1", "2"):
            for bound in result.params[name]["ci"][level]:
                p = profile_probability(x, y, name, bound, best, nfree, chi2)
                assert p == pytest.approx(probability(float(level)), abs=1e-7)


def test_a_bound_past_the_parameters_range_is_null(tmp_path):
    """t2 <= 3.1: the best fit (2.76) and every refit with t2 held below the bound are the
    unbounded problem's, so lmfit's unbounded intervals are the oracle; its 2 and 3 sigma upper
    bounds lie past 3.1, where the profile cannot go: null (lmfit's inf)."""
    x, y = double_exponential(tmp_path)
    data = gdfit_config()
    data["model"]["params"]["t2"] = {"value": 2.9, "max": 3.1}
    result, _ = run(tmp_path, data)
    _, expected = lmfit_intervals(x, y)
    ci = result.params["t2"]["ci"]
    assert expected["t2"][4] < 3.1 < expected["t2"][5]
    assert ci["2"][1] is None and ci["3"][1] is None
    assert ci["1"][1] == pytest.approx(expected["t2"][4], rel=5e-5)
    assert [ci[level][0] for level in ("3", "2", "1")] == pytest.approx(expected["t2"][:3], rel=5e-5)


def test_a_fit_that_did_not_converge_has_null_intervals_and_says_why(cli, tmp_path):
    double_exponential(tmp_path)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(gdfit_config(max_iters=2)))
    result = cli("run", str(path), "--json", "--every", "0", "--ci")
    assert result.exit_status == 1
    end = result.lines[-1]
    assert all(end["params"][name]["ci"] is None for name in NAMES)
    assert end["confidence"]["notes"] == ["no intervals: the fit did not converge (max_iters), so its chi-square "
                                          "is not the best one"]


def test_ci_flag_report_document_and_plot(cli, tmp_path):
    pytest.importorskip("matplotlib")
    double_exponential(tmp_path)
    data = gdfit_config()
    del data["confidence"]
    data["model"]["params"]["t2"] = {"value": 2.9, "max": 2.95}
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    out, png = tmp_path / "result.json", tmp_path / "profile.png"
    result = cli("run", str(path), "--json", "--every", "0", "--ci", "--output", str(out), "--ci-plot", str(png))
    assert result.exit_status == 0
    end = result.lines[-1]
    assert set(end["params"]["a1"]["ci"]) == {"1", "2"} and end["params"]["t2"]["ci"]["2"][1] is None
    assert result.lines[0]["config"]["confidence"] == [1.0, 2.0]
    import json

    document = json.loads(out.read_text())
    assert document["params"] == end["params"] and document["confidence"] == end["confidence"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from helpers import render_human

    result, descent = run(tmp_path, {**data, "confidence": [1, 2]})
    text = render_human(140, [], result, descent)
    section = text[text.index("confidence intervals"):]
    row = next(line for line in section.splitlines() if line.strip("│ ").startswith("t2 "))
    t2 = result.params["t2"]  # 1 and 2 sigma above lie past its max
    offsets = [format(t2["ci"][level][0] - t2["value"], "+.3g") for level in ("1", "2")]
    assert f"{offsets[0]} / none" in row and f"{offsets[1]} / none" in row
    a1 = result.params["a1"]
    row = next(line for line in section.splitlines() if line.strip("│ ").startswith("a1 "))
    assert " / ".join(format(b - a1["value"], "+.3g") for b in a1["ci"]["2"]) in row
    assert "1σ (68.27%)" in section and "2σ (95.45%)" in section and "F-test" in section


@pytest.mark.parametrize("args, words", [
    (["configs/seed.yaml", "--ci"], "confidence: intervals are for models with scalar parameters"),
    (["configs/decay.yaml", "--ci", "--set", "optimizer=adam"], "confidence: profile intervals refit with lm"),
    (["configs/decay.yaml", "--set", "confidence=[1, 2]", "--set", "optimizer=gd"], "set optimizer: lm (not gd)"),
    (["configs/decay.yaml", "--set", "confidence=[0, 1]"], "confidence: must be a number > 0"),
])
def test_ci_is_refused_where_it_does_not_apply(cli, args, words):
    result = cli("run", *args)
    assert result.exit_status == 2 and words in result.stderr, result.stderr


def test_a_stop_request_leaves_the_remaining_intervals_null(tmp_path):
    from gdfit.engine.profile import confidence_intervals

    double_exponential(tmp_path)
    result, descent = run(tmp_path, gdfit_config(confidence=None))
    fitted = {"params": {n: dict(e) for n, e in result.params.items()}, "fit": result.fit}
    asked = iter([False] * 30 + [True] * 10_000)  # Ctrl-C during the first parameter's refits
    summary, profiles = confidence_intervals(descent.problem, descent.final_params["theta"], fitted, result.status,
                                             [1.0], should_stop=lambda: next(asked))
    assert [fitted["params"][n]["ci"] for n in NAMES] == [None] * 4 and profiles == []
    assert summary["notes"] == ["interrupted: no intervals for a1, t1, a2, t2"]


def test_a_parameter_near_zero_with_a_large_stderr_gets_the_linear_models_exact_interval(tmp_path):
    """A straight line whose slope is 1e-4 with a stderr of about 1.7: lmfit steps by 0.001 and its
    200 steps end short of every level (inf); stepping by the stderr finds them. For a linear model
    the profile is exact: value ± stderr sqrt(F^-1(1, n - p; level))."""
    rng = np.random.default_rng(5)
    x = np.linspace(0, 1, 20)
    noise = rng.normal(0, 2, x.size)
    noise -= np.polyval(np.polyfit(x, noise, 1), x)  # orthogonal to 1 and x: the fit is exactly 5 + 1e-4 x
    y = 5 + 1e-4 * x + noise
    (tmp_path / "line.csv").write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    data = {"data": {"file": "line.csv"}, "target": {"column": "y"}, "device": "cpu", "optimizer": "lm",
            "dtype": "float64", "model": {"expr": "a + b * x", "params": {"a": 1, "b": 1}}, "confidence": [1, 2]}
    result, _ = run(tmp_path, data)
    b = result.params["b"]
    assert b["value"] == pytest.approx(1e-4, abs=1e-9) and b["stderr"] > 1
    for level in (1, 2):
        half = b["stderr"] * math.sqrt(special.fdtri(1, result.fit["dof"], probability(level)))
        assert b["ci"][str(level)] == pytest.approx([b["value"] - half, b["value"] + half], rel=1e-7)

    def residual(p):
        return p["a"].value + p["b"].value * x - y

    params = lmfit.Parameters()
    params.add("a", 1)
    params.add("b", 1)
    minimizer = lmfit.Minimizer(residual, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lmfit_ci = lmfit.conf_interval(minimizer, minimizer.leastsq(), sigmas=[1, 2])
    assert [bound for _, bound in lmfit_ci["b"]][0] == -np.inf  # where lmfit's search gives up

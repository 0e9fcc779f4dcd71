"""Curve fits from a config: the defaults (lm in float64), built-in curves through the CLI and
`--set`, derived parameters (the delta method by hand, and lmfit's constrained fit), bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from tests.conftest import strict_json

RNG = np.random.default_rng(42)
T = np.linspace(0, 4, 40)
DECAY = 3.0 * np.exp(-T / 1.2) + 0.5 + RNG.normal(0, 0.03, T.size)
PEAK_X = np.linspace(-5, 5, 61)
PEAK_Y = 4.0 / (0.8 * math.sqrt(2 * math.pi)) * np.exp(-(PEAK_X - 0.3) ** 2 / (2 * 0.64)) + RNG.normal(0, 0.02, 61)


def write_csv(folder, name: str, **columns: np.ndarray) -> None:
    rows = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in zip(*columns.values()))
    (folder / name).write_text(",".join(columns) + "\n" + rows)


@pytest.fixture
def decay(tmp_path, write_config):
    write_csv(tmp_path, "decay.csv", t=T, y=DECAY)

    def config(**extra) -> str:
        base = {"data": {"file": "decay.csv"}, "target": {"column": "y"}, "device": "cpu",
                "model": {"expr": "a * exp(-t / tau) + c", "params": {"a": 1, "tau": 1, "c": 0}}}
        base.update(extra)
        return write_config(yaml.safe_dump(base, sort_keys=False))

    return config


@pytest.fixture
def peak(tmp_path, write_config):
    write_csv(tmp_path, "peak.csv", x=PEAK_X, y=PEAK_Y)

    def config(**model) -> str:
        return write_config(yaml.safe_dump({"data": {"file": "peak.csv"}, "target": {"column": "y"},
                                            "device": "cpu", "model": {"name": "gaussian", "x": "x", **model}}, sort_keys=False))

    return config


def events(result) -> tuple[dict, dict]:
    lines = result.lines
    return lines[0], lines[-1]


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize("extra,optimizer,dtype", [
    ({}, "lm", "float64"),
    ({"optimizer": "lm"}, "lm", "float64"),
    ({"dtype": "float32"}, "lm", "float32"),
    ({"optimizer": "adam", "learning_rate": 0.05, "max_iters": 5}, "adam", "float32"),
])
def test_a_curve_fit_defaults_to_lm_in_float64(cli, decay, extra, optimizer, dtype):
    start, end = events(cli("run", decay(**extra), "--json", "--every", "0"))
    assert (start["config"]["optimizer"]["name"], start["config"]["dtype"], start["dtype"]) == (optimizer, dtype, dtype)
    if not extra:
        assert end["status"] == "converged"


def test_a_built_in_curve_defaults_to_lm_in_float64_and_identity_and_matrix_models_keep_theirs(cli, peak):
    start, end = events(cli("run", peak(), "--json", "--every", "0"))
    assert (start["config"]["optimizer"]["name"], start["dtype"], end["status"]) == ("lm", "float64", "converged")
    from tests.helpers import resolved

    assert (resolved(target=[[1.0, 2.0]]).config.optimizer.name, resolved(target=[[1.0, 2.0]]).config.dtype) == \
        ("gd", "float32")
    lowrank = resolved(target=[[1.0, 2.0], [3.0, 4.0]], model={"name": "lowrank", "rank": 1}).config
    assert (lowrank.optimizer.name, lowrank.dtype) == ("gd", "float32")
    matrix = resolved(target=[[1.0], [2.0]], model={"name": "linear", "inputs": [[1.0], [2.0]]}).config
    assert (matrix.optimizer.name, matrix.dtype, matrix.model.name) == ("gd", "float32", "linear")


# ---------------------------------------------------------------- built-in curves


def test_a_built_in_curve_guesses_its_starts_and_reports_them(cli, peak, tmp_path):
    out = tmp_path / "fit.json"
    result = cli("run", peak(), "--json", "--every", "0", "--output", str(out))
    start, end = events(result)
    assert set(start["guess"]) == {"amplitude", "center", "sigma"}
    assert start["guess"]["center"] == pytest.approx(0.3, abs=0.1)
    doc = strict_json(out.read_text())
    assert doc["params"] == end["params"] and set(end["params"]) == {"amplitude", "center", "sigma"}
    scipy_optimize = pytest.importorskip("scipy.optimize")
    expected, _ = scipy_optimize.curve_fit(
        lambda x, a, c, s: a / (s * math.sqrt(2 * math.pi)) * np.exp(-(x - c) ** 2 / (2 * s ** 2)),
        PEAK_X, PEAK_Y, p0=[1, 0, 1], xtol=1e-15, ftol=1e-15, gtol=1e-15)
    found = [end["params"][n]["value"] for n in ("amplitude", "center", "sigma")]
    np.testing.assert_allclose(found, expected, rtol=1e-7)


def test_a_given_start_is_kept_and_only_the_others_are_guessed(cli, peak):
    start, _ = events(cli("run", peak(params={"center": {"value": 0.25, "min": -1, "max": 1}}), "--json",
                          "--every", "0"))
    assert set(start["guess"]) == {"amplitude", "sigma"}
    assert start["config"]["model"]["params"]["center"] == {"value": 0.25, "min": -1, "max": 1, "vary": True}


@pytest.mark.parametrize("name,bound,lower,upper", [
    ("sigma", {"min": 2}, [-np.inf, -np.inf, 2], [np.inf, np.inf, np.inf]),
    ("center", {"max": -0.5}, [-np.inf, -np.inf, -np.inf], [np.inf, -0.5, np.inf]),
])
def test_a_guess_outside_a_one_sided_bound_starts_on_it_and_fits_as_scipys(cli, peak, name, bound, lower, upper):
    # sigma's guess is about 0.8 (below min 2) and center's about 0.3 (above max -0.5)
    start, end = events(cli("run", peak(params={name: bound}), "--json", "--every", "0"))
    assert start["guess"][name] == next(iter(bound.values()))
    assert end["status"] == "converged"
    scipy_optimize = pytest.importorskip("scipy.optimize")
    expected, _ = scipy_optimize.curve_fit(
        lambda x, a, c, s: a / (s * math.sqrt(2 * math.pi)) * np.exp(-(x - c) ** 2 / (2 * s ** 2)),
        PEAK_X, PEAK_Y, p0=[3, -0.5, 2], bounds=(lower, upper), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    found = [end["params"][n]["value"] for n in ("amplitude", "center", "sigma")]
    assert found[["amplitude", "center", "sigma"].index(name)] == pytest.approx(next(iter(bound.values())), abs=1e-12)
    # lm stops at a relative loss change of 1e-10, a hair before scipy's trf at 1e-15 on the bound
    np.testing.assert_allclose(found, expected, rtol=1e-4)


def test_a_guess_outside_a_one_sided_bound_is_no_error_for_config_or_the_api(cli, peak):
    import gdfit

    path = peak(params={"sigma": {"min": 2}})
    assert cli("config", path).exit_status == 0
    assert gdfit.fit(path).params["sigma"].value == pytest.approx(2.0)


def pseudovoigt(x, a, c, s, f):
    """lmfit's pseudo-Voigt: the gaussian's sigma is s / sqrt(2 ln 2), so both have FWHM 2 s."""
    g = a / (s / math.sqrt(2 * math.log(2)) * math.sqrt(2 * math.pi)) * np.exp(
        -(x - c) ** 2 * math.log(2) / s ** 2)
    return (1 - f) * g + f * a / math.pi * s / ((x - c) ** 2 + s ** 2)


def test_pseudovoigts_own_bounds_are_kept_shown_and_equal_scipys(cli, tmp_path, write_config, monkeypatch):
    # lorentzian data: the best unbounded fraction is above 1, so the fit ends on its bound
    x = np.linspace(-6, 6, 81)
    y = 3.0 / math.pi * 0.7 / (x ** 2 + 0.49) * 1.15 - 0.12 * np.exp(-x ** 2) + RNG.normal(0, 0.01, x.size)
    write_csv(tmp_path, "pv.csv", x=x, y=y)
    path = write_config(yaml.safe_dump({"data": {"file": "pv.csv"}, "target": {"column": "y"}, "device": "cpu",
                                        "model": {"name": "pseudovoigt", "x": "x"}}))
    result = cli("run", path, "--json", "--every", "0")
    start, end = events(result)
    assert start["config"]["model"]["params"]["fraction"] == {"value": None, "min": 0.0, "max": 1.0, "vary": True}
    scipy_optimize = pytest.importorskip("scipy.optimize")
    p0 = [start["guess"][n] for n in ("amplitude", "center", "sigma", "fraction")]
    expected, _ = scipy_optimize.curve_fit(pseudovoigt, x, y, p0=p0, bounds=([-np.inf] * 3 + [0], [np.inf] * 3 + [1]),
                                           xtol=1e-15, ftol=1e-15, gtol=1e-15)
    found = [end["params"][n]["value"] for n in ("amplitude", "center", "sigma", "fraction")]
    assert found[3] == 1.0 and expected[3] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(found, expected, rtol=1e-4)
    monkeypatch.setenv("COLUMNS", "120")  # wide enough for the note column
    row = next(line for line in cli("run", path, "--every", "0").stdout.splitlines()
               if line.strip("│ ").startswith("fraction "))
    assert row.split()[-6:-1] == ["0.5", "0", "1", "at", "max"]  # start, min, max: the bounds the fit kept


@pytest.mark.parametrize("params,runs", [
    ({}, False), ({"fraction": 0.3}, False), ({"sigma": {"min": 0.1}}, False),
    ({"fraction": {"value": 0.3, "vary": False}}, True), ({"fraction": {"min": None, "max": None}}, True)])
def test_lbfgs_refuses_a_built_in_curves_bounds_as_it_refuses_a_configs(cli, peak, write_config, params, runs):
    peak()  # writes peak.csv
    path = write_config(yaml.safe_dump({"data": {"file": "peak.csv"}, "target": {"column": "y"}, "device": "cpu",
                                        "optimizer": "lbfgs", "max_iters": 50,
                                        "model": {"name": "pseudovoigt", "x": "x", "params": params}}), "pv.yaml")
    result = cli("run", path, "--every", "0", "--json")
    if runs:
        assert result.exit_status == 0, result.stderr
        return
    name = next(iter(params), "fraction")
    assert result.exit_status == 2 and "Traceback" not in result.stderr
    assert f"model.params.{name}: lbfgs does not keep bounds, and {name} is kept in [" in result.stderr
    assert ("model pseudovoigt's own bounds" in result.stderr) == (name == "fraction")


def test_the_human_view_prints_the_guesses(cli, peak):
    text = cli("run", peak()).stdout
    assert "guessed from the data: amplitude = " in text
    assert text.count("guessed") == 4  # and in the report, beside each guessed start


def test_set_switches_the_built_in_curve_and_adds_a_derived_parameter(cli, peak):
    result = cli("run", peak(), "--json", "--every", "0", "--set", "model.name=lorentzian",
                 "--set", 'model.params.fwhm={expr: "2 * sigma"}')
    start, end = events(result)
    assert start["config"]["model"]["name"] == "lorentzian"
    assert end["params"]["fwhm"]["derived"] is True
    assert end["params"]["fwhm"]["value"] == pytest.approx(2 * end["params"]["sigma"]["value"], rel=1e-15)
    assert end["params"]["fwhm"]["stderr"] == pytest.approx(2 * end["params"]["sigma"]["stderr"], rel=1e-12)


# ---------------------------------------------------------------- derived parameters


def test_derived_stderr_is_the_delta_method_by_hand(cli, decay, tmp_path):
    model = {"expr": "a * exp(-t / tau) + c", "params": {
        "a": 1, "tau": 1, "c": 0, "half_life": {"expr": "tau * log(2)"}, "mix": {"expr": "a / c + tau ** 2"}}}
    out = tmp_path / "fit.json"
    _, end = events(cli("run", decay(model=model), "--json", "--every", "0", "--output", str(out)))
    params, cov = end["params"], np.array(end["covariance"])
    assert cov.shape == (3, 3)  # over the fitted a, tau, c only, in the config's order
    assert list(params) == ["a", "tau", "c", "half_life", "mix"]
    a, tau, c = (params[n]["value"] for n in ("a", "tau", "c"))
    gradient = np.array([1 / c, 2 * tau, -a / c ** 2])
    assert params["mix"] == {"value": pytest.approx(a / c + tau ** 2, rel=1e-14),
                             "stderr": pytest.approx(math.sqrt(gradient @ cov @ gradient), rel=1e-12), "derived": True}
    assert params["half_life"]["stderr"] == pytest.approx(math.log(2) * math.sqrt(cov[1, 1]), rel=1e-12)
    assert strict_json(out.read_text())["params"]["mix"] == params["mix"]


def test_a_constrained_fit_equals_lmfits(cli, tmp_path, write_config):
    lmfit = pytest.importorskip("lmfit")
    y = 2.0 * np.exp(-T / 0.9) + 2 * 2.0 * 0.3 + RNG.normal(0, 0.02, T.size)
    write_csv(tmp_path, "tied.csv", t=T, y=y)
    config = {"data": {"file": "tied.csv"}, "target": {"column": "y"}, "device": "cpu",
              "model": {"expr": "a * exp(-t / tau) + b", "params": {"a": 1, "tau": 1, "b": {"expr": "0.6 * a"}}}}
    _, end = events(cli("run", write_config(yaml.safe_dump(config, sort_keys=False)), "--json", "--every", "0"))
    model = lmfit.Model(lambda t, a, tau, b: a * np.exp(-t / tau) + b)
    params = model.make_params(a=1, tau=1, b=0)
    params["b"].set(expr="0.6 * a")
    # lmfit's least_squares at tight tolerances (its leastsq stops about 1e-8 early here)
    theirs = model.fit(y, params, t=T, method="least_squares", fit_kws={"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15})
    for name in ("a", "tau", "b"):
        assert end["params"][name]["value"] == pytest.approx(theirs.params[name].value, rel=1e-8)
        assert end["params"][name]["stderr"] == pytest.approx(theirs.params[name].stderr, rel=1e-5)
    assert end["params"]["b"]["derived"] is True and end["fit"]["p"] == 2


def test_a_derived_parameter_of_a_fixed_one_and_of_another_derived_one(cli, decay):
    model = {"expr": "a * exp(-t / tau) + c", "params": {
        "a": 1, "tau": 1, "c": {"expr": "k * d"}, "d": {"expr": "0.5 * a"}, "k": {"value": 0.3, "vary": False}}}
    _, end = events(cli("run", decay(model=model), "--json", "--every", "0"))
    a = end["params"]["a"]
    assert end["params"]["c"]["value"] == pytest.approx(0.15 * a["value"], rel=1e-15)
    assert end["params"]["c"]["stderr"] == pytest.approx(0.15 * a["stderr"], rel=1e-12)
    assert end["params"]["k"] == {"value": 0.3, "stderr": None, "fixed": True}


# ---------------------------------------------------------------- bad input


def test_a_built_in_curve_without_data_exits_2(cli, write_config):
    path = write_config(yaml.safe_dump({"target": [1.0, 2.0, 3.0], "model": {"name": "gaussian", "x": "x"}}))
    result = cli("run", path)
    assert result.exit_status == 2 and path in result.stderr
    assert "model gaussian: x: x names a column of `data: {file: PATH}`, which is missing" in result.stderr


@pytest.mark.parametrize("model,fragment", [
    ({"name": "gausian", "x": "t"}, "unknown model 'gausian' (did you mean 'gaussian'?)"),
    ({"name": "gaussian"}, "model gaussian needs `x:`, the data column"),
    ({"name": "gaussian", "x": "q"}, "model.x: no column 'q' in the data; it has t, y"),
    ({"name": "gaussian", "x": "t", "params": {"height": 3}},
     "model gaussian has the parameters amplitude, center, sigma; 'height' is none of them"),
    ({"expr": "a * erfi(t)", "params": {"a": 1}}, "model.expr: unknown function 'erfi'"),
    ({"expr": "a * t + b", "params": {"a": 1, "b": {"expr": "2 * q"}}}, "model.params.b.expr: unknown name 'q'"),
    ({"expr": "a * t + b", "params": {"a": 1, "b": {"expr": "2 * t"}}}, "model.params.b.expr: unknown name 't'"),
    ({"expr": "a * t + b + c", "params": {"a": 1, "b": {"expr": "2 * c"}, "c": {"expr": "b + a"}}},
     "model.params.b.expr: derived parameters are defined through each other in a circle: b -> c -> b"),
    ({"expr": "a * t + b", "params": {"a": 1, "b": {"expr": "2 * a", "value": 3}}},
     "a derived parameter (expr) is not fitted: it takes no value"),
    ({"expr": "a * t", "params": {"a": {"min": 0}}}, "parameter 'a' needs a start value"),
    ({"expr": "min(a, t, 1)", "params": {"a": 1}}, "min() takes exactly 2 arguments, got 3"),
    ({"expr": "a * exp(-t / tau) + c / 0", "params": {"a": 1, "tau": 1, "c": 0}},
     "model.expr: 'c / 0' divides by zero"),
    ({"expr": "a * t + c", "params": {"a": 1, "c": 0, "z": {"expr": "a / (2.0 - 2 * 1)"}}},
     "model.params.z.expr: 'a / (2.0 - 2 * 1)' divides by zero"),
])
def test_bad_curve_models_exit_2_naming_file_key_and_what_was_expected(cli, decay, model, fragment):
    path = decay(model=model)
    result = cli("run", path)
    assert result.exit_status == 2, result.stderr
    assert fragment in result.stderr, result.stderr
    assert path in result.stderr and "Traceback" not in result.stderr


def test_an_infinite_target_is_bad_data_naming_its_row(cli, tmp_path, write_config):
    y = DECAY.copy()
    y[[3, 17]] = [np.nan, np.inf]  # NaN is missing (left out); inf is an error
    write_csv(tmp_path, "inf.csv", t=T, y=y)
    path = write_config(yaml.safe_dump({"data": {"file": "inf.csv"}, "target": {"column": "y"},
                                        "model": {"expr": "a * exp(-t / tau) + c", "params": {"a": 1, "tau": 1, "c": 0}}}))
    result = cli("run", path, "--json")
    row = int(np.flatnonzero(np.isinf(y))[0]) + 1  # data rows count from 1, after the header
    assert result.exit_status == 2 and result.stdout.count("\n") <= 1, result.stderr
    assert f"target: target column 'y' has an infinite value at data row {row} (a missing value is NaN)" in result.stderr


@pytest.mark.parametrize("name,params", [("logistic4", {}), ("powerlaw", {}),
                                         ("powerlaw", {"amplitude": 1, "exponent": 2})])
def test_a_curve_of_non_negative_x_given_a_negative_one_names_its_row(cli, tmp_path, write_config, name, params):
    x = np.linspace(0, 5, 30)
    x[[7, 12]] = [-0.5, -2.0]
    y = 2.0 * np.abs(x) ** 1.5
    y[12] = np.nan  # a missing target: that row is not fitted, so its x does not matter
    write_csv(tmp_path, "neg.csv", x=x, y=y)
    path = write_config(yaml.safe_dump({"data": {"file": "neg.csv"}, "target": {"column": "y"},
                                        "model": {"name": name, "x": "x", "params": params}}))
    result = cli("run", path)
    assert result.exit_status == 2 and "Traceback" not in result.stderr
    assert f"model.x: model {name} needs x >= 0" in result.stderr
    assert "column 'x' is -0.5 at data row 8" in result.stderr


def test_a_powerlaw_at_x_0_still_fits(cli, tmp_path, write_config):
    x = np.linspace(0, 5, 30)  # at x = 0, x ** exponent is 0: no reason to refuse it
    write_csv(tmp_path, "zero.csv", x=x, y=2.0 * x ** 1.5 + RNG.normal(0, 0.01, x.size))
    path = write_config(yaml.safe_dump({"data": {"file": "zero.csv"}, "target": {"column": "y"},
                                        "model": {"name": "powerlaw", "x": "x"}}))
    _, end = events(cli("run", path, "--json", "--every", "0"))
    assert end["status"] == "converged" and end["params"]["exponent"]["value"] == pytest.approx(1.5, abs=0.01)


def test_a_derived_parameter_that_is_not_finite_has_no_stderr(cli, decay):
    model = {"expr": "a * exp(-t / tau) + c", "params": {"a": 1, "tau": 1, "c": 0, "z": {"expr": "(a - a) ** -1"}}}
    with np.errstate(divide="ignore"):
        assert np.isinf(np.float64(0.0) ** -1)  # numpy's value at any a: no error bar means anything
    _, end = events(cli("run", decay(model=model), "--json", "--every", "0"))
    assert end["params"]["z"] == {"value": None, "stderr": None, "derived": True}
    assert end["params"]["a"]["stderr"] > 0  # the others keep theirs


@pytest.mark.parametrize("word", ["True", "None", "lambda", "for"])
def test_a_reserved_word_as_a_parameter_name_is_refused_naming_the_key(cli, decay, word):
    path = decay(model={"expr": "a * exp(-t / tau) + c", "params": {"a": 1, "tau": 1, "c": 0, word: 2}})
    result = cli("config", path)
    assert result.exit_status == 2 and "Traceback" not in result.stderr
    assert f"model.params.{word}: {word!r} is a reserved word of the expression language" in result.stderr


def test_a_data_file_given_as_the_config_is_quoted_short(cli, tmp_path):
    write_csv(tmp_path, "data.csv", t=np.linspace(0, 1, 3000), y=np.linspace(1, 2, 3000))
    result = cli("run", str(tmp_path / "data.csv"), "--json")
    assert result.exit_status == 2
    (event,) = result.lines
    import re

    size = len((tmp_path / "data.csv").read_text())  # about 114,000: YAML reads it as one folded text
    quoted = re.search(r"got the text '(.*)'\.\.\. \(([\d,]+) characters\)$", event["message"])
    assert len(event["message"]) < 300 and quoted is not None
    assert quoted[1] == (tmp_path / "data.csv").read_text().replace("\n", " ")[:60]
    assert size - 3001 <= int(quoted[2].replace(",", "")) <= size
    human = cli("run", str(tmp_path / "data.csv")).stderr
    assert len(human) < 400 and "this looks like a data file: name it in a config, as `data: {file: PATH}`" in human


def test_a_division_by_a_literal_zero_is_a_config_error_for_the_api_too(decay):
    import gdfit

    with pytest.raises(gdfit.GdfitError, match="'a / 0' divides by zero"):
        gdfit.fit(decay(model={"expr": "a * t", "params": {"a": 1, "z": {"expr": "a / 0"}}}))


def test_a_derived_parameter_divided_by_a_fixed_zero_is_null_as_numpy_says_inf(cli, decay):
    model = {"expr": "a * exp(-t / tau) + c", "params": {
        "a": 1, "tau": 1, "c": {"value": 0, "vary": False}, "z": {"expr": "a / c"}}}
    with np.errstate(divide="ignore"):
        assert np.isinf(np.float64(1.0) / np.float64(0.0))  # the value, not finite: JSON's null
    result = cli("run", decay(model=model), "--json", "--every", "0")
    _, end = events(result)
    assert result.exit_status == 0 and end["params"]["z"] == {"value": None, "stderr": None, "derived": True}


# ---------------------------------------------------------------- the example configs


@pytest.mark.parametrize("config,truth", [
    ("gaussian", "gaussian"), ("dose", "dose"), ("edge", "edge"), ("tied-peaks", "peaks")])
def test_the_example_configs_recover_their_true_parameters(cli, config, truth):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("make_data", ROOT / "configs" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    result = cli("run", str(ROOT / "configs" / f"{config}.yaml"), "--json", "--every", "0")
    start, end = events(result)
    assert end["status"] == "converged" and (start["config"]["optimizer"]["name"], start["dtype"]) == ("lm", "float64")
    for name, value in make_data.TRUTH[truth].items():
        found = end["params"][name]
        assert abs(found["value"] - value) < 5 * found["stderr"], (name, found, value)  # within noise

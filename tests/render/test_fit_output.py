"""A curve fit's output: the JSON fields, the result document, the fit report, the plot, and the
example configs, whose parameters and standard errors are checked against scipy's curve_fit."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, strict_json
from helpers import fit, render_human

from gdfit.render.fit_report import correlations, relative_error

CONFIGS = ROOT / "configs"
EXAMPLES = ("decay", "peaks", "oscillation")
FIT_KEYS = {"n", "p", "dof", "rss", "residual_std", "chi2", "reduced_chi2", "r2", "aic", "bic", "missing"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def example(name: str) -> str:
    return str(CONFIGS / f"{name}.yaml")


def end_event(cli, *args: str) -> dict:
    result = cli("run", *args, "--json", "--every", "0")
    assert result.exit_status == 0, result.stderr
    return result.lines[-1]


@pytest.fixture
def singular(write_config, tmp_path):
    """y = a b x: only the product a b is determined, so the covariance is infinite."""
    (tmp_path / "line.csv").write_text("x,y\n1,2.1\n2,3.9\n3,6.2\n4,7.8\n")
    return write_config("data: {file: line.csv}\ntarget: {column: y}\n"
                        "model: {expr: 'a * b * x + c', params: {a: 1, b: 1, c: {value: 0, vary: false}}}\n"
                        "optimizer: lm\ndtype: float64\n")


# ---------------------------------------------------------------- JSON Lines and --output


def test_step_events_carry_the_parameters_by_name(cli):
    result = cli("run", example("decay"), "--json", "--every", "1")
    steps = [e for e in result.lines if e["event"] == "step"]
    assert steps and all(set(e["params"]) == {"a", "tau", "c"} for e in steps)
    assert all(isinstance(v, float) for e in steps for v in e["params"].values())
    end = result.lines[-1]
    assert {k: v["value"] for k, v in end["params"].items()} == steps[-1]["params"]


def test_end_event_has_params_covariance_and_fit(cli):
    end = end_event(cli, example("decay"))
    assert list(end["params"]) == ["a", "tau", "c"]
    for entry in end["params"].values():
        assert set(entry) == {"value", "stderr"}
        assert isinstance(entry["value"], float) and isinstance(entry["stderr"], float) and entry["stderr"] > 0
    cov = np.array(end["covariance"])
    assert cov.shape == (3, 3) and np.allclose(cov, cov.T)
    stderr = [entry["stderr"] for entry in end["params"].values()]
    assert np.allclose(np.sqrt(np.diag(cov)), stderr, rtol=1e-12)
    fit_stats = end["fit"]
    assert set(fit_stats) == FIT_KEYS
    assert (fit_stats["n"], fit_stats["p"], fit_stats["dof"], fit_stats["missing"]) == (40, 3, 37, 0)
    assert all(isinstance(fit_stats[k], float) for k in FIT_KEYS - {"n", "p", "dof", "missing"})
    assert end["stop_rule"] and end["status"] == "converged"


def test_fits_of_x_itself_carry_no_fit_fields(cli):
    result = cli("run", str(CONFIGS / "seed.yaml"), "--json", "--every", "1")
    assert all("params" not in e for e in result.lines if e["event"] == "step")
    assert not {"params", "covariance", "fit"} & set(result.lines[-1])


def test_an_undetermined_parameter_is_null_never_infinity(cli, singular):
    result = cli("run", singular, "--json", "--every", "0")
    end = result.lines[-1]  # strict_json: an Infinity token would have failed here
    assert end["params"]["a"]["stderr"] is None and end["params"]["b"]["stderr"] is None
    assert end["params"]["c"] == {"value": 0.0, "stderr": None, "fixed": True}
    assert all(v is None for row in end["covariance"] for v in row)


def test_result_document_adds_the_fit_to_config_and_history(cli, tmp_path):
    out = tmp_path / "fit.json"
    result = cli("run", example("peaks"), "--json", "--every", "0", "--output", str(out))
    assert result.exit_status == 0, result.stderr
    doc, end = strict_json(out.read_text()), result.lines[-1]
    for key in ("params", "covariance", "fit", "status", "iters", "loss"):
        assert doc[key] == end[key]
    assert doc["config"]["model"]["params"]["m1"] == {"value": 3.5, "min": 0, "max": 5, "vary": True}
    assert doc["history"]["iter"][-1] == doc["iters"]


# ---------------------------------------------------------------- the human fit report


def _human(width: int = 100, **config) -> tuple[str, object]:
    steps, result, descent = fit(**config)
    return render_human(width, steps, result, descent), result


def _decay(**overrides) -> dict:
    config = dict(data={"file": str(CONFIGS / "decay.csv")}, target={"column": "y"}, sigma={"column": "sigma"},
                  absolute_sigma=True, optimizer="lm", dtype="float64",
                  model={"expr": "a * exp(-t / tau) + c", "params": {"a": 1, "tau": {"value": 1, "min": 0}, "c": 0}})
    config.update(overrides)
    return config


def test_fit_report_shows_values_errors_bounds_and_statistics():
    text, result = _human(**_decay())
    assert "fit report" in text and "converged" in text
    for name, entry in result.params.items():
        row = next(line for line in text.splitlines() if line.strip("│ ").startswith(f"{name} "))
        assert f"{entry['value']:.8g}" in row and f"± {entry['stderr']:.3g}" in row
        assert f"{relative_error(entry['value'], entry['stderr']):.2f}%" in row
    tau_row = next(line for line in text.splitlines() if line.strip("│ ").startswith("tau "))
    assert tau_row.split()[-3:-1] == ["0", "inf"]  # min and max from the config
    for label in ("data points (n)", "degrees of freedom", "RSS", "residual std", "chi-square",
                  "reduced chi-square", "R²", "AIC", "BIC"):
        assert label in text
    assert f"{result.fit['reduced_chi2']:.6g}" in text


def test_fit_report_lists_the_strongest_correlations_first():
    text, result = _human(**_decay())
    pairs = correlations(["a", "tau", "c"], result.covariance)
    lines = [line.strip("│ ") for line in text.splitlines() if "C(" in line]
    assert lines == [f"C({a}, {b}) = {corr:+.4f}" for a, b, corr in pairs]
    assert [abs(p[2]) for p in pairs] == sorted((abs(p[2]) for p in pairs), reverse=True)


def test_the_stream_shows_parameters_not_the_prediction():
    text, result = _human(**_decay())
    header = next(line for line in text.splitlines() if "┃ iter" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["iter", "loss", "a", "tau", "c"]
    last = next(line for line in text.splitlines() if line.startswith(f"│ {result.iters:>4} │"))
    assert f"{result.params['tau']['value']:.8g}" in last


def test_fixed_and_bounded_parameters_are_marked():
    config = _decay(model={"expr": "a * exp(-t / tau) + c",
                           "params": {"a": {"value": 5, "vary": False}, "tau": {"value": 1, "max": 2}, "c": 0}})
    text, result = _human(**config)
    row = {line.strip("│ ").split()[0]: line for line in text.splitlines() if line.strip("│ ").startswith(("a ", "tau "))}
    assert row["a"].rstrip(" │").endswith("fixed") and "±" not in row["a"]
    assert result.params["tau"]["value"] == 2.0 and row["tau"].rstrip(" │").endswith("at max")


def test_an_undetermined_fit_says_so_in_the_report(cli, singular):
    result = cli("run", singular, "--every", "0")
    assert "do not determine every parameter" in result.stdout and "Traceback" not in result.stderr
    assert "± inf" in result.stdout or "± nan" in result.stdout


def test_correlations_follow_lmfit():
    cov = [[4.0, 1.9, 0.02], [1.9, 1.0, -0.3], [0.02, -0.3, 1.0]]
    assert correlations(["a", "b", "c"], cov) == [("a", "b", 0.95), ("b", "c", -0.3)]
    assert correlations(["a", "b"], [[math.inf, 1.0], [1.0, 1.0]]) == []
    assert relative_error(0.0, 1.0) is None and relative_error(-2.0, 0.1) == pytest.approx(5.0)


# ---------------------------------------------------------------- --plot


def test_plot_of_one_variable_data_is_a_png(cli, tmp_path):
    pytest.importorskip("matplotlib")
    image = tmp_path / "decay.png"
    result = cli("run", example("decay"), "--every", "0", "--plot", str(image))
    assert result.exit_status == 0, result.stderr
    data = image.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    height = int.from_bytes(data[20:24], "big")
    assert height > 600  # three panels: data and curve, residuals, loss


def test_plotted_curve_is_the_model_on_a_grid():
    from gdfit.pictures.plotting import curve_series

    steps, result, descent = fit(**_decay())
    series = curve_series(descent.problem.model, descent.problem.target, result.params, grid_points=50)
    data = np.genfromtxt(CONFIGS / "decay.csv", delimiter=",", names=True)
    assert np.allclose(series["y"], data["y"], rtol=1e-14) and np.allclose(series["sigma"], data["sigma"])
    a, tau, c = (result.params[n]["value"] for n in ("a", "tau", "c"))
    grid = np.linspace(0, 10, 50)
    assert np.allclose(series["curve_x"], grid) and np.allclose(series["curve_y"], a * np.exp(-grid / tau) + c)
    assert np.allclose(series["residual"], data["y"] - (a * np.exp(-data["t"] / tau) + c))


def test_plot_of_two_variable_data_draws_the_loss_and_says_so(cli, write_config, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "plane.csv").write_text("u,v,y\n0,0,1\n1,0,3\n0,1,2\n1,1,4.1\n2,1,6\n")
    config = write_config("data: {file: plane.csv}\ntarget: {column: y}\n"
                          "model: {expr: 'p * u + q * v + r', params: {p: 1, q: 1, r: 0}}\noptimizer: lm\n")
    image = tmp_path / "plane.png"
    result = cli("run", config, "--json", "--every", "0", "--plot", str(image))
    assert result.exit_status == 0 and image.read_bytes().startswith(PNG_SIGNATURE)
    assert "one-variable data only" in result.stderr and "(u, v)" in result.stderr
    assert all(line.startswith("{") for line in result.stdout.splitlines())


def test_tensorboard_logs_the_parameters_as_they_move(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cli("run", example("decay"), "--json", "--every", "1", "--tensorboard", str(tmp_path / "tb"))
    steps = [e for e in result.lines if e["event"] == "step"]
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    points = events.Scalars("params/tau")
    assert [p.step for p in points] == [e["iter"] for e in steps]
    np.testing.assert_allclose([p.value for p in points], [e["params"]["tau"] for e in steps], rtol=1e-6)  # float32


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_converges(cli, name):
    end = end_event(cli, example(name))
    assert end["status"] == "converged" and end["fit"]["r2"] > 0.95


# numpy computes float64 exp, cos and power on the CPU's SIMD path (AVX-512 or AVX2), each within
# about an ulp of the true value, and the paths differ in those last bits: a curve of up to three
# such terms may differ by a few ulps of its largest value between machines (by 2 ulps of an
# entry, 0.6 ulps of its column's largest, between numpy's AVX-512 and AVX2 paths). Everything else
# (the seeded noise, the format) is the same everywhere.
MAKE_DATA_ULPS = 8


def test_make_data_writes_the_shipped_csvs(tmp_path):
    subprocess.run([sys.executable, str(CONFIGS / "make_data.py"), str(tmp_path)], check=True, timeout=60)
    written = sorted(path.name for path in tmp_path.glob("*.csv"))
    assert {f"{name}.csv" for name in EXAMPLES} <= set(written)
    for name in written:
        made, shipped = ((folder / name).read_text().splitlines() for folder in (tmp_path, CONFIGS))
        assert made[0] == shipped[0] and len(made) == len(shipped), name  # columns and rows
        made_rows, shipped_rows = ([row.split(",") for row in rows[1:]] for rows in (made, shipped))
        largest = np.abs(np.array(shipped_rows, dtype=float)).max(axis=0)
        for line, (ours, theirs) in enumerate(zip(made_rows, shipped_rows), start=2):
            for column, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                if a != b:  # the same text, or a float64 within the ulps numpy's SIMD paths allow
                    assert abs(float(a) - float(b)) <= MAKE_DATA_ULPS * np.spacing(largest[column]), \
                        f"{name}:{line}: {a} vs {b}"
                    assert a == f"{float(a):.17g}", f"{name}:{line}: format {a}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_recover_the_true_parameters(cli, name):
    sys.path.insert(0, str(CONFIGS))
    try:
        from make_data import TRUTH
    finally:
        sys.path.remove(str(CONFIGS))
    params = end_event(cli, example(name))["params"]
    for key, truth in TRUTH[name].items():  # within 3 standard errors: a 0.3% chance to fail per parameter
        assert abs(params[key]["value"] - truth) < 3 * params[key]["stderr"], key


# ---------------------------------------------------------------- scipy's curve_fit as the oracle


def _curve_fit(f, x, y, p0, **kwargs):
    """curve_fit to convergence, with a central-difference Jacobian: its default forward
    differences hold stderrs to ~1e-6 only."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    tight = dict(method="trf", jac="3-point", ftol=1e-13, xtol=1e-13, gtol=1e-13)
    return scipy_optimize.curve_fit(f, x, y, p0=p0, **tight, **kwargs)


def _peaks(x, a1, m1, s1, a2, m2, s2, c):
    return a1 * np.exp(-(x - m1) ** 2 / (2 * s1**2)) + a2 * np.exp(-(x - m2) ** 2 / (2 * s2**2)) + c


ORACLES = {
    "decay": (("t",), lambda t, a, tau, c: a * np.exp(-t / tau) + c),
    "peaks": (("x",), _peaks),
    "oscillation": (("t",), lambda t, a, tau, w, phi, c: a * np.exp(-t / tau) * np.cos(w * t + phi) + c),
}


def _start_and_bounds(name: str) -> tuple[list[float], tuple[list[float], list[float]]]:
    import yaml

    specs = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["params"]
    specs = {k: v if isinstance(v, dict) else {"value": v} for k, v in specs.items()}
    low = [s.get("min", -np.inf) for s in specs.values()]
    high = [s.get("max", np.inf) for s in specs.values()]
    return [float(s["value"]) for s in specs.values()], (low, high)


def _compare(end: dict, popt, pcov) -> None:
    values = [p["value"] for p in end["params"].values()]
    stderr = [p["stderr"] for p in end["params"].values()]
    np.testing.assert_allclose(values, popt, rtol=1e-6)
    np.testing.assert_allclose(stderr, np.sqrt(np.diag(pcov)), rtol=1e-6)


@pytest.mark.parametrize("name", ["peaks", "oscillation"])
def test_examples_equal_curve_fit(cli, name):
    columns, f = ORACLES[name]
    data = np.genfromtxt(CONFIGS / f"{name}.csv", delimiter=",", names=True)
    p0, bounds = _start_and_bounds(name)
    popt, pcov = _curve_fit(f, data[columns[0]], data["y"], p0, bounds=bounds)
    _compare(end_event(cli, example(name)), popt, pcov)


@pytest.mark.parametrize("absolute", [True, False])
def test_weighted_decay_equals_curve_fit_with_either_absolute_sigma(cli, absolute):
    _, f = ORACLES["decay"]
    data = np.genfromtxt(CONFIGS / "decay.csv", delimiter=",", names=True)
    p0, bounds = _start_and_bounds("decay")
    popt, pcov = _curve_fit(f, data["t"], data["y"], p0, bounds=bounds, sigma=data["sigma"], absolute_sigma=absolute)
    end = end_event(cli, example("decay"), "--set", f"absolute_sigma={str(absolute).lower()}")
    _compare(end, popt, pcov)
    chi2 = end["fit"]["chi2"]
    assert chi2 == pytest.approx(float(np.sum(((data["y"] - f(data["t"], *popt)) / data["sigma"]) ** 2)), rel=1e-9)


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_no_value_or_start_is_cut_at_any_width(cli, write_config, tmp_path, monkeypatch, columns):
    # a gaussian scaled by 1e-9: every value and start is long (8.4598494e-18)
    x = np.linspace(-3e-9, 5e-9, 80)
    y = 8.5e-18 / (9e-10 * math.sqrt(2 * math.pi)) * np.exp(-(x - 1.2e-9) ** 2 / (2 * 9e-10 ** 2))
    y = y + np.random.default_rng(3).normal(0, 2e-10, x.size)
    (tmp_path / "g.csv").write_text("x,y\n" + "".join(f"{a:.17g},{b:.17g}\n" for a, b in zip(x, y)))
    path = write_config("data: {file: g.csv}\ntarget: {column: y}\nmodel: {name: gaussian, x: x}\n")
    start, end = (lambda lines: (lines[0], lines[-1]))(cli("run", path, "--json", "--every", "0").lines)
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("NO_COLOR", "1")
    text = cli("run", path, "--every", "0").stdout
    assert "fit report" in text, text + cli("run", path).stderr
    report = text[text.index("fit report"):]
    assert max(len(line) for line in report.splitlines()) <= columns and "…" not in report
    words = set(report.replace("│", " ").replace(",", " ").split())
    for name, entry in end["params"].items():
        assert f"{entry['value']:.8g}" in words and f"{start['guess'][name]:g}" in words
        assert len(f"{entry['value']:.8g}") >= 12  # the long form this test is about
    for key, label, spec in (("rss", "RSS", ".6g"), ("reduced_chi2", "reduced chi-square", ".6g")):
        assert f"{end['fit'][key]:{spec}}" in words

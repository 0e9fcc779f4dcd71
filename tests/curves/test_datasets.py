"""Global fits (`datasets:` with shared parameters) held to scipy.optimize.least_squares on the
stacked weighted residuals, and their errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from gdfit.config import apply_override, build_config
from gdfit.engine.descent import Descent, every_n, prepare
from gdfit.errors import ConfigError

scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is the test-only oracle (extra `test`)")

NAMES = ("amp", "tau1", "tau2", "c")
EXPR_A, EXPR_B = "amp * exp(-t / tau1) + c", "amp * exp(-t / tau2) + c"
EXPR_C = "amp * t / (t + tau2)"  # a third shape sharing amp and tau2


def write_datasets(folder: Path) -> dict:
    """Three seeded datasets: a (no sigma), b (sigma column), c (its own expression, NaN target)."""
    rng = np.random.default_rng(11)
    t_a = np.linspace(0, 10, 40)
    y_a = 3.0 * np.exp(-t_a / 1.5) + 0.5 + rng.normal(0, 0.03, t_a.size)
    t_b = np.linspace(0, 20, 30)
    dy = 0.02 + 0.03 * rng.random(t_b.size)
    y_b = 3.0 * np.exp(-t_b / 6.0) + 0.5 + rng.normal(0, 1, t_b.size) * dy
    t_c = np.linspace(0.5, 30, 25)
    y_c = 3.0 * t_c / (t_c + 6.0) + rng.normal(0, 0.05, t_c.size)
    y_c[4] = np.nan  # a missing target value: left out
    for name, columns in (("a.csv", {"t": t_a, "y": y_a}), ("b.csv", {"t": t_b, "y": y_b, "dy": dy}),
                          ("c.csv", {"t": t_c, "y": y_c})):
        text = ",".join(columns) + "\n" + "".join(",".join(repr(float(v)) for v in row) + "\n"
                                                  for row in zip(*columns.values()))
        (folder / name).write_text(text)
    return {"a": (t_a, y_a, None), "b": (t_b, y_b, dy), "c": (t_c, y_c, None)}


def config(**extra) -> dict:
    base = {
        "datasets": [
            {"data": {"file": "a.csv"}, "target": {"column": "y"}, "model": {"expr": EXPR_A}},
            {"data": {"file": "b.csv"}, "target": {"column": "y"}, "model": {"expr": EXPR_B}, "sigma": {"column": "dy"}},
            {"data": {"file": "c.csv"}, "target": {"column": "y"}, "model": {"expr": EXPR_C}},
        ],
        "params": {"amp": 1, "tau1": 1, "tau2": 5, "c": {"value": 0, "min": -1, "max": 2}},
        "device": "cpu", "ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15,
    }
    base.update(extra)
    return base


def fit(folder: Path, data: dict):
    descent = Descent(prepare(build_config(data, source=str(folder / "g.yaml"), base_dir=folder)),
                      report=every_n(0), advice=False)
    list(descent.steps())
    return descent.result, descent


def oracle(sets: dict):
    """least_squares on the stacked residuals (y - f) / sigma, with a hand-written Jacobian, at
    tight tolerances; the stderr from the stacked Jacobian's covariance, s^2 (J^T J)^-1."""
    t_a, y_a, _ = sets["a"]
    t_b, y_b, dy = sets["b"]
    t_c, y_c, _ = sets["c"]
    keep = ~np.isnan(y_c)
    t_c, y_c = t_c[keep], y_c[keep]

    def residuals(p):
        amp, tau1, tau2, c = p
        return np.concatenate([amp * np.exp(-t_a / tau1) + c - y_a, (amp * np.exp(-t_b / tau2) + c - y_b) / dy,
                               amp * t_c / (t_c + tau2) - y_c])

    def jacobian(p):
        amp, tau1, tau2, c = p
        ea, eb = np.exp(-t_a / tau1), np.exp(-t_b / tau2)
        za, zb, zc = np.zeros_like(t_a), np.zeros_like(t_b), np.zeros_like(t_c)
        block_a = np.c_[ea, amp * ea * t_a / tau1**2, za, za + 1]
        block_b = np.c_[eb, zb, amp * eb * t_b / tau2**2, zb + 1] / dy[:, None]
        block_c = np.c_[t_c / (t_c + tau2), zc, -amp * t_c / (t_c + tau2) ** 2, zc]
        return np.vstack([block_a, block_b, block_c])

    result = scipy_optimize.least_squares(residuals, [1, 1, 5, 0], jac=jacobian, bounds=([-np.inf] * 3 + [-1],
                                          [np.inf] * 3 + [2]), method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15)
    J = jacobian(result.x)
    r = residuals(result.x)
    dof = r.size - 4
    cov = np.linalg.inv(J.T @ J) * (r @ r) / dof
    return result.x, np.sqrt(np.diag(cov)), r, (t_a.size, t_b.size, t_c.size)


def test_a_global_fit_is_least_squares_on_the_stacked_weighted_residuals(tmp_path):
    sets = write_datasets(tmp_path)
    result, _ = fit(tmp_path, config())
    values, stderr, r, sizes = oracle(sets)
    assert result.status == "converged"
    for i, name in enumerate(NAMES):
        assert result.params[name]["value"] == pytest.approx(values[i], rel=1e-6)
        assert result.params[name]["stderr"] == pytest.approx(stderr[i], rel=1e-6)
    fit_stats = result.fit
    assert fit_stats["n"] == sum(sizes) and fit_stats["p"] == 4 and fit_stats["missing"] == 1
    assert fit_stats["chi2"] == pytest.approx(r @ r, rel=1e-9)
    # per dataset: n, chi2 (weighted) and rss (unweighted), at the oracle's solution
    parts = np.split(r, np.cumsum(sizes)[:-1])
    dy = sets["b"][2]
    unweighted = [parts[0], parts[1] * dy, parts[2]]
    for entry, weighted, plain, n, file in zip(fit_stats["datasets"], parts, unweighted, sizes, "abc"):
        assert entry["data"] == f"{file}.csv" and entry["n"] == n
        assert entry["chi2"] == pytest.approx(weighted @ weighted, rel=1e-7)
        assert entry["rss"] == pytest.approx(plain @ plain, rel=1e-7)
    assert fit_stats["rss"] == pytest.approx(sum(e["rss"] for e in fit_stats["datasets"]), rel=1e-12)


def test_one_dataset_is_the_single_fit(tmp_path):
    """Equivalence: a global fit of one dataset is the plain curve fit of it."""
    write_datasets(tmp_path)
    one = config()
    one["datasets"] = one["datasets"][1:2]
    one["params"] = {"amp": 1, "tau2": 5, "c": 0}
    single = {"data": {"file": "b.csv"}, "target": {"column": "y"}, "sigma": {"column": "dy"}, "optimizer": "lm",
              "dtype": "float64", "model": {"expr": EXPR_B, "params": one["params"]},
              **{k: one[k] for k in ("device", "ftol", "xtol", "gtol")}}
    glob, _ = fit(tmp_path, one)
    plain, _ = fit(tmp_path, single)
    assert glob.params == plain.params and glob.covariance == plain.covariance
    assert glob.fit["datasets"][0]["chi2"] == plain.fit["chi2"]


def test_defaults_are_lm_in_float64(tmp_path):
    write_datasets(tmp_path)
    resolved = build_config(config(), source="g.yaml", base_dir=tmp_path)
    assert resolved.config.optimizer.name == "lm" and resolved.config.dtype == "float64"
    assert resolved.config.target is None and resolved.config.threshold == 0


@pytest.mark.parametrize("extra,optimizer,dtype", [
    ({"dtype": "float64"}, "lm", "float64"),
    ({"dtype": "float32"}, "lm", "float32"),
    ({"optimizer": "lm"}, "lm", "float64"),
    ({"optimizer": {"name": "adam"}}, "adam", "float32"),
])
def test_defaults_follow_the_single_fit_rules(tmp_path, extra, optimizer, dtype):
    write_datasets(tmp_path)
    chosen = build_config(config(**extra), source="g.yaml", base_dir=tmp_path).config
    single = build_config({"target": [1.0, 2.0], "model": {"expr": "a * x", "params": {"a": 1}}, **extra},
                          source="s.yaml", base_dir=tmp_path).config
    assert (chosen.optimizer.name, chosen.dtype) == (single.optimizer.name, single.dtype) == (optimizer, dtype)


def test_a_global_fit_that_sets_only_dtype_runs_lm_and_equals_least_squares(cli, tmp_path):
    sets = write_datasets(tmp_path)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config(dtype="float64")))
    result = cli("run", str(tmp_path / "g.yaml"), "--json", "--every", "0")
    start, end = result.lines[0], result.lines[-1]
    assert result.exit_status == 0, result.stderr
    assert start["config"]["optimizer"]["name"] == "lm" and end["status"] == "converged"
    values, _, _, _ = oracle(sets)
    np.testing.assert_allclose([end["params"][n]["value"] for n in NAMES], values, rtol=1e-6)


def test_a_derived_parameter_is_shared_as_least_squares_with_it_substituted_says(cli, tmp_path):
    sets = write_datasets(tmp_path)
    data = config()
    data["datasets"] = data["datasets"][:2]
    data["params"] = {"amp": 1, "tau1": 1, "tau2": {"expr": "3.8 * tau1"}, "c": {"value": 0, "min": -1, "max": 2},
                      "half": {"expr": "tau1 * log(2)"}}  # one used by dataset b, one only reported
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(data))
    result = cli("run", str(tmp_path / "g.yaml"), "--json", "--every", "0")
    assert result.exit_status == 0, result.stderr
    end = result.lines[-1]
    (t_a, y_a, _), (t_b, y_b, dy) = sets["a"], sets["b"]

    def residuals(p):
        amp, tau1, c = p
        return np.concatenate([amp * np.exp(-t_a / tau1) + c - y_a, (amp * np.exp(-t_b / (3.8 * tau1)) + c - y_b) / dy])

    found = scipy_optimize.least_squares(residuals, [1, 1, 0], method="trf", x_scale="jac",
                                         ftol=1e-15, xtol=1e-15, gtol=1e-15)
    J = found.jac
    cov = np.linalg.inv(J.T @ J) * (found.fun @ found.fun) / (found.fun.size - 3)
    for i, name in enumerate(("amp", "tau1", "c")):
        assert end["params"][name]["value"] == pytest.approx(found.x[i], rel=1e-6)
    tau1_stderr = math.sqrt(cov[1, 1])
    assert end["params"]["tau2"] == {"value": pytest.approx(3.8 * found.x[1], rel=1e-6),
                                     "stderr": pytest.approx(3.8 * tau1_stderr, rel=1e-4), "derived": True}
    assert end["params"]["half"]["value"] == pytest.approx(math.log(2) * found.x[1], rel=1e-6)
    assert end["fit"]["p"] == 3


def test_the_cli_runs_a_global_fit_with_set_on_a_dataset(cli, tmp_path):
    """`--set datasets.2.model.expr=...` replaces one dataset's expression (the fit then follows it:
    amp and tau2 from dataset c alone would differ)."""
    sets = write_datasets(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config()))
    out = tmp_path / "result.json"
    result = cli("run", str(path), "--json", "--every", "0", "--output", str(out))
    assert result.exit_status == 0
    end = result.lines[-1]
    values, _, _, _ = oracle(sets)
    assert [end["params"][n]["value"] for n in NAMES] == pytest.approx(values, rel=1e-6)
    document = json.loads(out.read_text())
    assert document["fit"]["datasets"] == end["fit"]["datasets"]
    changed = cli("run", str(path), "--json", "--every", "0", "--set", "datasets.2.model.expr=amp * t / (t + tau1)")
    assert changed.exit_status == 0
    start = changed.lines[0]
    assert start["config"]["datasets"][2]["model"]["expr"] == "amp * t / (t + tau1)"
    assert changed.lines[-1]["params"]["tau1"]["value"] != pytest.approx(end["params"]["tau1"]["value"], rel=1e-3)


def test_set_reaches_list_entries_without_changing_the_document():
    document = {"datasets": [{"model": {"expr": "a"}}, {"model": {"expr": "b"}}]}
    data = dict(document)
    apply_override(data, ["datasets", "1", "model", "expr"], "c")
    assert data["datasets"][1]["model"]["expr"] == "c"
    assert document["datasets"][1]["model"]["expr"] == "b"  # the file's own mapping is untouched
    for key, words in ((["datasets", "2", "model"], "datasets has 2 entries"),
                       (["datasets", "5", "model", "expr"], "datasets has 2 entries")):
        with pytest.raises(ConfigError, match=words):
            apply_override(dict(document), key, "c")


@pytest.mark.parametrize("change, key, words", [
    ({"datasets": []}, "datasets", "the list is empty"),
    ({"data": {"file": "a.csv"}}, "datasets", "top-level data does not go with datasets"),
    ({"model": {"expr": "a * t", "params": {"a": 1}}}, "datasets", "top-level model does not go with datasets"),
    ({"target": {"column": "y"}}, "datasets", "top-level target does not go with datasets"),
    ({"params": None}, "params", "datasets need top-level params"),
    ({"loss": {"name": "soft_l1", "f_scale": 1}}, "loss",
     "lm's robust loss soft_l1 is for fits of one dataset, not global fits (datasets:): use loss: mse"),
    ({"loss": "huber"}, "loss", "lm's robust loss huber is for fits of one dataset, not global fits (datasets:): "
                                "use loss: mse (huber also works with a first-order optimizer, as adam)"),
    ({"loss": "huber", "optimizer": "adam", "max_iters": 3}, None, None),
])
def test_config_errors_name_the_key(cli, tmp_path, change, key, words):
    write_datasets(tmp_path)
    data = config()
    data.update(change)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    result = cli("run", str(path), "--every", "0")
    if key is None:  # it runs: exit 1 says it stopped at max_iters
        assert result.exit_status == 1 and "max_iters" in result.stdout, result.stderr
        return
    assert result.exit_status == 2
    assert f"{path}" in result.stderr and f"{key}: {words}" in result.stderr


@pytest.mark.parametrize("edit, key, words", [
    ("datasets.1.target.column=z", "datasets.1.target.column", "no column 'z' in the data; it has t, y, dy"),
    ("datasets.0.sigma={column: dy}", "datasets.0.sigma.column", "no column 'dy' in the data; it has t, y"),
    ("datasets.2.model.expr=amp * x", "datasets.2.model.expr", "unknown name 'x'"),
    ("params.tau1={value: 1.5, vary: false}", None, None),  # fine: tau1 held, the others fitted
    ("params.d=1", "params.d", "parameter 'd' is not used by any dataset's expression"),
    ("params.t=1", "params.t", "parameter 't' has the name of a data column; rename the parameter"),
    ("datasets.2.data.file=nothere.csv", "datasets.2.data.file", ""),
])
def test_dataset_errors_name_the_dataset(cli, tmp_path, edit, key, words):
    write_datasets(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config()))
    result = cli("run", str(path), "--set", edit, "--every", "0", "--json")
    if key is None:
        assert result.exit_status == 0
        return
    assert result.exit_status == 2, result.stderr
    assert f": {key}: {words}" in result.stderr


def test_plot_draws_a_panel_per_dataset(cli, tmp_path):
    pytest.importorskip("matplotlib")
    from gdfit.pictures.plotting import curve_series

    write_datasets(tmp_path)
    result, descent = fit(tmp_path, config())
    model = descent.problem.model
    sets = write_datasets(tmp_path)
    for part, target, (t, y, dy) in zip(model.parts, model.split(descent.problem.target), sets.values()):
        series = curve_series(part, target, result.params)
        keep = ~np.isnan(y)
        assert series["x"] == pytest.approx(t[keep], rel=1e-15) and series["y"] == pytest.approx(y[keep], rel=1e-12)
        assert (series["sigma"] is None) == (dy is None)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config()))
    png = tmp_path / "fit.png"
    ran = cli("run", str(path), "--every", "0", "--json", "--plot", str(png))
    assert ran.exit_status == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_global_fits_intervals_are_lmfits_on_the_stacked_residuals(tmp_path):
    """lmfit's conf_interval on the stacked residuals of the same datasets (no bounds: lmfit's
    bound transform is its own problem)."""
    lmfit = pytest.importorskip("lmfit", reason="lmfit is the test-only oracle of intervals (extra `test`)")
    import warnings

    sets = write_datasets(tmp_path)
    t_a, y_a, _ = sets["a"]
    t_b, y_b, dy = sets["b"]
    t_c, y_c, _ = sets["c"]
    keep = ~np.isnan(y_c)

    def residual(p):
        amp, tau1, tau2, c = (p[n].value for n in NAMES)
        return np.concatenate([amp * np.exp(-t_a / tau1) + c - y_a, (amp * np.exp(-t_b / tau2) + c - y_b) / dy,
                               amp * t_c[keep] / (t_c[keep] + tau2) - y_c[keep]])

    params = lmfit.Parameters()
    for name, value in zip(NAMES, (1, 1, 5, 0)):
        params.add(name, value)
    minimizer = lmfit.Minimizer(residual, params, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    best = minimizer.leastsq()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = lmfit.conf_interval(minimizer, best, sigmas=[1, 2])
    data = config(confidence=[1, 2])
    data["params"]["c"] = 0
    result, _ = fit(tmp_path, data)
    for name in NAMES:
        ci = result.params[name]["ci"]
        ours = [ci["2"][0], ci["1"][0], result.params[name]["value"], ci["1"][1], ci["2"][1]]
        assert ours == pytest.approx([bound for _, bound in expected[name]], rel=5e-5)


def test_the_torch_form_weighs_each_dataset_by_its_own_sigma(tmp_path):
    """What every optimizer but lm reads: the model's prediction over the joined points, divided
    by sigma where a dataset has one (by 1 where it has none), against numpy's closed forms."""
    import torch

    sets = write_datasets(tmp_path)
    problem = prepare(build_config(config(), source="g.yaml", base_dir=tmp_path))
    theta = torch.tensor([[2.5, 1.3, 5.5, 0.4]], dtype=torch.float64)
    amp, tau1, tau2, c = theta[0].tolist()
    t_a, t_b, dy, t_c = sets["a"][0], sets["b"][0], sets["b"][2], sets["c"][0][~np.isnan(sets["c"][1])]
    expected = np.concatenate([amp * np.exp(-t_a / tau1) + c, (amp * np.exp(-t_b / tau2) + c) / dy,
                               amp * t_c / (t_c + tau2)])
    assert problem.model.predict({"theta": theta})[0].numpy() == pytest.approx(expected, rel=1e-14)
    assert problem.model.curve(theta)[0].numpy()[40:70] == pytest.approx(expected[40:70] * dy, rel=1e-14)

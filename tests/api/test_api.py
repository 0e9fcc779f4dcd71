"""The Python API (`gdfit.fit`, `steps`, `sweep`) against the CLI it must agree with, and the SPEC's example.

The CLI is the oracle for equality: the API's `to_dict()` must be the `--output` document and the
`--json` end event, field for field and digit for digit. Only `elapsed_s` and `updates_per_s` are
left out of those comparisons: they are wall-clock measurements that differ between any two runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

import gdfit
from gdfit.errors import ConfigError, GdfitError
from tests.conftest import ROOT, run_cli

TIMED = ("elapsed_s", "updates_per_s")  # wall-clock: different in every run


def untimed(document: dict) -> dict:
    return {k: v for k, v in document.items() if k not in TIMED}


def cli_run(tmp_path, config: str, *flags: str) -> tuple[dict, dict]:
    """`gdfit run CONFIG --json --output PATH`: the end event and the result document."""
    out = tmp_path / "result.json"
    result = run_cli("run", config, "--json", "--output", str(out), *flags)
    assert result.exit_status in (0, 1), result.stderr
    end = [e for e in result.lines if e["event"] == "end"][-1]
    return end, json.loads(out.read_text())


@pytest.mark.parametrize("config, max_iters", [
    ("configs/seed.yaml", None),     # the tutorial: x itself
    ("configs/decay.yaml", None),    # a weighted curve fit with lm: params, covariance, fit
    ("configs/linear.yaml", None),   # a matrix model: tensor parameters and the entries' split
    ("configs/completion.yaml", 300),  # a matrix model with missing and held-out entries
])
def test_fit_equals_the_cli_output_document_and_end_event(tmp_path, monkeypatch, config, max_iters):
    monkeypatch.chdir(ROOT)
    end, document = cli_run(tmp_path, config, *(["--max-iters", str(max_iters)] if max_iters else []))
    result = gdfit.fit(config, **({"max_iters": max_iters} if max_iters else {}))
    mine = result.to_dict()
    assert untimed(mine) == untimed(document)  # == on floats: every digit
    assert set(mine) == set(document)
    end.pop("event")
    assert untimed({k: v for k, v in mine.items() if k not in ("config", "history")}) == untimed(end)
    assert result.status == end["status"] and result.iters == end["iters"] and result.loss == end["loss"]


def test_fit_with_overrides_equals_the_cli_with_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    end, document = cli_run(tmp_path, "configs/seed.yaml", "--set", "optimizer=momentum",
                            "--set", "optimizer.momentum=0.5", "--max-iters", "7", "--seed", "3")
    result = gdfit.fit("configs/seed.yaml", set={"optimizer": "momentum", "optimizer.momentum": 0.5},
                       max_iters=7, seed=3)
    assert untimed(result.to_dict()) == untimed(document)
    assert result.status == end["status"] == "max_iters" and result.iters == 7
    text = gdfit.fit("configs/seed.yaml", set=["optimizer=momentum", "optimizer.momentum=0.5"], max_iters=7, seed=3)
    assert untimed(text.to_dict()) == untimed(document)


def test_config_as_mapping_and_as_yaml_text_equal_the_file(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "configs/seed.yaml").read_text()
    import yaml

    from_file = untimed(gdfit.fit("configs/seed.yaml").to_dict())
    assert untimed(gdfit.fit(text).to_dict()) == from_file
    assert untimed(gdfit.fit(yaml.safe_load(text)).to_dict()) == from_file
    mapping = yaml.safe_load(text)
    gdfit.fit(mapping, set={"optimizer.momentum": 0.5, "optimizer": "momentum"})
    assert mapping == yaml.safe_load(text)  # the caller's mapping is not changed


def test_sweep_equals_the_cli_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sweep.json"
    cli = run_cli("sweep", "configs/seed.yaml", "--grid", "learning_rate=0.5,1,4.5,9.5", "--grid", "seed=0..1",
                  "--json", "--output", str(out))
    assert cli.exit_status == 0, cli.stderr
    result = gdfit.sweep("configs/seed.yaml", grid={"learning_rate": [0.5, 1, 4.5, 9.5], "seed": "0..1"})
    mine = result.to_dict()
    document = json.loads(out.read_text())
    assert untimed(mine) == untimed(document)
    events = cli.lines
    start, runs, end = events[0], events[1:-1], events[-1]
    assert start["event"] == "start" and start["config"] == mine["config"] and start["grid"] == mine["grid"]
    assert start["runs"] == len(result.runs) == 8
    by_params = lambda run: json.dumps(run["params"], sort_keys=True)  # noqa: E731 (--json sorts by iters)
    assert sorted(({k: v for k, v in r.items() if k != "event"} for r in runs), key=by_params) \
        == sorted(mine["runs"], key=by_params)
    assert end["counts"] == mine["counts"] == result.counts and end["best"] == mine["best"]
    assert result.counts == {"converged": 6, "diverged": 2}  # 9.5 is past gd's stable limit of 9 on 9 elements
    assert result.best.params == {"learning_rate": 4.5, "seed": 0} and result.best.iters == 1


def test_the_spec_example_runs_as_written(monkeypatch):
    """SPEC.md, "Python API", line by line (configs/decay.yaml has the parameter `tau` and the data
    column `t` that the example names)."""
    monkeypatch.chdir(ROOT)
    config_dict = {"target": [[0.1, 0.2], [0.3, 0.4]], "learning_rate": 1.0}
    result = gdfit.fit("configs/decay.yaml", max_iters=500, set={"optimizer.damping": 1e-2})
    result.status, result.iters, result.loss         # as in the `end` event
    result.params["tau"].value, result.params["tau"].stderr
    result.covariance                                 # numpy array, in params order
    result.fit["reduced_chi2"]                        # the statistics
    result.predict(t=[0.5, 1.0])                      # the model at new data
    result.to_dict()                                  # the --output document, equal to the CLI's
    for step in gdfit.steps(config_dict): ...         # StepRecords as the run makes them

    # and what each line gives, against independent arithmetic
    assert result.status == "converged" and result.config["optimizer"]["damping"] == 1e-2
    assert result.config["max_iters"] == 500
    values = {name: p.value for name, p in result.params.items()}
    assert list(values) == ["a", "tau", "c"]
    t = np.array([0.5, 1.0])
    np.testing.assert_allclose(result.predict(t=t), values["a"] * np.exp(-t / values["tau"]) + values["c"],
                               rtol=1e-14)
    assert isinstance(result.covariance, np.ndarray) and result.covariance.shape == (3, 3)
    stderr = [p.stderr for p in result.params.values()]
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), stderr, rtol=1e-12)
    assert result.fit["reduced_chi2"] == result.fit["chi2"] / result.fit["dof"]
    assert len(result.history) == result.iters + 1 and result.history[-1] == result.loss
    assert "tau" in repr(result) and "converged" in repr(result)
    assert "fit report" in result.report() and "reduced chi-square" in result.report()


def test_steps_are_the_cli_json_steps(monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = run_cli("run", "configs/seed.yaml", "--json")
    expected = [e for e in cli.lines if e["event"] == "step"]
    mine = list(gdfit.steps("configs/seed.yaml"))
    assert [s.iter for s in mine] == [e["iter"] for e in expected] == list(range(1, 20))
    assert [s.loss for s in mine] == [e["loss"] for e in expected]
    assert [s.x.tolist() for s in mine] == [e["x"] for e in expected]
    every = list(gdfit.steps("configs/seed.yaml", every=5))
    assert [s.iter for s in every] == [5, 10, 15, 19]  # and always the last


def test_predict_for_each_model(monkeypatch):
    monkeypatch.chdir(ROOT)
    seed = gdfit.fit("configs/seed.yaml")
    np.testing.assert_array_equal(seed.predict(), seed.x)  # x itself: 9 elements, reported in full
    linear = gdfit.fit("configs/linear.yaml")
    inputs = np.loadtxt(ROOT / "configs/linear-inputs.csv", delimiter=",")
    W, b = (np.array(linear.params[name].value) for name in ("W", "b"))
    np.testing.assert_allclose(linear.predict(inputs=inputs[:5]), inputs[:5] @ W + b, rtol=1e-13)
    np.testing.assert_allclose(linear.predict(), inputs @ W + b, rtol=1e-12)
    decay = gdfit.fit("configs/decay.yaml")
    with pytest.raises(GdfitError, match="unknown column 'x'; the expression uses t"):
        decay.predict(x=[1.0])
    t = np.loadtxt(ROOT / "configs" / decay.config["data"]["file"], delimiter=",", skiprows=1,
                   usecols=0)  # the docstring: with no data, the prediction on the fitted data
    a, tau, c = (decay.params[n].value for n in ("a", "tau", "c"))
    np.testing.assert_allclose(decay.predict(), a * np.exp(-t / tau) + c, rtol=1e-13)
    with pytest.raises(GdfitError, match="dataset= is for global fits"):
        decay.predict(dataset=0)
    with pytest.raises(GdfitError, match="takes inputs"):
        linear.predict(t=[1.0])


def cli_error(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_status == 2
    return result.stderr.removeprefix("gdfit: error: ").rstrip("\n")


def test_a_bad_config_raises_the_cli_message_and_prints_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: [[1, 2], [3]]\nlearning_rate: -1\nlos: mse\n")
    expected = cli_error("run", str(bad))
    expected_sweep = cli_error("sweep", str(bad), "--grid", "seed=0,1")  # a sweep's runs name no lines
    capfd.readouterr()
    with pytest.raises(ConfigError) as caught:
        gdfit.fit(str(bad))
    assert str(caught.value) == expected
    assert "also:" in expected  # every problem, as the CLI lists them
    assert caught.value.exit_code == 2
    for call in (lambda: gdfit.fit(bad), lambda: list(gdfit.steps(str(bad)))):
        with pytest.raises(ConfigError) as again:
            call()
        assert str(again.value) == expected
    with pytest.raises(ConfigError) as swept:
        gdfit.sweep(str(bad), grid={"seed": [0, 1]})
    assert str(swept.value) == expected_sweep
    assert capfd.readouterr() == ("", "")


def test_override_errors_name_the_api_argument(monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    cli = cli_error("run", "configs/seed.yaml", "--set", "learning_rate=-1")
    capfd.readouterr()
    with pytest.raises(ConfigError) as caught:
        gdfit.fit("configs/seed.yaml", set={"learning_rate": -1})
    assert cli == "--set: learning_rate: must be a number > 0, got -1"
    assert str(caught.value) == "set=: learning_rate: must be a number > 0, got -1"
    with pytest.raises(ConfigError, match=r"^max_iters=: max_iters: "):
        gdfit.fit("configs/seed.yaml", max_iters=-1)
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        gdfit.fit("configs/seed.yaml", learning_rat=0.5)
    with pytest.raises(ConfigError, match="no such config file"):
        gdfit.fit("configs/no-such.yaml")
    with pytest.raises(ConfigError, match=r"^<config>:3:1: invalid YAML"):
        gdfit.fit("target: [1, 2]\nlearning_rate: [oops\n")
    with pytest.raises(ConfigError, match="expected a config file's path, YAML text or a mapping, got int"):
        gdfit.fit(3)
    assert capfd.readouterr() == ("", "")


def test_a_keyword_none_sets_null(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = gdfit.fit("configs/decay.yaml", ftol=None, max_iters=3)
    assert result.config["ftol"] is None and result.iters == 3  # ftol off: the run goes to its limit


def test_import_gdfit_is_light_and_every_public_name_resolves():
    code = ("import sys, gdfit\n"
            "heavy = [m for m in ('torch', 'numpy', 'rich', 'typer', 'pydantic') if m in sys.modules]\n"
            "names = [getattr(gdfit, n) for n in gdfit.__all__]\n"
            "print(heavy, len(names))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", str(len(gdfit.__all__))]
    assert {"fit", "steps", "sweep", "Result", "GdfitError", "ConfigError", "InputFileError"} <= set(gdfit.__all__)
    assert gdfit.ConfigError is ConfigError
    with pytest.raises(AttributeError):
        gdfit.no_such_name  # noqa: B018


def test_a_diverged_fit_is_a_result_not_an_exit(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = gdfit.fit("configs/seed.yaml", learning_rate=9.5)
    assert result.status == "diverged" and not result.converged
    assert any("stable limit" in w for w in result.warnings)
    document = result.to_dict()
    assert all(v is None or math.isfinite(v) for v in document["history"]["loss"])  # strict JSON: null


def test_fit_groups_equals_the_cli_group_events(tmp_path, monkeypatch):
    """`gdfit.fit_groups` gives the group events `gdfit run --json` streams for a grouped config,
    value for value, and the end event's counts; a config without a group column is refused."""
    monkeypatch.chdir(ROOT)
    cli = run_cli("run", "configs/dose-response.yaml", "--json")
    assert cli.exit_status == 1, cli.stderr  # the screen holds compounds that cannot be fitted
    events = {e["group"]: {k: v for k, v in e.items() if k != "event"} for e in cli.lines if e["event"] == "group"}
    end = cli.lines[-1]
    result = gdfit.fit_groups("configs/dose-response.yaml")
    first_seen = list(dict.fromkeys(line.split(",")[0] for line in
                                    (ROOT / "configs/plates.csv").read_text().splitlines()[1:]))
    assert [str(g["group"]) for g in result.groups] == first_seen  # the table's order (the CLI's: as they end)
    assert {g["group"]: {k: v for k, v in g.items() if k != "event"} for g in result.groups} == events
    assert result.by_status == end["by_status"] and sum(result.by_status.values()) == end["groups"] == 204
    with pytest.raises(ConfigError, match="data.group"):
        gdfit.fit_groups("configs/decay.yaml")


def test_a_bfloat16_fit_gives_its_tensor_as_float32_which_holds_it_exactly():
    import torch

    import gdfit

    result = gdfit.fit({"target": [[1.0, 2.0], [3.0, 4.5]], "dtype": "bfloat16", "learning_rate": 0.5})
    assert result.x.dtype == np.float32
    reference = torch.tensor(result.x).to(torch.bfloat16).float().numpy()
    assert result.x.tolist() == reference.tolist()  # every value a bfloat16 one


def test_predict_for_a_global_fit_gives_each_datasets_curve(tmp_path):
    from tests.curves.test_datasets import config, write_datasets

    sets = write_datasets(tmp_path)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config()))
    result = gdfit.fit(str(tmp_path / "g.yaml"))
    amp, tau1, tau2, c = (result.params[n].value for n in ("amp", "tau1", "tau2", "c"))
    curves = [lambda t: amp * np.exp(-t / tau1) + c, lambda t: amp * np.exp(-t / tau2) + c,
              lambda t: amp * t / (t + tau2)]  # the datasets' expressions, by numpy
    fitted = result.predict()
    assert isinstance(fitted, list) and len(fitted) == 3
    for got, curve, (t, y, _) in zip(fitted, curves, sets.values()):
        # unweighted, at the fitted points: a missing (NaN) target's row is left out (dataset c's 5th)
        np.testing.assert_allclose(got, curve(t[~np.isnan(y)]), rtol=1e-13)
    new = np.array([0.0, 0.5, 7.0])
    for i, (got, curve) in enumerate(zip(result.predict(t=new), curves)):
        np.testing.assert_allclose(got, curve(new), rtol=1e-13)
        np.testing.assert_allclose(result.predict(dataset=i, t=new), curve(new), rtol=1e-13)
    np.testing.assert_allclose(result.predict(dataset=2), fitted[2], rtol=0)
    with pytest.raises(GdfitError, match="dataset=3: the fit has datasets 0 to 2"):
        result.predict(dataset=3)
    with pytest.raises(GdfitError, match="dataset 0: unknown column 'x'; the expression uses t") as err:
        result.predict(x=new)
    assert "predict(dataset=I" in str(err.value)

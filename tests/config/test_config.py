"""The config package: unknown keys list what is allowed, names are defined once, torch stays out."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from gdfit.config import DTYPES, ENGINES, INIT_NAMES, KEYS, LOSSES, OPTIMIZERS, SCHEDULES, load_config
from gdfit.errors import ConfigError

SEED = "configs/seed.yaml"
TOP_KEYS = (
    "target, init, seed, loss, optimizer, learning_rate, schedule, threshold, max_iters, timeout_s, patience, "
    "min_rel_improvement, divergence_factor, device, dtype, engine, data, model, sigma, absolute_sigma, allow_underdetermined, ftol, xtol, gtol, mask, holdout, sweep, "
    "datasets, params, confidence"
)

# (--set items applied to configs/seed.yaml, the exact message after "gdfit: error: --set: ")
UNKNOWN_KEYS = [
    (["learnin_rate=1"],
     f"learnin_rate: unknown key 'learnin_rate'; did you mean 'learning_rate'? (allowed: {TOP_KEYS})"),
    (["optimizer.sd=1"],
     "optimizer.sd: unknown key 'sd' (allowed: name)"),
    (["optimizer=momentum", "optimizer.sd=1"],
     "optimizer.sd: unknown key 'sd' (allowed: name, momentum, dampening)"),
    (["optimizer=momentum", "optimizer.dampning=0"],
     "optimizer.dampning: unknown key 'dampning'; did you mean 'dampening'? (allowed: name, momentum, dampening)"),
    (["optimizer=nesterov", "optimizer.dampening=0"],
     "optimizer.dampening: unknown key 'dampening' (allowed: name, momentum)"),
    (["optimizer=adam", "optimizer.beta=1"],
     "optimizer.beta: unknown key 'beta'; did you mean 'betas'? (allowed: name, betas, eps)"),
    (["optimizer=rmsprop", "optimizer.alpah=1"],
     "optimizer.alpah: unknown key 'alpah'; did you mean 'alpha'? (allowed: name, alpha, eps)"),
    (["loss.delta=1"],
     "loss.delta: unknown key 'delta' (allowed: name)"),
    (["loss=l1", "loss.delta=1"],
     "loss.delta: unknown key 'delta' (allowed: name)"),
    (["loss=huber", "loss.delt=1"],
     "loss.delt: unknown key 'delt'; did you mean 'delta'? (allowed: name, delta, f_scale)"),
    (["loss=smooth_l1", "loss.delta=1"],
     "loss.delta: unknown key 'delta'; did you mean 'beta'? (allowed: name, beta)"),
    (["schedule=constant", "schedule.gamma=1"],
     "schedule.gamma: unknown key 'gamma' (allowed: name)"),
    (["schedule=step", "schedule.stepsize=1"],
     "schedule.stepsize: unknown key 'stepsize'; did you mean 'step_size'? (allowed: name, step_size, gamma)"),
    (["schedule=exponential", "schedule.gama=1"],
     "schedule.gama: unknown key 'gama'; did you mean 'gamma'? (allowed: name, gamma)"),
    (["schedule=cosine", "schedule.tmax=1"],
     "schedule.tmax: unknown key 'tmax'; did you mean 't_max'? (allowed: name, t_max, eta_min)"),
    (["init.foo=1"],
     "init.foo: unknown key 'foo' (allowed: name, mean, std, dtype)"),
    (["init=normal", "init.sd=1"],
     "init.sd: unknown key 'sd'; did you mean 'std'? (allowed: name, mean, std, dtype)"),
    (["init={name: zeros, dtyp: float64}"],
     "init.dtyp: unknown key 'dtyp'; did you mean 'dtype'? (allowed: name, mean, std, dtype)"),
    (["init={file: a.npy, dtyp: float64}"],
     "init.dtyp: unknown key 'dtyp'; did you mean 'dtype'? (allowed: file, dtype)"),
    (["init={random: {shape: [3, 3]}, dtyp: float64}"],
     "init.dtyp: unknown key 'dtyp'; did you mean 'dtype'? (allowed: random, dtype)"),
    (["init={random: {shape: [3, 3], sed: 1}}"],
     "init.random.sed: unknown key 'sed'; did you mean 'seed'? (allowed: shape, seed, low, high)"),
    (["target={file: a.npy, dtyp: float64}"],
     "target.dtyp: unknown key 'dtyp'; did you mean 'dtype'? (allowed: file, dtype)"),
    (["target.file=a.npy", "target.x=1"],
     "target.x: unknown key 'x' (allowed: file, dtype)"),
    (["target={random: {shape: [3]}, dtyp: float64}"],
     "target.dtyp: unknown key 'dtyp'; did you mean 'dtype'? (allowed: random, dtype)"),
    (["target={random: {shape: [3], sed: 1}}"],
     "target.random.sed: unknown key 'sed'; did you mean 'seed'? (allowed: shape, seed, low, high)"),
    (["target.random.shape=[3]", "target.random.hi=2"],
     "target.random.hi: unknown key 'hi'; did you mean 'high'? (allowed: shape, seed, low, high)"),
]


@pytest.mark.parametrize("items,message", UNKNOWN_KEYS, ids=[" ".join(items) for items, _ in UNKNOWN_KEYS])
def test_unknown_keys_list_what_the_model_allows(cli, monkeypatch, items, message):
    monkeypatch.chdir(ROOT)
    result = cli("config", SEED, *[arg for item in items for arg in ("--set", item)])
    assert result.exit_status == 2
    assert result.stderr.splitlines()[0] == f"gdfit: error: --set: {message}"


def test_unknown_keys_in_a_file_point_at_their_line(cli, write_config):
    path = write_config("target: [[1, 2], [3, 4]]\ninit:\n  name: normal\n  sd: 0.1\n")
    result = cli("run", path)
    assert result.exit_status == 2
    assert result.stderr == (
        f"gdfit: error: {path}:4:7: init.sd: unknown key 'sd'; did you mean 'std'? (allowed: name, mean, std, dtype)\n"
    )


def test_a_misspelt_key_is_reported_before_the_missing_one_it_explains(cli, write_config):
    path = write_config("target: {random: {shap: [3]}}\n")
    result = cli("run", path)
    assert result.exit_status == 2
    assert result.stderr.splitlines() == [
        f"gdfit: error: {path}:1:25: target.random.shap: unknown key 'shap'; did you mean 'shape'? "
        "(allowed: shape, seed, low, high)",
    ]  # the missing `shape` it explains is not listed again


@pytest.mark.parametrize(
    "key,names",
    [("optimizer", OPTIMIZERS), ("loss", LOSSES), ("schedule", SCHEDULES), ("init", INIT_NAMES)],
)
def test_every_named_option_lists_its_keys(cli, monkeypatch, key, names):
    monkeypatch.chdir(ROOT)
    for name in names:
        result = cli("config", SEED, "--set", f"{key}={name}", "--set", f"{key}.bogus=1")
        assert result.exit_status == 2
        assert f"{key}.bogus: unknown key 'bogus' (allowed: name" in result.stderr, (name, result.stderr)


# ------------------------------------------------------------------ nesterov


def test_torch_refuses_nesterov_without_momentum():
    """Why the config refuses it: torch.optim.SGD would fail after the run has started."""
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.0, nesterov=True)


@pytest.mark.parametrize(
    "how",
    [
        ["--set", "optimizer={name: nesterov, momentum: 0}"],
        ["--set", "optimizer=nesterov", "--set", "optimizer.momentum=0"],
    ],
)
def test_nesterov_with_momentum_0_is_a_config_error(cli, monkeypatch, how):
    monkeypatch.chdir(ROOT)
    result = cli("run", SEED, *how)
    assert result.exit_status == 2
    assert result.stderr == (
        "gdfit: error: --set: optimizer.momentum: must be in (0, 1) for nesterov, got 0; "
        "for plain descent use optimizer: gd\n"
    )


def test_nesterov_momentum_in_a_file_is_located(cli, write_config):
    path = write_config("target: [1, 2]\noptimizer: {name: nesterov, momentum: 0.0}\n")
    result = cli("run", path)
    assert result.exit_status == 2
    assert result.stderr == (
        f"gdfit: error: {path}:2:39: optimizer.momentum: must be in (0, 1) for nesterov, got 0; "
        "for plain descent use optimizer: gd\n"
    )


@pytest.mark.parametrize("momentum", [1e-3, 0.5, 0.99])
def test_nesterov_with_momentum_in_0_1_is_accepted(write_config, momentum):
    config = load_config(write_config(f"target: [1, 2]\noptimizer: {{name: nesterov, momentum: {momentum}}}\n")).config
    assert config.optimizer.momentum == momentum


def test_momentum_0_is_still_allowed_for_heavy_ball(write_config):
    config = load_config(write_config("target: [1, 2]\noptimizer: {name: momentum, momentum: 0}\n")).config
    assert config.optimizer.momentum == 0


def test_nesterov_momentum_1_says_the_range(write_config):
    with pytest.raises(ConfigError, match=r"optimizer.momentum: must be in \(0, 1\) for nesterov, got 1;"):
        load_config(write_config("target: [1, 2]\noptimizer: {name: nesterov, momentum: 1}\n"))


# ------------------------------------------------------------------ names, defined once


def test_names_are_the_readme_lists():
    assert OPTIMIZERS == ("gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs", "lm", "als")
    assert LOSSES == ("mse", "l1", "huber", "smooth_l1", "soft_l1", "cauchy", "arctan")
    assert SCHEDULES == ("constant", "step", "exponential", "cosine")
    assert INIT_NAMES == ("random", "zeros", "ones", "normal")
    assert DTYPES == ("float32", "float64", "float16", "bfloat16")
    assert ENGINES == ("auto", "autograd", "fused")


def test_devices_maps_each_config_dtype_to_torch():
    from gdfit.files.devices import torch_dtype

    assert [torch_dtype(name) for name in DTYPES] == [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    with pytest.raises(KeyError):
        torch_dtype("int8")  # only the config's names


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_name_is_accepted(write_config, dtype):
    assert load_config(write_config(f"target: [1, 2]\ndtype: {dtype}\n")).config.dtype == dtype


def test_schema_describes_every_option_and_setting():
    from gdfit.config.model import LOSS_MODELS, OPTIMIZER_MODELS, SCHEDULE_MODELS, names_of
    from gdfit.config.schema import VALUES

    assert tuple(VALUES) == KEYS
    for key, models in (("optimizer", OPTIMIZER_MODELS), ("loss", LOSS_MODELS), ("schedule", SCHEDULE_MODELS)):
        for model, name in zip(models, names_of(models)):
            for word in (name, *model.model_fields):
                assert word in VALUES[key], (key, name, word)


# ------------------------------------------------------------------ imports


@pytest.mark.slow
def test_importing_the_config_does_not_import_torch():
    code = "import sys, gdfit.config, gdfit.config.schema; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_minus_zero_and_impossible_improvements(cli):
    from conftest import ROOT

    seed = str(ROOT / "configs" / "seed.yaml")
    zero = cli("config", seed, "--set", "threshold=-0.0", "--json")
    assert zero.exit_status == 0 and '"threshold":0.0' in zero.stdout
    for value in ("1", "1.5", "-0.1"):
        bad = cli("config", seed, "--set", f"min_rel_improvement={value}")
        assert bad.exit_status == 2 and "min_rel_improvement: must be in [0, 1)" in bad.stderr


def test_every_problem_is_listed_most_useful_first_then_in_file_order(cli, write_config):
    path = write_config("targte: [[1, 2]]\nlearning_rate: -1\nloss: mae\noptimizer: {name: adam, bogus: 1}\n")
    result = cli("run", path, "--set", "threshold=-1")
    assert result.exit_status == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"gdfit: error: {path}:3:7: loss: unknown loss 'mae'")  # the config's first key at fault
    assert [line.split(": ")[0:2] for line in lines[1:]] == [
        ["  also", f"{path}:1:9"], ["  also", f"{path}:2:16"], ["  also", f"{path}:4:32"], ["  also", "--set"]]
    assert "targte: unknown key 'targte'; did you mean 'target'?" in lines[1]
    assert "target: is required" not in result.stderr  # explained by the misspelling
    assert "more problem" not in result.stderr


def test_every_problem_is_in_the_json_error_event(cli, write_config):
    path = write_config("target: [[1, 2]]\nlearning_rate: -1\nmax_iters: 1.5\n")
    event = cli("run", path, "--json").lines[-1]
    assert event["event"] == "error" and event["message"].startswith(f"{path}:2:16: learning_rate")
    assert len(event["also"]) == 1 and event["also"][0].startswith(f"{path}:3:12: max_iters")


def test_a_missing_key_with_no_misspelling_beside_it_is_listed(cli, write_config):
    path = write_config("learning_rate: -1\n")
    result = cli("run", path)
    assert result.stderr.splitlines()[1] == f"  also: {path}:1:1: target: is required"


def test_the_json_error_event_carries_the_hint_stderr_gives(cli):
    result = cli("run", "configs/dose-response.yaml", "--plot", "x.png", "--json")
    (event,) = result.lines
    assert result.exit_status == 2 and event["event"] == "error"
    assert f"  hint: {event['hint']}" in result.stderr.splitlines()
    assert event["hint"] == "write the results with --output results.csv and draw them with gdfit plot"


def test_an_error_without_a_hint_has_no_hint_field(cli, write_config):
    event = cli("run", write_config("target: [[1, 2]]\nlearning_rate: -1\n"), "--json").lines[-1]
    assert event["event"] == "error" and "hint" not in event


def test_an_error_found_in_the_data_names_the_keys_line_and_column(cli, write_config, tmp_path):
    """A problem only the data show (a sigma of 0, a target column the file lacks) still points
    at the key in the config, as validation's errors do; a key --set gave has no line in the file."""
    import gdfit

    (tmp_path / "d.csv").write_text("x,y,s\n1,2,1\n2,4.1,0\n3,6,1\n4,7.9,1\n")
    path = write_config("data: {file: d.csv}\ntarget: {column: y}\nsigma: {column: s}\n"
                        "model: {expr: 'a*x+b', params: {a: 1, b: 0}}\n")
    result = cli("run", path, "--json")
    assert result.exit_status == 2
    assert result.lines[-1]["message"].startswith(f"{path}:3:8: sigma: column 's' must hold positive")
    with pytest.raises(gdfit.GdfitError, match=rf"^{re.escape(path)}:3:8: sigma: "):
        gdfit.fit(path)
    wrong = cli("run", path.replace("config.yaml", "config.yaml"), "--set", "target.column=z")
    assert f"{path}: target" in wrong.stderr and f"{path}:2" not in wrong.stderr  # --set's key: no line
    missing = write_config("data: {file: d.csv}\ntarget: {column: z}\nmodel: {expr: 'a*x', params: {a: 1}}\n",
                           name="missing.yaml")
    assert f"{missing}:2:" in cli("run", missing).stderr

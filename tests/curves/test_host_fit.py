"""A curve fit by lm on the CPU computes in numpy and never imports torch; its numbers are the
torch path's, bit for bit (descent.computes_on_host, prepare(on_host=True))."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from helpers import run_without_torch
from gdfit.config import load_config
from gdfit.engine.descent import Descent, computes_on_host, every_n, prepare
from gdfit.files.saving import save_parameters
from gdfit.render.jsonl import dumps, end_fields, start_event, step_event

@pytest.mark.slow
def test_a_curve_fit_by_lm_and_its_outputs_do_not_import_torch(tmp_path):
    pytest.importorskip("matplotlib")  # --plot's extra
    out, saved, plot = tmp_path / "fit.json", tmp_path / "fit.npz", tmp_path / "fit.png"
    proc = run_without_torch("run", "configs/decay.yaml", "--json", "--every", "1", "--output", str(out),
                             "--save", str(saved), "--plot", str(plot))
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert json.loads(out.read_text())["status"] == "converged"
    with np.load(saved) as arrays:
        assert set(arrays.files) == {"a", "tau", "c", "prediction"}
    assert plot.stat().st_size > 0
    # the table and its fit report, too
    table = run_without_torch("run", "configs/decay.yaml")
    assert table.stderr.strip().splitlines()[-1] == "False"
    assert "fit report" in table.stdout


@pytest.mark.slow
def test_a_run_that_needs_torch_imports_it(tmp_path):
    import torch

    proc = run_without_torch("run", "configs/decay.yaml", "--json", "--every", "0", "--save", str(tmp_path / "fit.pt"))
    assert proc.stderr.strip().splitlines()[-1] == "True"
    saved = torch.load(tmp_path / "fit.pt", weights_only=True)
    assert set(saved) == {"a", "tau", "c", "prediction"} and saved["a"].dtype == torch.float64
    proc = run_without_torch("run", "configs/decay.yaml", "--json", "--every", "0", "--set", "optimizer=adam",
                             "--max-iters", "3", code=1)  # max_iters' exit status
    assert proc.stderr.strip().splitlines()[-1] == "True"


def decay_config(tmp_path, **changes) -> str:
    config = yaml.safe_load((ROOT / "configs" / "decay.yaml").read_text())
    config["data"]["file"] = str(ROOT / "configs" / "decay.csv")
    config.update(changes)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def events(path: str, on_host: bool, tmp_path) -> tuple[list[str], dict]:
    """Every event of a run as JSON text (its timing left out), and its saved arrays."""
    resolved = load_config(path)
    descent = Descent(prepare(resolved, on_host=on_host), report=every_n(1))
    lines = [dumps(start_event(descent.start))] + [dumps(step_event(r)) for r in descent.steps()]
    end = end_fields(descent.result)
    del end["elapsed_s"], end["updates_per_s"]
    saved = tmp_path / f"{on_host}.npz"
    save_parameters(saved, descent.problem.model, descent.final_params)
    with np.load(saved) as arrays:
        return lines + [dumps(end)], {name: arrays[name] for name in arrays.files}


def assert_same_run(path: str, tmp_path) -> None:
    host, host_saved = events(path, True, tmp_path)
    torch_path, torch_saved = events(path, False, tmp_path)
    assert host == torch_path  # every step, the report, the statistics: the same bytes
    assert host_saved.keys() == torch_saved.keys()
    for name in host_saved:
        assert host_saved[name].dtype == torch_saved[name].dtype
        assert host_saved[name].tobytes() == torch_saved[name].tobytes(), name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_host_path_is_the_torch_path_bit_for_bit(tmp_path, dtype):
    assert_same_run(decay_config(tmp_path, dtype=dtype), tmp_path)
    # tolerances below float32's resolution: they act at its eps, on both paths alike
    assert_same_run(decay_config(tmp_path, dtype=dtype, ftol=1e-15, xtol=1e-15, gtol=0), tmp_path)


def test_the_host_path_holds_bounds_and_fixed_parameters_as_the_torch_path(tmp_path):
    # tau pressed against its bound from the start, c fixed: the active set and store paths
    model = {"expr": "a * exp(-t / tau) + c",
             "params": {"a": 1, "tau": {"value": 0.5, "min": 0.4, "max": 2.0}, "c": {"value": 0.5, "vary": False}}}
    assert_same_run(decay_config(tmp_path, model=model), tmp_path)


@settings(max_examples=8, deadline=None)
@given(a=st.floats(-10, 10), tau=st.floats(0.05, 20), c=st.floats(-5, 5))
def test_any_start_gives_the_same_fit_on_either_path(tmp_path_factory, a, tau, c):
    tmp_path = tmp_path_factory.mktemp("fit")
    model = {"expr": "a * exp(-t / tau) + c", "params": {"a": a, "tau": {"value": tau, "min": 0}, "c": c}}
    assert_same_run(decay_config(tmp_path, model=model), tmp_path)


@pytest.mark.parametrize("changes, host", [
    ({}, True),
    ({"device": "cpu"}, True),
    ({"dtype": "float32"}, True),
    ({"device": "cuda"}, False),  # a GPU is torch's
    ({"dtype": "bfloat16"}, False),  # numpy has no bfloat16
    ({"optimizer": "adam"}, False),  # the torch optimizers
    ({"target": [1.0] * 40}, False),  # a target that is not a data column is built by torch
])
def test_which_runs_compute_on_the_host(tmp_path, changes, host):
    assert computes_on_host(load_config(decay_config(tmp_path, **changes)).config) is host


def test_lazy_torch_loads_nothing_until_used():
    code = ("import sys; from gdfit.lazy import torch, loaded; import copy; copy.copy(torch)\n"
            "print(loaded()); torch.float64; print(loaded())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.split() == ["False", "True"], proc.stderr

"""Nothing silent: odd environments and repeated or useless flags are said, not ignored."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from conftest import ROOT, run_cli, run_process
from gdfit.cli.environment import MIN_COLUMNS, terminal_width_note
from gdfit.engine.descent import scale_note

SEED = str(ROOT / "configs" / "seed.yaml")


@pytest.mark.parametrize("value,kept", [("0", None), ("abc", None), ("-3", None), ("5", str(MIN_COLUMNS)),
                                        ("120", "120")])
def test_columns_that_would_print_nothing_are_replaced_and_said(value, kept):
    environ = {"COLUMNS": value}
    note = terminal_width_note(environ)
    assert environ.get("COLUMNS") == kept
    assert (note is None) == (value == "120")


def test_columns_zero_still_prints_the_report():
    result = run_process("run", "configs/seed.yaml", env={"COLUMNS": "0"})
    assert result.exit_status == 0 and "converged" in result.stdout
    assert "COLUMNS='0' is not a terminal width" in result.stderr


def test_a_grid_key_given_twice_is_refused():
    result = run_cli("sweep", SEED, "--grid", "learning_rate=1,2", "--grid", "learning_rate=3,4")
    assert result.exit_status == 2 and "learning_rate is given twice" in result.stderr


def test_checkpoint_every_without_checkpoint_is_refused():
    result = run_cli("run", SEED, "--checkpoint-every", "5")
    assert result.exit_status == 2 and "only with --checkpoint PATH" in result.stderr


def test_sweep_plot_without_a_numeric_key_is_refused_before_the_sweep(tmp_path):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "s"
    result = run_cli("sweep", SEED, "--grid", "optimizer=gd,adam", "--plot", str(tmp_path / "p.png"),
                     "--output", str(folder), "--json")
    assert result.exit_status == 2 and "numeric swept key" in result.stderr
    assert result.lines[-1]["event"] == "error" and not folder.exists()


@pytest.mark.parametrize("change,words", [
    ("loss=l1", "lm minimises squared residuals"),
    ("model.expr=a * zz", "unknown name 'zz'"),
    ("data.file=missing.csv", "no such file"),
])
def test_config_refuses_what_run_refuses(tmp_path, change, words):
    for name in ("decay.yaml", "decay.csv"):
        (tmp_path / name).write_text((ROOT / "configs" / name).read_text())
    config = str(tmp_path / "decay.yaml")
    ran, shown = run_cli("run", config, "--set", change), run_cli("config", config, "--set", change)
    assert ran.exit_status == shown.exit_status == 2
    assert words in ran.stderr and words in shown.stderr


def _scaled_decay(tmp_path, factor: float) -> str:
    rows = list(csv.reader((ROOT / "configs" / "decay.csv").open()))
    with (tmp_path / "d.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["t", "y"]] + [[t, repr(float(y) * factor)] for t, y, _ in rows[1:]])
    (tmp_path / "fit.yaml").write_text("data: {file: d.csv}\ntarget: {column: y}\noptimizer: lm\ndtype: float64\n"
                                       f"model: {{expr: 'a * exp(-t / tau) + c', params: {{a: {factor!r}, tau: 1, c: 0}}}}\n")
    return str(tmp_path / "fit.yaml")


@pytest.mark.parametrize("factor,words", [(1e-20, "below gtol 1e-10, so gtol (an absolute tolerance) may stop"),
                                          (1e-135, "near the limits of float64")])
def test_tiny_scale_data_are_flagged_not_reported_with_confidence(tmp_path, factor, words):
    result = run_cli("run", _scaled_decay(tmp_path, factor), "--json")
    assert result.exit_status in (0, 1), result.stderr
    assert words in result.stderr
    assert any(words in w for w in result.lines[0]["warnings"])


def test_data_of_ordinary_scale_are_not_flagged(tmp_path):
    assert scale_note(torch.tensor([5.5, 0.5, 1e-3], dtype=torch.float64), "float64", 1e-10) is None
    assert scale_note(torch.tensor([1e-4], dtype=torch.float64), "float64", 1e-10) is None  # 1e-8 > gtol
    assert scale_note(torch.tensor([1e-6], dtype=torch.float64), "float64", 1e-10) is not None
    assert scale_note(torch.tensor([1e-6], dtype=torch.float64), "float64", None) is None  # gtol off
    assert scale_note(torch.tensor([1e80], dtype=torch.float64), "float64", None) is not None
    assert scale_note(torch.tensor([math.nan, 0.0]), "float32", 1e-10) is None


def test_lm_on_data_whose_curvature_underflows_is_no_internal_error(tmp_path):
    result = run_cli("run", _scaled_decay(tmp_path, 1e-135), "--json")
    assert result.exit_status in (0, 1) and "internal error" not in result.stderr

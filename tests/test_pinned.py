"""Behaviour that mutation testing found unpinned, each now held by an independent oracle:
lowrank's l2 term and its denominator (autograd on the objective written out), lm's l2 residuals
(the fitted point is a stationary point of that objective), the held-out split, --save's formats,
and the stop rules' patience (a loss sequence worked by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, run_cli
from gdfit.engine.stopping import HostStopRules, StopRules
from tests.helpers import fit, resolved

SEED = str(ROOT / "configs" / "seed.yaml")


def _target(m=6, n=5, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(m, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, n, generator=gen, dtype=torch.float64)
            + 0.1 * torch.randn(m, n, generator=gen, dtype=torch.float64))


def _objective(U, V, target, fitted, l2):
    """mse over the fitted entries + l2 x (|U|^2 + |V|^2) / (number of fitted entries), written out."""
    count = int(fitted.sum())
    return F.mse_loss((U @ V.T)[fitted], target[fitted]) + l2 * (U.square().sum() + V.square().sum()) / count


def _run(optimizer="gd", l2=0.5, holdout=0.3, max_iters=1, lr=0.05):
    data = dict(target=_target().tolist(), model={"name": "lowrank", "rank": 2, "l2": l2}, dtype="float64",
                optimizer=optimizer, learning_rate=lr, max_iters=max_iters, ftol=None, xtol=None, gtol=None)
    if holdout:
        data["holdout"] = {"fraction": holdout, "seed": 3}
    return fit(every=0, **data)


def test_the_l2_term_and_the_mse_are_over_the_fitted_entries_only():
    _, result, descent = _run()
    model = descent.problem.model
    fitted = model.entries.fitted
    assert int(fitted.sum()) == model.entries.fitted_count == 30 - round(0.3 * 30)  # held-out entries excluded
    start = model.parameters(descent.problem.x0)
    U, V = (start[n].clone().requires_grad_(True) for n in ("U", "V"))
    loss = _objective(U, V, _target(), fitted, 0.5)
    assert result.history[0] == pytest.approx(float(loss.detach()), rel=1e-12)
    loss.backward()
    with torch.no_grad():  # one gd update on the written-out objective
        after = _objective(U - 0.05 * U.grad, V - 0.05 * V.grad, _target(), fitted, 0.5)
    assert result.history[1] == pytest.approx(float(after), rel=1e-12)


def test_lm_with_l2_stops_at_a_stationary_point_of_the_same_objective():
    _, result, descent = _run(optimizer="lm", holdout=None, max_iters=300, lr=1.0)
    params = descent.final_params
    U, V = (params[n].clone().requires_grad_(True) for n in ("U", "V"))
    fitted = torch.ones(6, 5, dtype=torch.bool)
    _objective(U, V, _target(), fitted, 0.5).backward()
    gradient = max(float(U.grad.abs().max()), float(V.grad.abs().max()))
    assert gradient < 1e-8, gradient  # l2 instead of sqrt(l2) in the residuals minimises l2^2: gradient ~1e-2


def test_a_holdout_that_leaves_nothing_to_fit_is_refused(tmp_path):
    config = tmp_path / "h.yaml"
    config.write_text(f"target: {_target().tolist()}\nmodel: {{name: lowrank, rank: 2}}\n")
    # round(0.99 x 30) = 30 held out of 30: none left; round(0.97 x 30) = 29: one left, which runs
    refused = run_cli("run", str(config), "--holdout", "0.99")
    assert refused.exit_status == 2 and "leaves none to fit" in refused.stderr
    assert run_cli("run", str(config), "--holdout", "0.97", "--max-iters", "2", "--json").exit_status in (0, 1)


def test_save_npz_of_a_bfloat16_run_keeps_every_value(tmp_path):
    path = tmp_path / "x.npz"
    result = run_cli("run", SEED, "--set", "dtype=bfloat16", "--save", str(path), "--json", "--max-iters", "3")
    assert result.exit_status == 1, result.stderr
    with np.load(path) as saved:
        x = saved["x"]
    assert x.dtype == np.float32
    assert torch.equal(torch.from_numpy(x).bfloat16().float(), torch.from_numpy(x))  # every value a bfloat16
    assert x.tolist() == result.lines[-1]["x"]


@pytest.mark.parametrize("name", ["out.PT", "out.Pt", "out.pt"])
def test_save_with_a_pt_suffix_in_any_case_writes_a_torch_archive(tmp_path, name):
    path = tmp_path / name
    assert run_cli("run", SEED, "--save", str(path), "--json").exit_status == 0
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"x", "prediction"}
    with pytest.raises(Exception):
        np.load(path, allow_pickle=False)["x"]  # not an npz


@pytest.mark.parametrize("rules", [StopRules, HostStopRules])
def test_patience_stops_exactly_patience_updates_after_the_best(rules):
    config = resolved(target=[[1.0]], threshold=0.0, patience=3, min_rel_improvement=1e-6).config
    stop = rules(config, torch.tensor([1.0], dtype=torch.float64))
    # update 1 improves (best at 1); updates 2, 3 and 4 do not: the run stalls at update 4, not 3 or 5
    for k, loss in enumerate([0.5, 0.5, 0.5], start=1):
        stop.after_update(k, torch.tensor([loss], dtype=torch.float64))
        assert stop.running() == 1, f"stalled early, at update {k}"
    stop.after_update(4, torch.tensor([0.5], dtype=torch.float64))
    assert stop.running() == 0
    stop.settle()
    assert bool(stop.state()["stalled"][0]) and int(stop.state()["best_iter"][0]) == 1


@pytest.mark.parametrize("rules", [StopRules, HostStopRules])
def test_an_improvement_below_min_rel_improvement_does_not_reset_patience(rules):
    config = resolved(target=[[1.0]], threshold=0.0, patience=2, min_rel_improvement=0.1).config
    stop = rules(config, torch.tensor([1.0], dtype=torch.float64))
    stop.after_update(1, torch.tensor([0.95], dtype=torch.float64))  # 5% better: not enough
    assert stop.running() == 1
    stop.after_update(2, torch.tensor([0.91], dtype=torch.float64))
    assert stop.running() == 0 and math.isclose(float(stop.state()["best"][0]), 1.0)

"""The batched loop (device-side stop rules) against the plain per-update loop, and sweeps
against single runs of the same overrides."""

from __future__ import annotations

import math

import pytest
from conftest import SEED_TARGET
from helpers import fit, resolved
from test_optimizers import LOSSES, OPTIMIZERS, RATES

from gdfit.engine import Descent, every_n, prepare
from gdfit.sweep import expand, parse_grid, plan_and_execute


def _single(config: dict, sync_every: int = 1):
    problem = prepare(resolved(**config))
    descent = Descent(problem, report=every_n(3), sync_every=sync_every)
    steps = list(descent.steps())
    return steps, descent.result


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("sync_every", [1, 5, 64])
def test_device_side_stop_rules_equal_the_per_update_check(opt_name, loss_name, sync_every):
    config = dict(
        target={"random": {"shape": [3, 4], "seed": 2}}, optimizer=OPTIMIZERS[opt_name][0],
        loss=LOSSES[loss_name][0], learning_rate=RATES[opt_name][0], threshold=1e-3, max_iters=400,
        engine="fused",
    )
    steps, reference = _single(config)
    fast_steps, fast = _single(config, sync_every=sync_every + 1)  # > 1 selects the batched loop
    assert (fast.status, fast.iters) == (reference.status, reference.iters)
    assert fast.loss == pytest.approx(reference.loss, rel=1e-6)
    assert fast.history == pytest.approx(reference.history, rel=1e-6)
    assert [s.iter for s in fast_steps] == [s.iter for s in steps]
    assert [s.grad_norm for s in fast_steps] == pytest.approx([s.grad_norm for s in steps], rel=1e-5)


@pytest.mark.parametrize("rule", [{"patience": 5, "loss": "l1", "threshold": 0}, {"max_iters": 7},
                                  {"learning_rate": 30.0}])
def test_other_stop_rules_in_the_batched_loop(rule):
    config = dict(target=SEED_TARGET, engine="fused", **rule)
    _, reference = _single(config)
    _, fast = _single(config, sync_every=4)
    assert (fast.status, fast.iters) == (reference.status, reference.iters)


def _sweep(base: dict, grid_items: list[str]):
    base = {"device": "cpu", **base}
    grid = parse_grid(grid_items, None, "test")
    runs = list(expand(base, grid, "test", "."))
    results = list(plan_and_execute(runs, 100, lambda: False))[-1]
    return runs, results


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_sweep_equals_single_runs(opt_name, loss_name):
    spec = OPTIMIZERS[opt_name][0]
    lrs = RATES[opt_name]
    grid = [f"learning_rate={lrs[0]},{lrs[1]},{lrs[0] * 3}", "seed=0..1"]
    if opt_name in ("momentum", "nesterov"):
        grid.append("optimizer.momentum=0.5,0.8")
    if opt_name == "adam":
        grid.append("optimizer.betas=[0.9,0.999],[0.8,0.99]")
    base = dict(target={"random": {"shape": [2, 3], "seed": 4}}, optimizer=spec, loss=LOSSES[loss_name][0],
                threshold=1e-3, max_iters=500)
    runs, results = _sweep(base, grid)
    assert len(results) == len(runs) >= 6
    for run, result in zip(runs, results):
        _, single, _ = fit(every=0, **run.resolved.config.model_dump(exclude={"sweep"}))
        assert (result.status, result.iters) == (single.status, single.iters), run.params
        if math.isfinite(single.loss):
            assert result.loss == pytest.approx(single.loss, rel=1e-6), run.params


def test_sweep_over_init_and_seed():
    runs, results = _sweep({"target": SEED_TARGET}, ["init=random,zeros,ones", "seed=3..4"])
    assert [r.params for r in results] == [run.params for run in runs]
    zeros = [r for r in results if r.params["init"] == "zeros"]
    assert zeros[0].iters == zeros[1].iters  # the seed does not matter for zeros


def test_seed_problem_shows_the_stable_range():
    # mse on 9 elements: lr = 4.5 solves it in one update, lr > 9 diverges
    _, results = _sweep({"target": SEED_TARGET}, ["learning_rate=1,4.5,8.9,9.1,20"])
    by_lr = {r.params["learning_rate"]: r for r in results}
    assert by_lr[4.5].iters == 1 and by_lr[4.5].status == "converged"
    assert by_lr[8.9].status == "converged"
    assert by_lr[9.1].status == "diverged" and by_lr[20].status == "diverged"


def test_chunks_give_the_same_results(monkeypatch):
    import gdfit.tensors

    base = {"target": SEED_TARGET}
    _, whole = _sweep(base, ["learning_rate=0.5,1,2,4", "seed=0..2"])
    per_run = 9 * 4 * 5
    monkeypatch.setattr(gdfit.tensors, "available_bytes", lambda device: per_run * 2 * 3)  # 3 runs a batch
    grid = parse_grid(["learning_rate=0.5,1,2,4", "seed=0..2"], None, "test")
    runs = list(expand({"device": "cpu", **base}, grid, "test", "."))
    items = list(plan_and_execute(runs, 100, lambda: False))
    plan, chunked = items[0], items[-1]
    assert plan.chunk == 3 and plan.chunks == 4
    assert [(r.status, r.iters, r.loss) for r in chunked] == [(r.status, r.iters, r.loss) for r in whole]

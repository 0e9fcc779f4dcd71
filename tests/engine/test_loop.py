"""The one loop: K runs equal K single runs, the host may look at any interval, stop rules hold
exactly at their boundaries, and each status has its words."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import SEED_TARGET
from helpers import fit, resolved, run_to_end

from gdfit import records
from gdfit.engine.descent import Descent, every_n, make_stepper, prepare
from gdfit.engine.loop import Loop
from gdfit.sweeps.backends import execute
from gdfit.sweeps.grid import expand

BASE = {"target": SEED_TARGET, "device": "cpu", "max_iters": 300, "threshold": 1e-4}
OPTIMIZERS = {
    "gd": ({"name": "gd"}, 1.0, "mse"),
    "momentum": ({"name": "momentum", "momentum": 0.5, "dampening": 0.2}, 0.5, "huber"),
    "nesterov": ({"name": "nesterov", "momentum": 0.7}, 0.5, "mse"),
    "adam": ({"name": "adam"}, 0.05, "smooth_l1"),
    "rmsprop": ({"name": "rmsprop"}, 0.01, "l1"),
}
GRIDS = {
    "learning_rate": lambda lr: [lr * 0.5, lr, lr * 2, lr * 40],  # the last diverges or stalls
    "seed": lambda lr: [0, 1, 2],
    "init": lambda lr: ["random", "zeros", [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.95]]],
}
SETTINGS = [
    ("momentum", "optimizer.momentum", [0.0, 0.5, 0.9]),
    ("momentum", "optimizer.dampening", [0.0, 0.5]),
    ("nesterov", "optimizer.momentum", [0.3, 0.9]),
    ("adam", "optimizer.betas", [[0.9, 0.999], [0.8, 0.99]]),
    ("adam", "optimizer.eps", [1e-8, 1e-3]),
    ("rmsprop", "optimizer.alpha", [0.9, 0.99]),
]


def sweep_and_singles(data: dict, grid: dict) -> tuple[list, list]:
    runs = list(expand(data, grid, "test", Path(".")))
    outcome = list(execute(runs, 100, lambda: False))[-1]
    singles = []
    for run in runs:
        single = {**data}
        for key, value in run.params.items():
            if key.startswith("optimizer."):
                single["optimizer"] = {**single["optimizer"], key.split(".")[1]: value}
            else:
                single[key] = value
        singles.append(fit(every=0, **single)[1])
    return outcome, singles


def assert_same(swept, singles):
    for run, single in zip(swept, singles):
        assert (run.status, run.iters) == (single.status, single.iters), run.params
        assert repr(run.loss) == repr(single.loss), run.params  # exactly, NaN included
        assert torch.equal(run.x.nan_to_num(), single.x.nan_to_num()), run.params


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("grid_key", list(GRIDS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_a_sweep_equals_its_single_runs_exactly(opt_name, grid_key, dtype):
    spec, lr, loss = OPTIMIZERS[opt_name]
    data = {**BASE, "dtype": dtype, "optimizer": spec, "learning_rate": lr, "loss": loss}
    swept, singles = sweep_and_singles(data, {grid_key: GRIDS[grid_key](lr)})
    assert_same(swept, singles)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("opt_name,key,values", SETTINGS, ids=lambda v: str(v))
def test_sweeping_optimizer_settings_equals_single_runs(opt_name, key, values, dtype):
    spec, lr, loss = OPTIMIZERS[opt_name]
    data = {**BASE, "dtype": dtype, "optimizer": spec, "learning_rate": lr, "loss": loss}
    swept, singles = sweep_and_singles(data, {key: values, "learning_rate": [lr, lr / 3]})
    assert_same(swept, singles)


HETEROGENEOUS = {
    "optimizer": (["gd", "momentum", "adam", {"name": "rmsprop", "alpha": 0.9}], 4),
    "loss": (["mse", "l1", {"name": "huber", "delta": 0.2}, "smooth_l1"], 4),
    "target": ([SEED_TARGET, [[1.0, 2.0], [3.0, 4.0]], {"random": {"shape": [5], "seed": 1}}], 3),
    "dtype": (["float32", "float64", "float16", "bfloat16"], 4),
    "schedule": (["constant", "cosine", {"name": "step", "step_size": 3}], 3),
    "threshold": ([1e-3, 1e-5], 2),
    "max_iters": ([10, 200], 2),
    "engine": (["fused", "autograd"], 2),
    "patience": ([None, 5], 2),
}


@pytest.mark.parametrize("key", list(HETEROGENEOUS))
def test_a_heterogeneous_grid_equals_single_runs(key, cli):
    """Any key can be swept: runs that cannot share a batch go to batches of their own."""
    values, batches = HETEROGENEOUS[key]
    data = {**BASE, "optimizer": {"name": "gd"}, "learning_rate": 0.3, "loss": "mse"}
    swept, singles = sweep_and_singles(data, {key: values, "seed": [0, 1]})
    assert_same(swept, singles)
    runs = list(expand(data, {key: values, "seed": [0, 1]}, "test", Path(".")))
    plan = next(execute(runs, 100, lambda: False))
    assert plan.batches == batches and f"runs with different {key} run in separate batches" in plan.why


def test_a_sweep_with_a_schedule_and_patience_equals_single_runs():
    data = {**BASE, "optimizer": {"name": "gd"}, "loss": "l1", "schedule": {"name": "step", "step_size": 5, "gamma": 0.7},
            "patience": 15, "threshold": 0, "dtype": "float64"}
    swept, singles = sweep_and_singles(data, {"learning_rate": [0.05, 0.5, 2.0], "seed": [0, 3]})
    assert {r.status for r in swept} >= {"stalled"}
    assert_same(swept, singles)


CASES = {
    "gd-mse": dict(learning_rate=1.0),
    "gd-mse-diverges": dict(learning_rate=11.0, divergence_factor=1e4),
    "momentum-huber": dict(optimizer={"name": "momentum", "momentum": 0.8}, loss="huber", learning_rate=0.5),
    "adam-stall": dict(optimizer="adam", learning_rate=0.2, loss="l1", patience=7, threshold=0),
    "rmsprop-cosine": dict(optimizer="rmsprop", learning_rate=0.01, schedule="cosine", max_iters=150),
    "autograd": dict(engine="autograd", learning_rate=0.7),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("sync_every", [2, 6, 65])
def test_the_outcome_is_the_same_however_often_the_host_looks(case, sync_every):
    """CUDA looks every 32 updates; here the same loop runs on the CPU at several intervals."""
    data = {"target": SEED_TARGET, **CASES[case]}

    def one(sync):
        problem = prepare(resolved(**data))
        descent = Descent(problem, report=every_n(3), sync_every=sync)
        return list(descent.steps()), descent.result

    steps, result = one(1)
    other_steps, other = one(sync_every)
    assert (other.status, other.iters, other.history, other.stop_rule) == (result.status, result.iters, result.history, result.stop_rule)
    assert repr(other.loss) == repr(result.loss) and torch.equal(other.x, result.x)
    assert [(s.iter, s.loss, s.lr, s.grad_norm) for s in other_steps] == [(s.iter, s.loss, s.lr, s.grad_norm) for s in steps]
    assert all(torch.equal(a.x, b.x) for a, b in zip(other_steps, steps))


def k_runs(data: dict, starts: list, **loop_options):
    problem = prepare(resolved(**data))
    xs = torch.stack([torch.tensor(s, dtype=problem.dtype) for s in starts])
    loop = Loop(problem.config, make_stepper(problem, xs), problem.config.learning_rate, **loop_options)
    return run_to_end(loop)


def test_a_timeout_stops_only_the_runs_still_going():
    ticks = itertools.count(0.0, 1.0)  # each clock read: one second later
    near, far = [[0.1, 0.2, 0.3001]] * 1, [[5.0, 5.0, 5.0]]
    data = {"target": [[0.1, 0.2, 0.3]], "learning_rate": 0.01, "threshold": 1e-8, "timeout_s": 3.5}
    outcome = k_runs(data, [near[0], far[0]], sync_every=1, clock=lambda: next(ticks))
    assert outcome.statuses == ["converged", "timeout"]
    assert outcome.iters[1] == 4  # after updates 1, 2, 3 the clock reads 1 s, 2 s, 3 s; after update 4, 4 s


def test_an_interrupt_stops_the_runs_still_going_at_the_next_look():
    looks = itertools.count()
    data = {"target": [[1.0, 2.0]], "learning_rate": 1e-3, "threshold": 0}
    outcome = k_runs(data, [[1.0, 2.0], [0.0, 0.0]], sync_every=4, should_stop=lambda: next(looks) >= 2)
    assert outcome.statuses == ["converged", "interrupted"]
    assert outcome.iters == [0, 12]  # three looks, every 4 updates


def test_stopped_runs_stay_exactly_where_they_stopped():
    data = {"target": [[1.0, 2.0]], "learning_rate": 0.5, "threshold": 1e-6, "dtype": "float64", "max_iters": 200}
    outcome = k_runs(data, [[0.9, 2.1], [-50.0, 80.0]], sync_every=7)
    alone = k_runs(data, [[0.9, 2.1]], sync_every=1)
    assert outcome.iters[0] == alone.iters[0] < outcome.iters[1]
    assert torch.equal(outcome.params["x"][0], alone.params["x"][0])
    assert outcome.losses[0] == alone.losses[0]


# Boundaries: each rule compares with <= or <, and a run that lands exactly on a boundary shows which.
# gd on mse from 0 towards t with lr = 1.5 n multiplies x - t by -2: the loss grows by exactly 4.
EXACT = {"target": [[1.0, 2.0]], "init": "zeros", "dtype": "float64"}


def test_a_loss_exactly_at_the_threshold_has_converged():
    _, probe, _ = fit(**EXACT, learning_rate=0.5, threshold=0, max_iters=3)
    _, result, _ = fit(**EXACT, learning_rate=0.5, threshold=probe.history[2], max_iters=10)
    assert (result.status, result.iters) == ("converged", 2)


def test_a_start_exactly_at_the_threshold_has_converged():
    _, result, _ = fit(**EXACT, threshold=2.5)  # mean of 1 and 4
    assert (result.status, result.iters, result.stop_rule) == ("converged", 0, "loss <= threshold (2.5)")


def test_a_loss_exactly_at_the_divergence_ceiling_goes_on():
    _, result, _ = fit(**EXACT, learning_rate=3.0, divergence_factor=4.0, threshold=0, max_iters=10)
    assert result.history[:3] == [2.5, 10.0, 40.0]
    assert (result.status, result.iters) == ("diverged", 2)


def test_a_threshold_just_below_a_float32_loss_does_not_round_onto_it():
    """The threshold the user wrote is compared, not its float32 rounding."""
    _, probe, _ = fit(target=SEED_TARGET, max_iters=19, threshold=0)
    loss = probe.history[19]  # a float32 value, exactly
    below = float(torch.nextafter(torch.tensor(loss, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)))
    assert float(torch.tensor(below, dtype=torch.float32)) == loss  # float32 cannot tell them apart
    _, result, _ = fit(target=SEED_TARGET, max_iters=25, threshold=below)
    assert result.iters > 19


def test_stall_counts_exactly_patience_updates():
    # lr = n for mse on n elements flips x - t each update: the loss never changes
    _, result, _ = fit(**EXACT, learning_rate=2.0, patience=5, min_rel_improvement=0, threshold=0, max_iters=100)
    assert result.history == [2.5] * 6
    assert (result.status, result.iters) == ("stalled", 5)


def test_an_improvement_just_short_of_the_minimum_does_not_count():
    # each update scales the loss by (1 - 2 lr / n)^2 = 0.25 exactly: a relative improvement of 0.75
    common = dict(**EXACT, learning_rate=0.5, patience=1, threshold=0, max_iters=6)
    _, enough, _ = fit(**common, min_rel_improvement=0.75 - 1e-12)
    _, short, _ = fit(**common, min_rel_improvement=0.75)
    assert (enough.status, enough.iters) == ("max_iters", 6)
    assert (short.status, short.iters) == ("stalled", 1)


STOP_RULES = {
    "converged": (dict(target=SEED_TARGET), "loss <= threshold (1e-05)"),
    "max_iters": (dict(target=SEED_TARGET, max_iters=5), "max_iters (5) reached"),
    "diverged": (dict(**EXACT, learning_rate=3.0, divergence_factor=4.0), "loss not finite or > 4 x the initial loss"),
    "stalled": (dict(**EXACT, learning_rate=2.0, patience=5, threshold=0),
                "no relative improvement >= 1e-06 in 5 updates"),
    "timeout": (dict(target=SEED_TARGET, learning_rate=1e-4, timeout_s=2.5), "timeout_s (2.5 s) reached"),
}


@pytest.mark.parametrize("status", list(STOP_RULES))
def test_each_status_says_which_rule_stopped_it(status):
    data, words = STOP_RULES[status]
    ticks = itertools.count(0.0, 1.0)
    descent = Descent(prepare(resolved(**data)), clock=lambda: next(ticks))
    list(descent.steps())
    assert (descent.result.status, descent.result.stop_rule) == (status, words)


def test_a_non_finite_start_and_an_interrupt_say_so():
    descent = Descent(prepare(resolved(target=SEED_TARGET)), should_stop=lambda: True)
    list(descent.steps())
    assert (descent.result.status, descent.result.iters, descent.result.stop_rule) == (
        records.INTERRUPTED, 1, "interrupted by a signal")
    _, result, _ = fit(target=[[1e30, 1.0]], init=[[-1e30, 0.0]], dtype="float32")
    assert (result.status, result.iters, result.stop_rule) == ("diverged", 0, "the initial loss is not finite")


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("runs", [1, 3])
def test_gd_on_mse_in_blocks_makes_the_same_updates(monkeypatch, dtype, runs):
    """Large problems go through GdOnMse block by block; with tiny blocks a small one does too.
    Each element sees the same operations, so x is identical; only the loss's summation order
    differs (per block, then across blocks in float64)."""
    import gdfit.fitting.steppers

    data = {"target": {"random": {"shape": [5, 7], "seed": 4}}, "dtype": dtype, "learning_rate": 3.0,
            "threshold": 1e-4, "max_iters": 500}
    starts = [torch.rand(5, 7, generator=torch.Generator().manual_seed(i)).tolist() for i in range(runs)]
    whole = k_runs(data, starts, sync_every=1)
    monkeypatch.setattr(gdfit.fitting.steppers, "BLOCK_BYTES", 3 * torch.tensor([], dtype=getattr(torch, dtype)).element_size())
    blocked = k_runs(data, starts, sync_every=1)
    assert (blocked.statuses, blocked.iters) == (whole.statuses, whole.iters)
    assert torch.equal(blocked.params["x"], whole.params["x"])
    tolerance = {"float32": 1e-6, "float64": 1e-15, "bfloat16": 1e-2}[dtype]
    assert blocked.losses == pytest.approx(whole.losses, rel=tolerance)

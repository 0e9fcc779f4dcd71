"""Each stop rule fires with its status; the CLI maps statuses to the README's exit codes."""

from __future__ import annotations

import itertools

from conftest import SEED_TARGET
from helpers import fit, resolved

from gdfit.engine import Descent, prepare


def test_threshold_converges():
    _, result, _ = fit(target=SEED_TARGET)
    assert result.status == "converged" and "threshold" in result.stop_rule


def test_max_iters():
    _, result, _ = fit(target=SEED_TARGET, max_iters=5)
    assert (result.status, result.iters) == ("max_iters", 5)


def test_divergence_by_growth_factor():
    _, result, _ = fit(target=SEED_TARGET, learning_rate=10.0, divergence_factor=100)
    assert result.status == "diverged"
    assert result.loss > 100 * result.history[0]
    assert all(loss <= 100 * result.history[0] for loss in result.history[:-1])


def test_divergence_by_non_finite_loss():
    _, result, _ = fit(target=SEED_TARGET, learning_rate=1e30, divergence_factor=1e300, dtype="float32")
    assert result.status == "diverged"


def test_stall_rule():
    # l1 with gd and a constant rate bounces around the optimum without improving
    _, result, _ = fit(target=SEED_TARGET, loss="l1", learning_rate=0.5, patience=20, threshold=0, max_iters=5000)
    assert result.status == "stalled"
    assert "20 updates" in result.stop_rule
    best = min(result.history[: result.iters - 20 + 1])
    assert min(result.history[result.iters - 20 + 1 :]) >= best * (1 - 1e-6)


def test_timeout_with_an_injected_clock():
    ticks = itertools.count(0.0, 0.5)  # every clock read advances half a second
    problem = prepare(resolved(target=SEED_TARGET, learning_rate=1e-4, threshold=0, timeout_s=3))
    descent = Descent(problem, clock=lambda: next(ticks))
    list(descent.steps())
    assert descent.result.status == "timeout"
    assert descent.result.iters < 10

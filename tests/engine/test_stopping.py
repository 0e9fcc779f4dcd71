"""Each stop rule fires with its status; the CLI maps statuses to the README's exit codes."""

from __future__ import annotations

import itertools
import warnings

import torch
from conftest import SEED_TARGET
from helpers import fit, resolved
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gdfit.engine.descent import Descent, prepare
from gdfit.engine.stopping import HostStopRules, StopRules


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


# ------------------------------------------------------- one run's rules on the host, as on the device

# the boundaries matter: a loss equal to the last, to the threshold or to the ceiling (1.5 x 1 or 2),
# a step or gradient equal to its tolerance
EDGES = [0.0, 1e-10, 1e-3, 0.5, 1.0, 1.5, 2.0, 3.0, float("nan"), float("inf")]
losses_st = st.one_of(st.floats(0, 4, width=32), st.sampled_from(EDGES), st.sampled_from(EDGES))
tolerance_st = st.sampled_from([None, 0.0, 1e-10, 1e-3, 0.5])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype and values, NaN equal to NaN."""
    if a.dtype != b.dtype:
        return False
    return torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0)) if a.is_floating_point() else torch.equal(a, b)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.sampled_from([1.0, 2.0, 0.0, float("nan")]),
    sequence=st.lists(st.tuples(losses_st, st.tuples(losses_st, losses_st, losses_st), losses_st, st.booleans()),
                      min_size=1, max_size=40),
    threshold=st.sampled_from([0.0, 1e-3, 0.5]),
    factor=st.sampled_from([1.5, 1e5]),
    patience=st.sampled_from([None, 1, 3]),
    rel=st.sampled_from([0.0, 0.1]),
    ftol=tolerance_st, xtol=tolerance_st, gtol=tolerance_st,
    promised_on=st.booleans(), stuck_on=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
)
@example(1.0, [(1.0, (0, 0, 0), 0, False)], 0.0, 1e5, None, 0.0, 1e-3, None, None, False, False, torch.float64)
@example(1.0, [(0.9, (0.75, 1.0, 0.0), 0, False)], 0.0, 1e5, None, 0.0, None, 0.5, None, False, False, torch.float64)
def test_one_runs_host_rules_decide_as_the_device_rules(initial, sequence, threshold, factor, patience, rel,
                                                          ftol, xtol, gtol, promised_on, stuck_on, dtype):
    """The Loop uses HostStopRules for one run on the CPU and StopRules elsewhere, on tensors or
    (many fits computed on the host) on numpy arrays: fed the same losses, motions, promises and
    stuck flags, they stop at the same update for the same reason, and numpy's never warn."""
    config = resolved(target=SEED_TARGET, threshold=threshold, divergence_factor=factor, patience=patience,
                      min_rel_improvement=rel, ftol=ftol, xtol=xtol, gtol=gtol).config
    start = torch.tensor([initial], dtype=dtype)
    host, device, arrays = HostStopRules(config, start), StopRules(config, start), StopRules(config, start.numpy())
    one = lambda value: torch.tensor([value], dtype=dtype)  # noqa: E731
    for k, (loss, motion, promised, stuck) in enumerate(sequence, start=1):
        if not host.running():
            break
        args = (k, one(loss), tuple(one(m) for m in motion) if host.needs_motion else None,
                one(promised) if promised_on else None, torch.tensor([stuck]) if stuck_on else None)
        host.after_update(*args)
        device.after_update(*args)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # inf and NaN losses: a status, never a warning
            arrays.after_update(k, *(a.numpy() if isinstance(a, torch.Tensor) else
                                     tuple(m.numpy() for m in a) if isinstance(a, tuple) else a for a in args[1:]))
        assert host.running() == device.running() == arrays.running()
    host.settle()
    for name, value in device.state().items():
        assert same(host.state()[name], value), name
        assert same(torch.from_numpy(arrays.state()[name]), value), name
    final = [float(sequence[-1][0])]
    assert host.outcome(final, host.active.tolist(), "max_iters") == device.outcome(final, device.active.tolist(), "max_iters") \
        == arrays.outcome(final, arrays.active.tolist(), "max_iters")
    assert host.fired_rules() == device.fired_rules() == arrays.fired_rules()


def test_numpy_rules_of_many_runs_meet_inf_losses_without_a_warning():
    """Many fits on the host: a run that overflowed stays inf beside the others (inf - inf in the
    ftol rule); its status says so, and numpy warns of nothing."""
    import numpy as np

    config = resolved(target=SEED_TARGET, ftol=1e-3).config
    rules = StopRules(config, np.array([1.0, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rules.after_update(1, np.array([np.inf, 0.5]))
        rules.after_update(2, np.array([np.inf, 0.4]))
    assert rules.active.tolist() == [False, True]
    assert rules.outcome([np.inf, 0.4], rules.active.tolist(), "max_iters") == ["diverged", "max_iters"]

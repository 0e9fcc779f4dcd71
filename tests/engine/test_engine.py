"""The descent loop against the tutorial's printed numbers, closed forms and itself."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import COUNT_1, SEED_TARGET
from helpers import fit, resolved

from gdfit.engine.descent import Descent, every_n, prepare

# The tutorial's printed tensors and losses at counts 2 to 5, and at count 16.
TUTORIAL = {
    2: (0.053250689059495926, [[0.2511, 0.1371, 0.6754], [0.3985, 0.4469, 0.5557], [0.5651, 0.3186, 0.6617]]),
    3: (0.032213374972343445, [[0.2176, 0.1511, 0.5920], [0.3988, 0.4587, 0.5655], [0.5951, 0.4256, 0.7147]]),
    4: (0.019487105309963226, [[0.1914, 0.1619, 0.5271], [0.3991, 0.4679, 0.5732], [0.6184, 0.5088, 0.7559]]),
    5: (0.011788494884967804, [[0.1711, 0.1704, 0.4766], [0.3993, 0.4750, 0.5791], [0.6365, 0.5735, 0.7879]]),
}
COUNT_16 = [[0.1045, 0.1981, 0.3111], [0.4000, 0.4984, 0.5987], [0.6960, 0.7857, 0.8929]]
ENGINES = ["autograd", "fused"]


@pytest.mark.parametrize("engine", ENGINES)
def test_retraces_the_tutorial_from_its_count_1_tensor(engine):
    steps, result, _ = fit(engine, target=SEED_TARGET, init=COUNT_1)
    by_iter = {s.iter: s for s in steps}
    for count, (loss, x) in TUTORIAL.items():
        step = by_iter[count - 1]  # our update k starts from the tutorial's count 1
        assert torch.allclose(step.x, torch.tensor(x), atol=1e-4), (count, step.x)
        assert step.loss == pytest.approx(loss, abs=2e-6)
    assert result.status == "converged"
    assert result.iters + 1 == 20  # the tutorial stops at count 20
    assert result.loss == pytest.approx(6.2678964241058566e-06, rel=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_stops_at_count_20_from_the_count_16_tensor(engine):
    _, result, _ = fit(engine, target=SEED_TARGET, init=COUNT_16)
    assert result.status == "converged"
    assert 16 + result.iters == 20


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [[9], [3, 3], [2, 5], [4, 3, 2]])
@pytest.mark.parametrize("lr", [0.1, 0.7, 1.3])
def test_mse_gd_scales_loss_by_the_closed_form_factor(engine, shape, lr):
    n = math.prod(shape)
    lr = lr * n / 9  # keep lr well inside the stable range 0 < lr < n
    factor = (1 - 2 * lr / n) ** 2
    _, result, _ = fit(
        engine, dtype="float64", target={"random": {"shape": shape, "seed": 3}}, learning_rate=lr,
        threshold=0, max_iters=8,
    )
    history = result.history
    for before, after in zip(history, history[1:]):
        assert after == pytest.approx(before * factor, rel=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_same_config_and_seed_give_identical_numbers(engine):
    config = dict(target={"random": {"shape": [5, 4], "seed": 1}}, seed=7, learning_rate=0.5, max_iters=50)
    first = fit(engine, **config)
    second = fit(engine, **config)
    assert first[1].history == second[1].history
    assert torch.equal(first[1].x, second[1].x)
    assert [s.loss for s in first[0]] == [s.loss for s in second[0]]


def test_different_seeds_give_different_starts():
    a = prepare(resolved(target=SEED_TARGET, seed=0)).x0
    b = prepare(resolved(target=SEED_TARGET, seed=1)).x0
    assert not torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) < 1  # uniform [0, 1)


@pytest.mark.parametrize("lr,status", [(1.0, "converged"), (1e-4, "max_iters"), (30.0, "diverged")])
def test_statuses_from_real_runs(lr, status):
    _, result, _ = fit(target=SEED_TARGET, learning_rate=lr, max_iters=200)
    assert result.status == status


def test_diverged_run_keeps_non_finite_loss_out_of_nothing():
    _, result, _ = fit(target=SEED_TARGET, learning_rate=50.0, max_iters=10_000)
    assert result.status == "diverged"
    assert result.iters < 100


def test_zero_max_iters_makes_no_update():
    steps, result, _ = fit(target=SEED_TARGET, max_iters=0)
    assert steps == [] and result.iters == 0 and result.status == "max_iters"


def test_a_start_at_the_target_is_already_converged():
    _, result, _ = fit(target=SEED_TARGET, init=SEED_TARGET)
    assert result.status == "converged" and result.iters == 0 and result.loss == 0.0


def test_every_reports_each_nth_and_always_the_last():
    steps, result, _ = fit(target=SEED_TARGET, every=5)
    assert [s.iter for s in steps] == [5, 10, 15, result.iters]
    problem = prepare(resolved(target=SEED_TARGET))
    quiet = Descent(problem, report=every_n(0), report_last=False)
    assert list(quiet.steps()) == [] and quiet.result.status == "converged"


def test_history_holds_the_loss_after_every_update():
    steps, result, _ = fit(target=SEED_TARGET)
    assert len(result.history) == result.iters + 1
    assert [s.loss for s in steps] == result.history[1:]


def test_large_tensors_are_summarised_not_copied():
    steps, result, descent = fit(target={"random": {"shape": [20, 20]}}, init="zeros", max_iters=3, threshold=0)
    target = descent.problem.target
    x = torch.zeros(20, 20)
    for _ in range(3):  # the tutorial's loop, without the graph
        x = x - 1.0 * (2.0 / 400 * (x - target))
    assert isinstance(result.x, dict)
    assert result.x == {"shape": [20, 20], "min": float(x.min()), "max": float(x.max()),
                        "max_abs_error": float((x - target).abs().max())}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "smooth_l1"])
def test_the_end_loss_is_the_loss_of_the_returned_x(dtype, loss):
    functional = {"mse": torch.nn.functional.mse_loss, "l1": torch.nn.functional.l1_loss,
                  "huber": torch.nn.functional.huber_loss, "smooth_l1": torch.nn.functional.smooth_l1_loss}[loss]
    _, result, descent = fit(target=SEED_TARGET, dtype=dtype, loss=loss, learning_rate=0.5, max_iters=2000)
    assert result.loss == functional(result.x, descent.problem.target).item()
    assert (result.status == "converged") == (result.loss <= 1e-5)


def test_threshold_zero_is_flagged():
    warnings = Descent(prepare(resolved(target=SEED_TARGET, threshold=0))).start.warnings
    assert warnings == ["threshold 0 converges only when the fit is exact in every element; "
                        "in float32 that may never happen"]


def test_interrupt_stops_after_the_current_update():
    problem = prepare(resolved(target=SEED_TARGET, learning_rate=1e-3, threshold=0))
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) >= 3

    descent = Descent(problem, should_stop=stop_after_three)
    list(descent.steps())
    assert descent.result.status == "interrupted"
    assert descent.result.iters == 3


def test_grad_norm_is_the_norm_of_the_applied_gradient():
    steps, _, _ = fit("autograd", target=SEED_TARGET, init=COUNT_1)
    x0 = torch.tensor(COUNT_1, requires_grad=True)
    torch.nn.functional.mse_loss(x0, torch.tensor(SEED_TARGET)).backward()
    assert steps[0].grad_norm == pytest.approx(float(x0.grad.norm()), rel=1e-5)
    fused, _, _ = fit("fused", target=SEED_TARGET, init=COUNT_1)
    assert [s.grad_norm for s in fused] == pytest.approx([s.grad_norm for s in steps], rel=1e-4)


def test_threshold_below_the_dtype_resolution_is_flagged():
    problem = prepare(resolved(target=SEED_TARGET, threshold=1e-20))
    warnings = Descent(problem).start.warnings
    assert any("below what float32 can resolve" in w for w in warnings)
    fine = prepare(resolved(target=SEED_TARGET, threshold=1e-20, dtype="float64"))
    assert not Descent(fine).start.warnings


def test_learning_rate_beyond_the_stable_limit_is_flagged():
    problem = prepare(resolved(target=SEED_TARGET, learning_rate=10.0))
    start = Descent(problem).start
    assert start.advice["max_stable_lr"] == 9.0
    assert any("stable limit 9" in w for w in start.warnings)


def test_the_stable_limit_is_exact_at_its_boundary():
    """2 / (2 / 24) is 24.000000000000004 in floating point; the limit for mse on 24 elements is 24."""
    target = {"random": {"shape": [24], "seed": 3}}
    at = Descent(prepare(resolved(target=target, learning_rate=24.0))).start
    below = Descent(prepare(resolved(target=target, learning_rate=23.999999))).start
    assert at.advice["max_stable_lr"] == 24.0
    assert any("not below gd's stable limit 24" in w for w in at.warnings)
    assert not any("stable limit" in w for w in below.warnings)


def test_a_history_nothing_uses_is_not_kept_and_memory_stays_flat():
    from gdfit.engine.descent import LossHistory

    config = dict(target=[[1.0, 2.0], [3.0, 4.0]], learning_rate=1e-4, threshold=0.0, max_iters=20_000,
                  dtype="float64", seed=3)
    kept = Descent(prepare(resolved(**config)), report=every_n(1000))
    kept_steps = list(kept.steps())
    lean = Descent(prepare(resolved(**config)), report=every_n(1000), keep_history=False)
    lean_steps = list(lean.steps())
    assert [(s.iter, s.loss) for s in lean_steps] == [(s.iter, s.loss) for s in kept_steps]
    full, sample = kept.result.history, lean.result.history
    assert len(full) == 20_001 and len(sample) <= 2 * LossHistory.SAMPLE + 1
    stride = 16  # 20,000 updates: the stride doubles past 2,048 points, to 16 at the end
    assert sample == full[::stride] + ([full[-1]] if 20_000 % stride else [])
    assert lean.result.loss == kept.result.loss and lean.result.iters == kept.result.iters


def test_the_history_holds_only_the_current_look_when_not_kept():
    from gdfit.engine.descent import LossHistory

    history = LossHistory([9.0], keep=False)
    for k in range(1, 10_001):
        history.extend([float(k)])
        assert history[k] == float(k)
        history.forget()
        assert len(history.losses) == 1 and len(history.sample) <= 2 * LossHistory.SAMPLE
    assert history.result(10_000)[-1] == 10_000.0

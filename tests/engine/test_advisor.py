"""The curvature estimate against the closed form (mse) and the full Hessian (other losses)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gdfit.engine.advisor import largest_curvature


@pytest.mark.parametrize("shape", [[9], [3, 3], [2, 5, 3]])
def test_mse_curvature_is_two_over_n(shape):
    target = torch.rand(shape)
    x0 = torch.rand(shape)
    n = target.numel()
    assert largest_curvature(F.mse_loss, x0, target) == pytest.approx(2 / n, rel=1e-9)


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda x, t: F.huber_loss(x, t, delta=0.3),
        lambda x, t: F.smooth_l1_loss(x, t, beta=0.5),
        lambda x, t: (torch.exp(x - t) * x).mean(),
    ],
)
def test_curvature_matches_the_full_hessian(loss_fn):
    gen = torch.Generator().manual_seed(4)
    target = torch.rand(6, generator=gen, dtype=torch.float64)
    x0 = torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 1
    hessian = torch.autograd.functional.hessian(lambda x: loss_fn(x, target), x0)
    expected = float(torch.linalg.eigvalsh(hessian).abs().max())
    assert largest_curvature(loss_fn, x0, target, iterations=200, rtol=1e-12) == pytest.approx(expected, rel=1e-6)


def test_l1_has_no_curvature():
    assert largest_curvature(F.l1_loss, torch.rand(4), torch.rand(4)) == 0.0


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam", "rmsprop", "lbfgs", "lm"])
def test_the_advisor_speaks_of_gd_only_for_gd(optimizer):
    from gdfit.engine.advisor import advise
    from gdfit.engine.descent import Descent, prepare
    from tests.helpers import resolved

    target = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    gd = Descent(prepare(resolved(target=target)), report=lambda k: False).advice
    problem = prepare(resolved(target=target, optimizer=optimizer))
    other = advise(problem.loss, problem.x0, problem.target, problem.model, optimizer)  # as `config --advise`
    assert gd["max_stable_lr"] == 9.0 and "gd is stable" in gd["note"]
    assert other["curvature"] == gd["curvature"] == 2 / 9
    assert other["max_stable_lr"] is None and other["suggested_lr"] is None
    assert "gd is stable" not in other["note"] and optimizer in other["note"]


@pytest.mark.parametrize("optimizer", ["lbfgs", "lm"])
def test_a_run_of_an_optimizer_that_chooses_its_steps_computes_no_advice(optimizer, monkeypatch):
    from gdfit.engine import descent
    from tests.helpers import resolved

    def refuse(*args, **kwargs):
        raise AssertionError("the advisor ran")

    monkeypatch.setattr(descent, "advise", refuse)
    run = descent.Descent(descent.prepare(resolved(target=[[1.0, 2.0], [3.0, 4.0]], optimizer=optimizer)),
                          report=lambda k: False)
    assert run.advice is None and run.start.advice is None
    with pytest.raises(AssertionError, match="the advisor ran"):  # gd's run still asks it
        descent.Descent(descent.prepare(resolved(target=[[1.0, 2.0], [3.0, 4.0]])), report=lambda k: False)

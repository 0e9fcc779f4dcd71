"""Learning-rate schedules against torch.optim.lr_scheduler, and their effect on a run."""

from __future__ import annotations

import pytest
import torch
from helpers import fit

from gdfit.config import Constant, CosineLR, ExponentialLR, StepLR
from gdfit.engine.schedules import rate

LR = 0.5
CASES = [
    (Constant(), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0)),
    (StepLR(name="step", step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    (ExponentialLR(name="exponential", gamma=0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (CosineLR(name="cosine", t_max=25, eta_min=0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 25, 0.01)),
]


@pytest.mark.parametrize("spec,make", CASES, ids=lambda v: getattr(v, "name", ""))
def test_rates_equal_torch_schedulers(spec, make):
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=LR)
    scheduler = make(optimizer)
    for k in range(1, 60):
        expected = optimizer.param_groups[0]["lr"]
        # torch's recursive form and our closed form agree to a few ulps
        assert rate(spec, LR, k, max_iters=60) == pytest.approx(expected, rel=1e-14, abs=1e-15), k
        optimizer.step()
        scheduler.step()


def test_cosine_defaults_t_max_to_max_iters():
    spec = CosineLR(name="cosine")
    assert rate(spec, 1.0, 1, max_iters=40) == 1.0
    assert rate(spec, 1.0, 21, max_iters=40) == pytest.approx(0.5, rel=1e-15)
    assert rate(spec, 1.0, 41, max_iters=40) == pytest.approx(0.0, abs=1e-16)


def test_a_scheduled_run_uses_the_scheduled_rate():
    steps, result, _ = fit(
        target=[[1.0, 2.0]], init=[[0.0, 0.0]], schedule={"name": "step", "step_size": 2, "gamma": 0.5},
        threshold=0, max_iters=6, learning_rate=0.4,
    )
    assert [s.lr for s in steps] == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])
    # mse gd on 2 elements: each update scales the loss by (1 - lr)^2
    for k, step in enumerate(steps, start=1):
        assert result.history[k] == pytest.approx(result.history[k - 1] * (1 - step.lr) ** 2, rel=1e-5)

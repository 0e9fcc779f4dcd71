"""Closed-form losses and gradients against torch.nn.functional and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.config import L1, MSE, Huber, SmoothL1
from gdfit.losses import make_loss

SPECS = [
    (MSE(), F.mse_loss),
    (L1(name="l1"), F.l1_loss),
    (Huber(name="huber", delta=0.5), lambda x, t: F.huber_loss(x, t, delta=0.5)),
    (SmoothL1(name="smooth_l1", beta=0.25), lambda x, t: F.smooth_l1_loss(x, t, beta=0.25)),
]

values = st.lists(st.floats(-10, 10, allow_nan=False, width=64), min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)
@given(xs=values, seed=st.integers(0, 1000))
@pytest.mark.parametrize("spec,functional", SPECS, ids=lambda v: getattr(v, "name", ""))
def test_value_and_gradient_match_functional(spec, functional, xs, seed):
    x = torch.tensor(xs, dtype=torch.float64)
    target = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loss = make_loss(spec, x.numel())
    d = (x - target).unsqueeze(0)
    leaf = x.clone().requires_grad_(True)
    reference = functional(leaf, target)
    reference.backward()
    assert float(loss.value(d)[0]) == pytest.approx(float(reference.detach()), rel=1e-12, abs=1e-15)
    assert torch.allclose(loss.grad(d)[0], leaf.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("spec,functional", SPECS, ids=lambda v: getattr(v, "name", ""))
def test_batched_values_are_per_run(spec, functional):
    target = torch.rand(3, 4, dtype=torch.float64)
    xs = torch.rand(5, 3, 4, dtype=torch.float64)
    loss = make_loss(spec, target.numel())
    got = loss.value(xs - target)
    expected = torch.stack([functional(x, target) for x in xs])
    assert torch.allclose(got, expected, rtol=1e-12)

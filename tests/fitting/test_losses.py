"""Each loss's value and gradient against torch.nn.functional and autograd, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.config import L1, MSE, Huber, SmoothL1
from gdfit.fitting.losses import make_loss

SPECS = [
    (MSE(), lambda x, t: F.mse_loss(x, t)),
    (L1(name="l1"), lambda x, t: F.l1_loss(x, t)),
    (Huber(name="huber", delta=0.3), lambda x, t: F.huber_loss(x, t, delta=0.3)),
    (Huber(name="huber", delta=1.0), lambda x, t: F.huber_loss(x, t, delta=1.0)),
    (SmoothL1(name="smooth_l1", beta=0.3), lambda x, t: F.smooth_l1_loss(x, t, beta=0.3)),
    (SmoothL1(name="smooth_l1", beta=2.0), lambda x, t: F.smooth_l1_loss(x, t, beta=2.0)),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(1,), (9,), (3, 3), (17,), (24,), (4, 3, 2), (1000,), (300, 300)]


@pytest.mark.parametrize("spec,functional", SPECS, ids=lambda v: getattr(v, "name", ""))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_value_and_gradient_are_torchs_own(spec, functional, dtype, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 3 - 1).to(dtype)
    target = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    x.view(-1)[0] = target.view(-1)[0]  # an element exactly on its target: gradient exactly 0
    leaf = x.clone().requires_grad_(True)
    reference = functional(leaf, target)
    reference.backward()
    loss = make_loss(spec, x.numel())
    assert torch.equal(loss.value(x.unsqueeze(0), target), reference.detach().unsqueeze(0))
    assert torch.equal(loss.grad(x.unsqueeze(0), target)[0], leaf.grad)


@pytest.mark.parametrize("spec,functional", SPECS, ids=lambda v: getattr(v, "name", ""))
def test_each_run_is_its_own_mean(spec, functional):
    """K runs in one tensor: run i's value and gradient are those of run i alone."""
    gen = torch.Generator().manual_seed(7)
    xs = torch.rand(5, 4, 3, generator=gen) * 2
    target = torch.rand(4, 3, generator=gen)
    loss = make_loss(spec, target.numel())
    values, grads = loss.value(xs, target), loss.grad(xs, target)
    for i in range(5):
        leaf = xs[i].clone().requires_grad_(True)
        reference = functional(leaf, target)
        reference.backward()
        assert torch.equal(values[i], reference.detach())
        assert torch.equal(grads[i], leaf.grad)


@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=30), seed=st.integers(0, 1000))
@pytest.mark.parametrize("spec,functional", SPECS, ids=lambda v: getattr(v, "name", ""))
def test_random_values_match_autograd(spec, functional, xs, seed):
    x = torch.tensor(xs, dtype=torch.float64)
    target = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    reference = functional(leaf, target)
    reference.backward()
    loss = make_loss(spec, x.numel())
    assert torch.equal(loss.value(x.unsqueeze(0), target)[0], reference.detach())
    assert torch.equal(loss.grad(x.unsqueeze(0), target)[0], leaf.grad)

"""Every optimizer and loss, in both engines, against torch.optim and the tutorial's loop, bit for bit.

The oracle makes torch's own calls: `loss.backward()` on torch.nn.functional, then
`torch.optim.SGD/Adam/RMSprop(foreach=False).step()`, or for gd the tutorial's
`x = x - lr * x.grad`. On the CPU both engines must give the very same numbers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import fit, resolved

from gdfit.engine.descent import prepare

STEPS = 30
OPTIMIZERS = {
    "gd": ({"name": "gd"}, None),
    "momentum": (
        {"name": "momentum", "momentum": 0.8, "dampening": 0.1},
        lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.8, dampening=0.1, foreach=False),
    ),
    "momentum0": (
        {"name": "momentum", "momentum": 0.0, "dampening": 0.5},
        lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.0, dampening=0.5, foreach=False),
    ),
    "nesterov": (
        {"name": "nesterov", "momentum": 0.9},
        lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9, nesterov=True, foreach=False),
    ),
    "adam": (
        {"name": "adam", "betas": [0.8, 0.99], "eps": 1e-8},
        lambda p, lr: torch.optim.Adam([p], lr=lr, betas=(0.8, 0.99), eps=1e-8, foreach=False),
    ),
    "rmsprop": (
        {"name": "rmsprop", "alpha": 0.9, "eps": 1e-8},
        lambda p, lr: torch.optim.RMSprop([p], lr=lr, alpha=0.9, eps=1e-8, foreach=False),
    ),
}
LOSSES = {
    "mse": ("mse", F.mse_loss),
    "l1": ("l1", F.l1_loss),
    "huber": ({"name": "huber", "delta": 0.3}, lambda x, t: F.huber_loss(x, t, delta=0.3)),
    "smooth_l1": ({"name": "smooth_l1", "beta": 0.4}, lambda x, t: F.smooth_l1_loss(x, t, beta=0.4)),
}
RATES = {"gd": 0.5, "momentum": 0.3, "momentum0": 0.4, "nesterov": 0.3, "adam": 0.05, "rmsprop": 0.02}


def torch_reference(make_optimizer, loss_fn, x0, target, lr, steps=STEPS):
    """Losses after each of `steps` updates, and the final x, by torch itself."""
    x = x0.clone().requires_grad_(True)
    optimizer = make_optimizer(x, lr) if make_optimizer else None
    losses = []
    loss = loss_fn(x, target)
    for _ in range(steps):
        if optimizer is None:  # the tutorial's loop
            loss.backward()
            x = x - lr * x.grad
            x.detach_()
            x.requires_grad_(True)
        else:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss = loss_fn(x, target)
        losses.append(loss.item())
    return losses, x.detach()


def cases():
    for opt_name in OPTIMIZERS:
        for loss_name in LOSSES:
            yield pytest.param(opt_name, loss_name, id=f"{opt_name}-{loss_name}")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("engine", ["fused", "autograd"])
@pytest.mark.parametrize("shape", [[3, 3], [17], [2, 3, 4]])
@pytest.mark.parametrize("opt_name,loss_name", list(cases()))
def test_engines_equal_torch_bit_for_bit(opt_name, loss_name, shape, engine, dtype):
    spec, make_optimizer = OPTIMIZERS[opt_name]
    loss_spec, loss_fn = LOSSES[loss_name]
    lr = RATES[opt_name] * (0.3 if loss_name != "mse" and opt_name not in ("adam", "rmsprop") else 1.0)
    data = dict(target={"random": {"shape": shape, "seed": 11, "low": -1, "high": 1}}, optimizer=spec,
                loss=loss_spec, learning_rate=lr, threshold=0, max_iters=STEPS, seed=5, dtype=dtype)
    start = prepare(resolved(engine=engine, **data))  # the run moves its own x0 in place
    _, result, _ = fit(engine, every=0, **data)
    expected, x_final = torch_reference(make_optimizer, loss_fn, start.x0, start.target, lr)
    made = result.iters
    assert result.history[1:] == expected[:made]
    if made < STEPS:  # only a loss that left the float range stops a run with threshold 0
        assert result.status == "diverged" and not torch.isfinite(torch.tensor(expected[made - 1]))
    else:
        assert torch.equal(result.x, x_final)


def test_momentum_zero_skips_the_buffer_as_torch_does():
    """torch.optim.SGD with momentum 0 ignores dampening; a buffer would scale each step by 0.5."""
    target = [[1.0, 2.0], [3.0, 4.0]]
    _, result, _ = fit(target=target, init="zeros", optimizer={"name": "momentum", "momentum": 0, "dampening": 0.5},
                       learning_rate=0.5, threshold=0, max_iters=1, dtype="float64")
    # one gd step of 0.5 * (2/4) (x - t) from 0: x = t / 4 exactly
    assert result.x.tolist() == [[0.25, 0.5], [0.75, 1.0]]

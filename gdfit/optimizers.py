"""Update rules, written out so one loop can run them fused, batched and on any device.

Each follows its torch.optim counterpart (single-tensor code path, no weight decay) operation for
operation, so the autograd engine reproduces torch.optim to the last bit or nearly. Settings are
floats for one run, or [K, 1, ...] tensors when K runs share a batch (a sweep).
"""

from __future__ import annotations

import torch

from gdfit.config import GD, Adam, Momentum, Nesterov, RMSprop

Hyper = float | torch.Tensor


def _axpy(p: torch.Tensor, g: torch.Tensor, alpha: Hyper) -> None:
    """p += alpha * g; one fused op when alpha is a number (as torch.optim does)."""
    if isinstance(alpha, torch.Tensor):
        p.add_(g * alpha)
    else:
        p.add_(g, alpha=alpha)


def _axpy_ratio(p: torch.Tensor, num: torch.Tensor, den: torch.Tensor, alpha: Hyper) -> None:
    """p += alpha * num / den, as addcdiv_ when alpha is a number."""
    if isinstance(alpha, torch.Tensor):
        p.add_(num / den * alpha)
    else:
        p.addcdiv_(num, den, value=alpha)


def _decay_add_square(avg: torch.Tensor, g: torch.Tensor, decay: Hyper) -> None:
    """avg = decay * avg + (1 - decay) * g^2."""
    avg.mul_(decay)
    if isinstance(decay, torch.Tensor):
        avg.add_(g * g * (1 - decay))
    else:
        avg.addcmul_(g, g, value=1 - decay)


class Optimizer:
    """Plain gradient descent: p -= lr * g."""

    name = "gd"

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        """Apply update number k (1-based) with gradient g, in place."""
        _axpy(p, g, -lr)


class HeavyBall(Optimizer):
    """torch.optim.SGD with momentum (and nesterov): the first step's buffer is the plain gradient."""

    def __init__(self, momentum: Hyper, dampening: Hyper = 0.0, nesterov: bool = False) -> None:
        self.name = "nesterov" if nesterov else "momentum"
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.buf: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.buf is None:
            self.buf = g.clone()
        else:
            self.buf.mul_(self.momentum)
            _axpy(self.buf, g, 1 - self.dampening)
        if self.nesterov:
            direction = g.clone()
            _axpy(direction, self.buf, self.momentum)
        else:
            direction = self.buf
        _axpy(p, direction, -lr)


class AdamRule(Optimizer):
    """torch.optim.Adam (amsgrad off): bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, beta1: Hyper, beta2: Hyper, eps: Hyper) -> None:
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.m is None:
            self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)
        if isinstance(self.beta1, torch.Tensor):
            self.m.add_((g - self.m) * (1 - self.beta1))
        else:
            self.m.lerp_(g, 1 - self.beta1)
        _decay_add_square(self.v, g, self.beta2)
        step_size = lr / (1 - self.beta1**k)
        correction2_sqrt = (1 - self.beta2**k) ** 0.5
        denom = (self.v.sqrt() / correction2_sqrt).add_(self.eps)
        _axpy_ratio(p, self.m, denom, -step_size)


class RMSpropRule(Optimizer):
    """torch.optim.RMSprop (not centered, no momentum)."""

    name = "rmsprop"

    def __init__(self, alpha: Hyper, eps: Hyper) -> None:
        self.alpha, self.eps = alpha, eps
        self.v: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.v is None:
            self.v = torch.zeros_like(p)
        _decay_add_square(self.v, g, self.alpha)
        _axpy_ratio(p, g, self.v.sqrt().add_(self.eps), -lr)


def make_optimizer(spec: GD | Momentum | Nesterov | Adam | RMSprop, hyper: dict[str, Hyper] | None = None) -> Optimizer:
    """The update rule for a config's `optimizer:`; `hyper` replaces settings with per-run tensors."""
    h = {**spec.model_dump(), **(hyper or {})}
    if isinstance(spec, Momentum):
        return HeavyBall(h["momentum"], h["dampening"])
    if isinstance(spec, Nesterov):
        return HeavyBall(h["momentum"], 0.0, nesterov=True)
    if isinstance(spec, Adam):
        return AdamRule(h.get("beta1", spec.betas[0]), h.get("beta2", spec.betas[1]), h["eps"])
    if isinstance(spec, RMSprop):
        return RMSpropRule(h["alpha"], h["eps"])
    return Optimizer()


def state_copies(spec: GD | Momentum | Nesterov | Adam | RMSprop) -> int:
    """Target-sized tensors an optimizer keeps, for the memory guard."""
    return {"gd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "rmsprop": 1}[spec.name]

"""Update rules, written out so one loop can run them fused, batched and on any device.

Each equals its torch.optim counterpart with the same settings (no weight decay); tests compare
trajectories step by step. Hyperparameters are floats for one run, or [K, 1, ...] tensors when
K runs share a batch (a sweep).
"""

from __future__ import annotations

import torch

from gdfit.config import GD, Adam, Momentum, Nesterov, RMSprop

Hyper = float | torch.Tensor


class Optimizer:
    """Updates the parameter in place: p -= lr * direction(grad, state)."""

    name = "gd"

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        """Apply update number k (1-based) with gradient g."""
        p.sub_(g * lr)


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
            self.buf.mul_(self.momentum).add_(g * (1 - self.dampening))
        direction = g + self.momentum * self.buf if self.nesterov else self.buf
        p.sub_(direction * lr)


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
        self.m.lerp_(g, 1 - self.beta1)
        self.v.mul_(self.beta2).add_(g * g * (1 - self.beta2))
        correction1 = 1 - self.beta1**k
        correction2_sqrt = (1 - self.beta2**k) ** 0.5
        denom = self.v.sqrt() / correction2_sqrt + self.eps
        p.sub_(self.m / denom * (lr / correction1))


class RMSpropRule(Optimizer):
    """torch.optim.RMSprop (not centered, no momentum)."""

    name = "rmsprop"

    def __init__(self, alpha: Hyper, eps: Hyper) -> None:
        self.alpha, self.eps = alpha, eps
        self.v: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.v is None:
            self.v = torch.zeros_like(p)
        self.v.mul_(self.alpha).add_(g * g * (1 - self.alpha))
        p.sub_(g / (self.v.sqrt() + self.eps) * lr)


def make_optimizer(spec: GD | Momentum | Nesterov | Adam | RMSprop, hyper: dict[str, Hyper] | None = None) -> Optimizer:
    """The update rule for a config's `optimizer:`; `hyper` replaces settings with per-run tensors."""
    h = {**spec.model_dump(), **(hyper or {})}
    if isinstance(spec, Momentum):
        return HeavyBall(h["momentum"], h["dampening"])
    if isinstance(spec, Nesterov):
        return HeavyBall(h["momentum"], 0.0, nesterov=True)
    if isinstance(spec, Adam):
        beta1, beta2 = h.get("beta1", spec.betas[0]), h.get("beta2", spec.betas[1])
        return AdamRule(beta1, beta2, h["eps"])
    if isinstance(spec, RMSprop):
        return RMSpropRule(h["alpha"], h["eps"])
    return Optimizer()


def state_copies(spec: GD | Momentum | Nesterov | Adam | RMSprop) -> int:
    """Target-sized tensors an optimizer keeps, for the memory guard."""
    return {"gd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "rmsprop": 1}[spec.name]

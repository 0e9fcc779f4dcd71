"""The built-in losses, as closed forms on the residual d = x - target (mean over each run's elements).

Each class gives the per-run value, the gradient with respect to x, and the torch.nn.functional
call that the tutorial's autograd loop uses. Tests hold the closed forms to that oracle.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gdfit.config import L1, MSE, Huber, SmoothL1


def _flat(d: torch.Tensor) -> torch.Tensor:
    return d.reshape(d.shape[0], -1)


class Loss:
    """A mean-reduced elementwise loss of the residual; d carries a leading run dimension."""

    name = "loss"

    def __init__(self, numel: int) -> None:
        self.numel = numel  # elements per run: the mean's denominator

    def value(self, d: torch.Tensor) -> torch.Tensor:
        """Loss of each run, shape [K]."""
        raise NotImplementedError

    def grad(self, d: torch.Tensor) -> torch.Tensor:
        """d loss / d x, same shape as d."""
        raise NotImplementedError

    def functional(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The torch.nn.functional loss (mean reduction) of the tutorial's literal loop."""
        raise NotImplementedError


class MeanSquared(Loss):
    name = "mse"

    def value(self, d: torch.Tensor) -> torch.Tensor:
        # a norm is one fused pass over d; (d * d).mean() and linalg.vecdot write a temporary
        # the size of d (measured: 1.8 ms against 17 ms on 4096 x 4096)
        return torch.linalg.vector_norm(_flat(d), dim=1).square_().div_(self.numel)

    def grad(self, d: torch.Tensor) -> torch.Tensor:
        return d * (2.0 / self.numel)

    def functional(self):
        return F.mse_loss


class Absolute(Loss):
    name = "l1"

    def value(self, d: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(_flat(d), ord=1, dim=1) / self.numel

    def grad(self, d: torch.Tensor) -> torch.Tensor:
        return torch.sign(d) / self.numel

    def functional(self):
        return F.l1_loss


def _huber_sum(d: torch.Tensor, delta: float) -> torch.Tensor:
    """Per-run sum of 0.5 d^2 (|d| < delta) or delta (|d| - delta / 2), as c (|d| - c / 2) with
    c = min(|d|, delta): the same roundings as torch's, in two temporaries instead of six."""
    a = d.abs()
    c = a.clamp(max=delta)
    return _flat(a.sub_(c, alpha=0.5).mul_(c)).sum(dim=1)


class HuberLoss(Loss):
    name = "huber"

    def __init__(self, numel: int, delta: float) -> None:
        super().__init__(numel)
        self.delta = delta

    def value(self, d: torch.Tensor) -> torch.Tensor:
        return _huber_sum(d, self.delta) / self.numel

    def grad(self, d: torch.Tensor) -> torch.Tensor:
        return d.clamp(-self.delta, self.delta) / self.numel

    def functional(self):
        return lambda x, t: F.huber_loss(x, t, delta=self.delta)


class SmoothL1Loss(Loss):
    """Huber with delta = beta, divided by beta."""

    name = "smooth_l1"

    def __init__(self, numel: int, beta: float) -> None:
        super().__init__(numel)
        self.beta = beta

    def value(self, d: torch.Tensor) -> torch.Tensor:
        return _huber_sum(d, self.beta) / (self.beta * self.numel)

    def grad(self, d: torch.Tensor) -> torch.Tensor:
        return (d / self.beta).clamp(-1.0, 1.0) / self.numel

    def functional(self):
        return lambda x, t: F.smooth_l1_loss(x, t, beta=self.beta)


def make_loss(spec: MSE | L1 | Huber | SmoothL1, numel: int) -> Loss:
    """The Loss for a config's `loss:` entry."""
    if isinstance(spec, Huber):
        return HuberLoss(numel, spec.delta)
    if isinstance(spec, SmoothL1):
        return SmoothL1Loss(numel, spec.beta)
    if isinstance(spec, L1):
        return Absolute(numel)
    return MeanSquared(numel)

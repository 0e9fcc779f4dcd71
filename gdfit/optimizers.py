"""Update rules, written out so one loop can run them fused, batched and on any device.

Each equals its torch.optim counterpart (no weight decay). Two arithmetic modes:
- `exact=True` copies torch.optim's single-tensor code path op for op (add_ with alpha, addcmul_,
  addcdiv_), so the autograd engine reproduces torch.optim to the last bit or nearly;
- `exact=False` (the fused engine) writes each step as plain multiplies and adds, so a setting
  that is a float for one run or a [K, 1, ...] tensor in a sweep rounds the same way, and a sweep
  equals the single runs it batches. Scalar arithmetic on settings is done in float64 first.
"""

from __future__ import annotations

import torch

from gdfit.config import GD, Adam, Momentum, Nesterov, RMSprop

Hyper = float | torch.Tensor


def _like(value: Hyper, p: torch.Tensor) -> Hyper:
    """A setting ready to multiply p: floats stay floats, float64 tensors are cast to p's dtype."""
    return value.to(p.dtype) if isinstance(value, torch.Tensor) else value


class Optimizer:
    """Plain gradient descent: p -= lr * g."""

    name = "gd"

    def __init__(self, exact: bool = False) -> None:
        self.exact = exact

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        """Apply update number k (1-based) with gradient g, in place."""
        self._axpy(p, g, -lr)

    def _axpy(self, p: torch.Tensor, g: torch.Tensor, alpha: Hyper) -> None:
        """p += alpha * g."""
        if self.exact and not isinstance(alpha, torch.Tensor):
            p.add_(g, alpha=alpha)
        else:
            p.add_(g * _like(alpha, p))

    def _decay_add_square(self, avg: torch.Tensor, g: torch.Tensor, decay: Hyper) -> None:
        """avg = decay * avg + (1 - decay) * g^2."""
        avg.mul_(_like(decay, avg))
        if self.exact and not isinstance(decay, torch.Tensor):
            avg.addcmul_(g, g, value=1 - decay)
        else:
            avg.add_(g * g * _like(1 - decay, avg))


class HeavyBall(Optimizer):
    """torch.optim.SGD with momentum (and nesterov): the first step's buffer is the plain gradient."""

    def __init__(self, momentum: Hyper, dampening: Hyper = 0.0, nesterov: bool = False, exact: bool = False) -> None:
        super().__init__(exact)
        self.name = "nesterov" if nesterov else "momentum"
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.buf: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.buf is None:
            self.buf = g.clone()
        else:
            self.buf.mul_(_like(self.momentum, p))
            self._axpy(self.buf, g, 1 - self.dampening)
        if self.nesterov:
            direction = g.clone()
            self._axpy(direction, self.buf, self.momentum)
        else:
            direction = self.buf
        self._axpy(p, direction, -lr)


class AdamRule(Optimizer):
    """torch.optim.Adam (amsgrad off): bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, beta1: Hyper, beta2: Hyper, eps: Hyper, exact: bool = False) -> None:
        super().__init__(exact)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.m is None:
            self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)
        self.m.lerp_(g, _like(1 - self.beta1, p))
        self._decay_add_square(self.v, g, self.beta2)
        step_size = lr / (1 - self.beta1**k)  # float64 (a float, or a float64 tensor)
        correction2_sqrt = (1 - self.beta2**k) ** 0.5
        denom = (self.v.sqrt() / _like(correction2_sqrt, p)).add_(_like(self.eps, p))
        if self.exact and not isinstance(step_size, torch.Tensor):
            p.addcdiv_(self.m, denom, value=-step_size)
        else:
            p.add_(self.m / denom * _like(-step_size, p))


class RMSpropRule(Optimizer):
    """torch.optim.RMSprop (not centered, no momentum)."""

    name = "rmsprop"

    def __init__(self, alpha: Hyper, eps: Hyper, exact: bool = False) -> None:
        super().__init__(exact)
        self.alpha, self.eps = alpha, eps
        self.v: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: Hyper, k: int) -> None:
        if self.v is None:
            self.v = torch.zeros_like(p)
        self._decay_add_square(self.v, g, self.alpha)
        avg = self.v.sqrt().add_(_like(self.eps, p))
        if self.exact and not isinstance(lr, torch.Tensor):
            p.addcdiv_(g, avg, value=-lr)
        else:
            p.add_(g / avg * _like(-lr, p))


def make_optimizer(
    spec: GD | Momentum | Nesterov | Adam | RMSprop, hyper: dict[str, Hyper] | None = None, exact: bool = False
) -> Optimizer:
    """The update rule for a config's `optimizer:`; `hyper` replaces settings with per-run tensors."""
    h = {**spec.model_dump(), **(hyper or {})}
    if isinstance(spec, Momentum):
        return HeavyBall(h["momentum"], h["dampening"], exact=exact)
    if isinstance(spec, Nesterov):
        return HeavyBall(h["momentum"], 0.0, nesterov=True, exact=exact)
    if isinstance(spec, Adam):
        return AdamRule(h.get("beta1", spec.betas[0]), h.get("beta2", spec.betas[1]), h["eps"], exact=exact)
    if isinstance(spec, RMSprop):
        return RMSpropRule(h["alpha"], h["eps"], exact=exact)
    return Optimizer(exact)


def state_copies(spec: GD | Momentum | Nesterov | Adam | RMSprop) -> int:
    """Target-sized tensors an optimizer keeps, for the memory guard."""
    return {"gd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "rmsprop": 1}[spec.name]

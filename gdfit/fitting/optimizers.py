"""Update rules, op for op as torch.optim's single-tensor code (foreach=False, no weight decay).

A setting is a float when every run shares it: then each update makes exactly torch.optim's calls
(`add_(g, alpha=-lr)`, `addcdiv_`, `lerp_`), so a single run equals torch.optim bit for bit. In a
sweep, a setting that differs between runs is a [K, 1, ...] float64 tensor, and each call has a
tensor form that rounds as torch rounds the Python float: some kernels compute a float setting in
float32 for half tensors (`mul_`, `addcmul_`, `addcdiv_`, `lerp_`, `/`), others round it to the
tensor's own dtype first (`add_` with alpha, `add_` of a constant). Tests hold sweeps to single runs.
"""

from __future__ import annotations

from typing import Union

from gdfit.lazy import torch

from gdfit.config import GD, Adam, Momentum, Nesterov, RMSprop
from gdfit.fitting.models import Params

Setting = Union[float, "torch.Tensor"]
HALF = ("torch.float16", "torch.bfloat16")  # by name: reading torch's here would load it at import


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type a kernel computes a Python float setting in, for tensors of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as(value: Setting, p: torch.Tensor) -> Setting:
    """A setting as kernels that compute in float32 for half tensors hold it."""
    return value.to(compute_dtype(p.dtype)) if isinstance(value, torch.Tensor) else value


def _own(value: Setting, p: torch.Tensor) -> Setting:
    """A setting as kernels that round it to the tensor's dtype first hold it."""
    return value.to(p.dtype) if isinstance(value, torch.Tensor) else value


def scale_(t: torch.Tensor, factor: Setting) -> torch.Tensor:
    """t *= factor, rounded as `t.mul_(float)` rounds."""
    return t.mul_(_as(factor, t))


def times(t: torch.Tensor, factor: Setting) -> torch.Tensor:
    """factor * t as a new tensor of t's dtype, rounded as `float * t` rounds."""
    return (t * _as(factor, t)).to(t.dtype)


def divided(t: torch.Tensor, divisor: Setting) -> torch.Tensor:
    """t / divisor as a new tensor of t's dtype, rounded as `t / float` rounds."""
    return (t / _as(divisor, t)).to(t.dtype)


def add_constant_(t: torch.Tensor, value: Setting) -> torch.Tensor:
    """t += value, as `t.add_(float)`."""
    return t.add_(_own(value, t))


def add_scaled_(p: torch.Tensor, t: torch.Tensor, alpha: Setting) -> torch.Tensor:
    """p += alpha * t, as `p.add_(t, alpha=alpha)` (one fused multiply-add)."""
    if isinstance(alpha, torch.Tensor):
        return p.addcmul_(t, _own(alpha, p))
    return p.add_(t, alpha=alpha)


def lerp_(p: torch.Tensor, end: torch.Tensor, weight: Setting) -> torch.Tensor:
    """p += weight * (end - p), as `p.lerp_(end, float)`."""
    if isinstance(weight, torch.Tensor) and str(p.dtype) in HALF:
        return p.copy_(p.float().lerp_(end.float(), _as(weight, p)))
    return p.lerp_(end, _own(weight, p))


def add_product_(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Setting) -> torch.Tensor:
    """p += value * a * b, as `p.addcmul_(a, b, value=value)`."""
    if isinstance(value, torch.Tensor):
        return p.addcmul_(a * _as(value, a), b)
    return p.addcmul_(a, b, value=value)


def add_quotient_(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Setting) -> torch.Tensor:
    """p += value * a / b, as `p.addcdiv_(a, b, value=value)`."""
    if isinstance(value, torch.Tensor):
        return p.addcdiv_(a * _as(value, a), b)
    return p.addcdiv_(a, b, value=value)


class Optimizer:
    """The tutorial's gd: `x = x - lr * x.grad` (a multiply, then a subtraction)."""

    name = "gd"

    def __init__(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def step(self, params: Params, grads: Params, lr: Setting, k: int) -> None:
        """Apply update number k (1-based) to every parameter, in place."""
        for name, p in params.items():
            self.update(p, grads[name], lr, k, self.state.setdefault(name, {}))

    def update(self, p: torch.Tensor, g: torch.Tensor, lr: Setting, k: int, state: dict) -> None:
        p.sub_(times(g, lr))

    def state_copies(self) -> int:
        """Parameter-sized tensors of state, for the memory estimate."""
        return 0

    def temporaries(self) -> int:
        """Parameter-sized tensors one update allocates at once (here lr * grad)."""
        return 1


class SGD(Optimizer):
    """torch.optim.SGD with momentum (and nesterov). momentum = 0 skips the buffer, as torch does."""

    def __init__(self, momentum: Setting, dampening: Setting = 0.0, nesterov: bool = False) -> None:
        super().__init__()
        self.name = "nesterov" if nesterov else "momentum"
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov

    def update(self, p, g, lr, k, state):
        momentum = self.momentum
        if isinstance(momentum, float) and momentum == 0:
            add_scaled_(p, g, -lr)
            return
        if "buf" not in state:
            state["buf"] = buf = g.clone()
        else:
            buf = state["buf"]
            add_scaled_(scale_(buf, momentum), g, 1 - self.dampening)
        if self.nesterov:
            direction = add_scaled_(g.clone(), buf, momentum)
        elif isinstance(momentum, torch.Tensor):  # runs with momentum 0 step along g, as torch's do
            direction = torch.where(momentum == 0, g, buf)
        else:
            direction = buf
        add_scaled_(p, direction, -lr)

    def state_copies(self) -> int:
        return 1


class AdamRule(Optimizer):
    """torch.optim.Adam (amsgrad off): bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, beta1: Setting, beta2: Setting, eps: Setting) -> None:
        super().__init__()
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def update(self, p, g, lr, k, state):
        if "m" not in state:
            state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
        m, v = state["m"], state["v"]
        lerp_(m, g, 1 - self.beta1)
        add_product_(scale_(v, self.beta2), g, g, 1 - self.beta2)
        step_size = lr / (1 - self.beta1**k)
        correction2_sqrt = (1 - self.beta2**k) ** 0.5
        denom = add_constant_(divided(v.sqrt(), correction2_sqrt), self.eps)
        add_quotient_(p, m, denom, -step_size)

    def state_copies(self) -> int:
        return 2

    def temporaries(self) -> int:
        return 2  # sqrt(v), then its quotient


class RMSpropRule(Optimizer):
    """torch.optim.RMSprop (not centered, no momentum)."""

    name = "rmsprop"

    def __init__(self, alpha: Setting, eps: Setting) -> None:
        super().__init__()
        self.alpha, self.eps = alpha, eps

    def update(self, p, g, lr, k, state):
        if "v" not in state:
            state["v"] = torch.zeros_like(p)
        v = state["v"]
        add_product_(scale_(v, self.alpha), g, g, 1 - self.alpha)
        avg = add_constant_(v.sqrt(), self.eps)
        add_quotient_(p, g, avg, -lr)

    def state_copies(self) -> int:
        return 1


def batchable(spec: GD | Momentum | Nesterov | Adam | RMSprop, dtype: str) -> set[str]:
    """Settings whose per-run tensor form rounds exactly as the float does, so runs that differ in
    them can share a batch and still equal their single runs bit for bit (tests/engine/test_loop.py).
    `add_` with a tensor alpha on small half tensors, and `lerp_` with a tensor weight in betas'
    bias corrections, do not; runs differing there go to separate batches."""
    if isinstance(spec, (Momentum, Nesterov)):
        return set() if dtype in ("float16", "bfloat16") else {"learning_rate", "momentum", "dampening"}
    if isinstance(spec, Adam):
        return {"learning_rate", "eps"}
    if isinstance(spec, RMSprop):
        return {"learning_rate", "alpha", "eps"}
    return {"learning_rate"}


def make_optimizer(spec: GD | Momentum | Nesterov | Adam | RMSprop, varying: dict[str, Setting] | None = None) -> Optimizer:
    """The update rule for a config's `optimizer:`; `varying` holds settings that differ per run."""
    h = {**spec.model_dump(), **(varying or {})}
    if isinstance(spec, Momentum):
        return SGD(h["momentum"], h["dampening"])
    if isinstance(spec, Nesterov):
        return SGD(h["momentum"], 0.0, nesterov=True)
    if isinstance(spec, Adam):
        return AdamRule(h.get("beta1", spec.betas[0]), h.get("beta2", spec.betas[1]), h["eps"])
    if isinstance(spec, RMSprop):
        return RMSpropRule(h["alpha"], h["eps"])
    return Optimizer()

"""The built-in losses: each run's value and gradient, computed with the operations torch uses.

`value` is what `torch.nn.functional` returns with mean reduction, per run. `grad` is what
`loss.backward()` leaves in `x.grad`, written out from torch's own backward kernels (the same
roundings: the mean's 1/n or 2/n is first rounded to the tensor's dtype). Tensors carry a leading
run dimension; each run's mean is over its own elements. Tests hold both to autograd, bit for bit.
"""

from __future__ import annotations

from typing import Callable

from gdfit.lazy import torch

from gdfit.config import L1, MSE, Huber, SmoothL1, SoftL1, Cauchy, Arctan

Functional = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def _per_run_mean(elementwise: torch.Tensor) -> torch.Tensor:
    """[K, ...] -> [K], the mean over each run's elements (torch's `mean` reduction)."""
    return elementwise.flatten(1).mean(1)


def rounded(value: float, dtype: torch.dtype) -> float:
    """A constant as a backward kernel holds it: rounded to the tensor's dtype."""
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))


def _backward(kernel, pred: torch.Tensor, target: torch.Tensor, numel: int, width: float,
              half_in_float: bool = False) -> torch.Tensor:
    """torch's own backward kernel, per run. With reduction "none" and grad_output 1/n it makes
    the same roundings as the "mean" reduction does over one run (norm * x * 1 = 1 * x * norm).
    `half_in_float`: the kernel's float16/bfloat16 path works in float32 with an unrounded norm."""
    dtype = pred.dtype
    if half_in_float and dtype in (torch.float16, torch.bfloat16):
        pred, target = pred.float(), target.float()
    norm = torch.tensor(rounded(1.0 / numel, pred.dtype), dtype=pred.dtype, device=pred.device)
    return kernel(norm, pred, target.expand_as(pred), 0, width).to(dtype)


class Loss:
    """A mean-reduced elementwise loss of prediction against target."""

    name = "loss"
    temporaries = 1  # target-sized tensors its value or gradient allocates at once

    def __init__(self, numel: int) -> None:
        self.numel = numel  # elements per run: the mean's denominator

    def value(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each run, shape [K], in pred's dtype."""
        return _per_run_mean(self.functional(reduction="none")(pred, target.expand_as(pred)))

    def grad(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d loss / d pred for each run, same shape as pred."""
        raise NotImplementedError

    def functional(self, reduction: str = "mean") -> Functional:
        """The torch.nn.functional call, as the tutorial's literal loop makes it."""
        raise NotImplementedError


class MeanSquared(Loss):
    name = "mse"

    def grad(self, pred, target):
        # mse_loss_backward: (2/n) * (x - t) * grad_output, with grad_output = 1
        return torch.sub(pred, target).mul_(rounded(2.0 / self.numel, pred.dtype))

    def functional(self, reduction="mean"):
        F = torch.nn.functional
        return lambda x, t: F.mse_loss(x, t, reduction=reduction)


class Absolute(Loss):
    name = "l1"
    temporaries = 2  # (x - t).abs() and its mean's input are both alive

    def grad(self, pred, target):
        # l1_loss is (x - t).abs().mean(): mean's backward gives 1/n, abs's multiplies by sgn
        return torch.sub(pred, target).sgn_().mul_(rounded(1.0 / self.numel, pred.dtype))

    def functional(self, reduction="mean"):
        F = torch.nn.functional
        return lambda x, t: F.l1_loss(x, t, reduction=reduction)


class HuberLoss(Loss):
    name = "huber"

    def __init__(self, numel: int, delta: float) -> None:
        super().__init__(numel)
        self.delta = delta

    def grad(self, pred, target):
        return _backward(torch.ops.aten.huber_loss_backward, pred, target, self.numel, self.delta)

    def functional(self, reduction="mean"):
        F = torch.nn.functional
        return lambda x, t: F.huber_loss(x, t, reduction=reduction, delta=self.delta)


class SmoothL1Loss(Loss):
    """Huber with delta = beta, divided by beta."""

    name = "smooth_l1"

    def __init__(self, numel: int, beta: float) -> None:
        super().__init__(numel)
        self.beta = beta

    def grad(self, pred, target):
        return _backward(torch.ops.aten.smooth_l1_loss_backward, pred, target, self.numel, self.beta,
                         half_in_float=True)

    def functional(self, reduction="mean"):
        F = torch.nn.functional
        return lambda x, t: F.smooth_l1_loss(x, t, reduction=reduction, beta=self.beta)


class Robust(Loss):
    """One of scipy's robust losses (soft_l1, cauchy, arctan; huber with f_scale), for lm only:
    lm minimises its cost through scaled residuals (gdfit.fitting.robust). The value is the
    cost's mean, sum f_scale^2 rho((r / f_scale)^2) / n, which is mse's for rho(z) = z."""

    def __init__(self, numel: int, spec) -> None:
        super().__init__(numel)
        from gdfit.fitting.robust import robust_loss

        self.robust = robust_loss(spec)
        self.name = spec.name

    def value(self, pred, target):
        r = torch.sub(pred, target).flatten(1).detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(self.robust.cost(r) / self.numel).to(dtype=pred.dtype, device=pred.device)


def make_loss(spec: MSE | L1 | Huber | SmoothL1 | SoftL1 | Cauchy | Arctan, numel: int, for_lm: bool = False) -> Loss:
    """The Loss for a config's `loss:` entry (with `for_lm`, huber is scipy's robust huber)."""
    if isinstance(spec, (SoftL1, Cauchy, Arctan)) or (for_lm and isinstance(spec, Huber)):
        return Robust(numel, spec)
    if isinstance(spec, Huber):
        return HuberLoss(numel, spec.scale)
    if isinstance(spec, SmoothL1):
        return SmoothL1Loss(numel, spec.beta)
    if isinstance(spec, L1):
        return Absolute(numel)
    return MeanSquared(numel)

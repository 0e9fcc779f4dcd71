"""How one update is made: each stepper applies update k to K runs and returns their new losses.

- `ClosedForm` (the default engine): the loss's gradient as torch's backward kernel computes it,
  then the optimizer's update as torch.optim makes it; no graph is built.
- `GdOnMse`: the same arithmetic for gd on mse of the identity model, in cache-sized blocks, so
  that x and the target cross memory once per update however large they are.
- `Autograd` (`engine: autograd`): the tutorial's literal loop, `loss.backward()` and
  `x = x - lr * x.grad; x.detach_(); x.requires_grad_(True)`.

`moving` is None when every run moves, or a [K, 1, ...] mask: runs outside it have stopped, and
their parameters must not change by a single bit, so their losses stay what they stopped at.
"""

from __future__ import annotations

import math

from gdfit.lazy import torch

from gdfit.fitting.losses import Loss, rounded
from gdfit.fitting.models import Model, Params
from gdfit.fitting.optimizers import Optimizer, Setting, compute_dtype

BLOCK_BYTES = 1 << 22  # a block of each run's elements that stays in the CPU's cache between its operations


def _hold(params: Params, kept: Params | None, moving: torch.Tensor | None) -> None:
    """Put back the parameters of runs that have stopped."""
    if moving is not None and kept is not None:
        for name, p in params.items():
            p.copy_(torch.where(moving, p, kept[name]))


def _kept(params: Params, moving: torch.Tensor | None) -> Params | None:
    return {name: p.clone() for name, p in params.items()} if moving is not None else None


def objective(model: Model, values: torch.Tensor, params: Params) -> torch.Tensor:
    """The loss of each run plus the model's regulariser, if it has one (lowrank's l2)."""
    penalty = getattr(model, "penalty", None)
    extra = penalty(params) if penalty is not None else None
    return values if extra is None else values + extra


def _norm(grads: Params) -> torch.Tensor:
    """Run 0's gradient norm over all its parameters."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g[0]) for g in grads.values()]))


def _per_run(params: Params, reduce) -> torch.Tensor:
    """A per-run norm over every parameter: [K]."""
    return reduce(torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], 1))


def motion(before: Params, after: Params, grads: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What xtol and gtol read of an update, per run: |step|, |parameters| and max |gradient|."""
    step = {name: after[name] - before[name] for name in after}
    norm = lambda flat: torch.linalg.vector_norm(flat.double(), dim=1)  # noqa: E731
    return _per_run(step, norm), _per_run(after, norm), _per_run(grads, lambda f: f.double().abs().amax(1))


class ClosedForm:
    """Closed-form gradients of the built-in losses and torch.optim's updates, under no graph."""

    def __init__(self, model: Model, loss: Loss, target: torch.Tensor, params: Params, optimizer: Optimizer,
                 track: bool = False) -> None:
        self.model, self.loss, self.target = model, loss, target
        self.params, self.optimizer = params, optimizer
        self.grads: Params = {}
        self.track, self.motion = track, None  # track: keep what xtol and gtol read
        self.prediction: torch.Tensor | None = None  # the one `losses` made, which the next update starts from

    def losses(self) -> torch.Tensor:
        self.prediction = self.model.predict(self.params)
        return objective(self.model, self.loss.value(self.prediction, self.target), self.params)

    def _grad_of_prediction(self) -> torch.Tensor:
        # the parameters have not changed since `losses`: its prediction saves a model evaluation
        # (for lowrank, one of the update's four m x n x r products)
        prediction = self.prediction if self.prediction is not None else self.model.predict(self.params)
        self.prediction = None
        return self.loss.grad(prediction, self.target)

    def advance(self, k: int, lr: Setting, moving: torch.Tensor | None) -> torch.Tensor:
        self.grads = self.model.parameter_grads(self.params, self._grad_of_prediction())
        kept = _kept(self.params, moving)
        before = {n: p.clone() for n, p in self.params.items()} if self.track else None
        self.optimizer.step(self.params, self.grads, lr, k)
        self.model.constrain_(self.params)
        _hold(self.params, kept, moving)
        if before is not None:
            self.motion = motion(before, self.params, self.grads)
        return self.losses()

    def grad_norm(self) -> torch.Tensor:
        return _norm(self.grads)


class GdOnMse:
    """gd on mse of x itself: per block, d = x - t; step = lr * (2/n * d); x -= step; then the
    loss of the new x. The same operations in the same order as the tutorial's loop, element by
    element; a problem larger than one block sums its loss block by block (in float64)."""

    def __init__(self, target: torch.Tensor, params: Params) -> None:
        x = params["x"]
        self.params, self.x = params, x.view(x.shape[0], -1)
        self.t = target.reshape(1, -1)
        n = self.t.shape[1]
        # settings as 0-dim tensors in the type the kernels compute a Python float in: the same
        # products, without converting a Python float on every call (a third of a 3x3 update)
        self.compute = compute_dtype(x.dtype)
        self.scale_value = rounded(2.0 / n, x.dtype)
        self.scale = torch.tensor(self.scale_value, dtype=self.compute, device=x.device)
        self.count = torch.tensor(n, dtype=self.compute, device=x.device)
        self.on_cpu = x.device.type == "cpu"
        # a GPU gains nothing from blocks (its caches are small) and pays a launch per operation
        whole = x.device.type != "cpu"
        self.block = n if whole else max(1, min(n, BLOCK_BYTES // x.element_size()))
        self.buffer = torch.empty(x.shape[0], self.block, dtype=x.dtype, device=x.device)
        # views made once: x changes in place, and a small problem's update is a few tensor
        # operations, each of which costs about what slicing three views would
        self.blocks = [(self.x[:, start:start + self.block], self.t[:, start:start + self.block],
                        self.buffer[:, : min(n, start + self.block) - start]) for start in range(0, n, self.block)]
        self.previous: torch.Tensor | None = None
        self.lr_given: Setting | None = None  # the rate as given (a float, or per-run rates), and as
        self.lr_used: torch.Tensor | None = None  # the update uses it (a 0-dim tensor, or a column)

    def losses(self) -> torch.Tensor:
        self.previous = self._losses(step=None)
        return self.previous

    def advance(self, k: int, lr: Setting, moving: torch.Tensor | None) -> torch.Tensor:
        if lr is not self.lr_given:  # a constant schedule hands over the same object every update
            self.lr_given = lr
            self.lr_used = (lr.view(-1, 1).to(self.compute) if isinstance(lr, torch.Tensor)
                            else torch.tensor(lr, dtype=self.compute, device=self.x.device))
        lr = self.lr_used
        losses = self._losses(step=(lr, None if moving is None else moving.view(-1, 1)))
        self.grad_from, self.previous = self.previous, losses
        return losses

    def _losses(self, step) -> torch.Tensor:
        whole = len(self.blocks) == 1
        total = None
        for xs, ts, buf in self.blocks:
            if step is not None:
                lr, moving = step
                torch.sub(xs, ts, out=buf).mul_(self.scale)  # x.grad, as mse_loss_backward makes it
                buf.mul_(lr)  # lr * x.grad
                if moving is not None:
                    buf.masked_fill_(~moving, 0)
                xs.sub_(buf)
            torch.sub(xs, ts, out=buf).square_()
            if whole:
                return self._mean(buf)
            # summed in the block's compute type, then across blocks in float64: a float64 sum of
            # each element costs four times a float32 one
            part = buf.sum(1, dtype=self.compute).double()
            total = part if total is None else total.add_(part)
        return total.div_(self.t.shape[1]).to(self.x.dtype)

    def _mean(self, buf: torch.Tensor) -> torch.Tensor:
        """Each run's mean, exactly as F.mse_loss's reduction. On the CPU torch's mean is a sum in
        the compute type divided by n, which costs a sixth of `mean` on a 3x3 problem."""
        if not self.on_cpu:  # CUDA's mean multiplies by 1/n instead
            return buf.mean(1)
        mean = torch.sum(buf, 1, dtype=self.compute).div_(self.count)
        return mean if self.compute == buf.dtype else mean.to(buf.dtype)

    def grad_norm(self) -> torch.Tensor | float:
        # |2/n (x - t)| = 2/n sqrt(n loss) for the loss before the update; on the CPU reading the
        # loss costs less than three tensor operations, elsewhere it would wait for the device
        if self.on_cpu:  # run 0's loss as a float, without a view to index it
            previous = self.grad_from.item() if self.grad_from.numel() == 1 else float(self.grad_from[0])
            return math.sqrt(self.t.shape[1] * previous) * self.scale_value
        return self.grad_from[0].mul(self.t.shape[1]).sqrt_().mul_(self.scale_value)


class Autograd:
    """The tutorial's loop, literally: a graph per update and `loss.backward()`."""

    def __init__(self, model: Model, loss: Loss, target: torch.Tensor, params: Params, optimizer: Optimizer,
                 track: bool = False) -> None:
        self.model, self.target, self.optimizer = model, target, optimizer
        self.fn = loss.functional()
        self.params = {name: p.detach().requires_grad_(True) for name, p in params.items()}  # make_stepper copied
        self.current: torch.Tensor | None = None
        self.grads: Params = {}
        self.track, self.motion = track, None

    def losses(self) -> torch.Tensor:
        with torch.enable_grad():
            pred = self.model.predict(self.params)
            values = torch.stack([self.fn(pred[i], self.target) for i in range(pred.shape[0])])
            self.current = objective(self.model, values, self.params)
        return self.current.detach()

    def advance(self, k: int, lr: Setting, moving: torch.Tensor | None) -> torch.Tensor:
        if self.current is None:
            self.losses()
        self.current.sum().backward()
        self.grads = {name: p.grad for name, p in self.params.items()}
        kept = _kept({n: p.detach() for n, p in self.params.items()}, moving)
        before = {n: p.detach().clone() for n, p in self.params.items()} if self.track else None
        if self.optimizer.name == "gd" and not isinstance(lr, torch.Tensor):
            for name, x in self.params.items():
                x = x - lr * x.grad
                x.detach_()
                x.requires_grad_(True)
                self.params[name] = x
        else:  # torch.optim's update on the autograd gradient
            with torch.no_grad():
                plain = {n: p.detach().clone() for n, p in self.params.items()}
                self.optimizer.step(plain, self.grads, lr, k)
            self.params = {n: p.requires_grad_(True) for n, p in plain.items()}
        with torch.no_grad():
            plain = {n: p.detach() for n, p in self.params.items()}
            self.model.constrain_(plain)
            _hold(plain, kept, moving)
            if before is not None:
                self.motion = motion(before, plain, self.grads)
        return self.losses()

    def grad_norm(self) -> torch.Tensor:
        return _norm(self.grads)

"""Levenberg-Marquardt for least squares, on K runs at once, with the Jacobian from autograd.

After MINPACK's lmder (Moré, 1978): the step solves (J^T J + mu D^2) h = -J^T r, where D holds
the largest column norms of J seen so far, so the method is invariant to the parameters' scales.
The step is found as the least-squares solution of [J; sqrt(mu) D] h = [-r; 0] (a QR solve, never
J^T J, which would square the condition number). The damping mu follows Nielsen (1999): after a
step that lowers the loss, mu *= max(1/3, 1 - (2 rho - 1)^3), where rho is the actual reduction
over the predicted one; after a step that does not, mu grows by a doubling factor and the step is
tried again. One update is one iteration: one Jacobian, and as many trials as it takes to lower
the loss (at most MAX_TRIALS; a run that finds none stays where it is).
"""

from __future__ import annotations

import math

import torch

from gdfit.models import Model, Params

MAX_TRIALS = 40  # damping grows 2, 4, 8, ... per failed trial: by 2^40 any step is negligible


def jacobian(fn, flat: torch.Tensor) -> torch.Tensor:
    """d fn / d flat for K runs, [K, n, P], by forward-mode autograd in one pass: each run is
    repeated P times, copy j carrying the tangent e_j, so the batch's tangent output holds J's
    columns. (P is small next to n; torch.func's jacfwd gives the same numbers but its first call
    costs over a second.)"""
    import torch.autograd.forward_ad as fwAD

    K, P = flat.shape
    primal = flat.repeat_interleave(P, 0)
    tangent = torch.eye(P, dtype=flat.dtype, device=flat.device).repeat(K, 1)
    with fwAD.dual_level():
        out = fn(fwAD.make_dual(primal, tangent))
        columns = fwAD.unpack_dual(out).tangent
    if columns is None:  # the output does not depend on the parameters
        columns = torch.zeros(K * P, out.shape[-1], dtype=flat.dtype, device=flat.device)
    return columns.reshape(K, P, -1).transpose(1, 2)


class Packing:
    """All of a model's parameters for K runs as one [K, P] matrix, and back."""

    def __init__(self, params: Params) -> None:
        self.shapes = {name: p.shape[1:] for name, p in params.items()}
        self.sizes = [math.prod(shape) for shape in self.shapes.values()]

    def pack(self, params: Params) -> torch.Tensor:
        return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], 1)

    def unpack(self, flat: torch.Tensor) -> Params:
        parts = torch.split(flat, self.sizes, 1)
        return {name: part.reshape(flat.shape[0], *shape) for (name, shape), part in zip(self.shapes.items(), parts)}


class LevenbergMarquardt:
    """The stepper for `optimizer: lm` (mse only: it minimises the sum of squared residuals)."""

    def __init__(self, model: Model, loss, target: torch.Tensor, params: Params, damping: float) -> None:
        self.model, self.loss, self.target, self.params = model, loss, target, params
        self.packing = Packing(params)
        keep = getattr(loss, "keep", None)  # a masked loss: the entries it keeps
        self.kept = keep.reshape(-1).nonzero().squeeze(1) if keep is not None else None
        K, P = self.packing.pack(params).shape
        like = dict(dtype=params[next(iter(params))].dtype, device=target.device)
        self.optimizer = _State({"mu": torch.full((K,), damping, **like), "nu": torch.full((K,), 2.0, **like),
                                 "scale": torch.zeros(K, P, **like)})
        self.motion = None

    def _residuals(self, flat: torch.Tensor) -> torch.Tensor:
        """prediction - target, [K, n]: over the entries the loss keeps (a matrix model's fitted
        ones), then sqrt(l2) x the parameters when the model has an l2 term."""
        r = (self.model.predict(self.packing.unpack(flat)) - self.target).flatten(1)
        if self.kept is not None:
            r = r.index_select(1, self.kept)
        extra = self.model.penalty_residuals(flat) if hasattr(self.model, "penalty_residuals") else None
        return r if extra is None else torch.cat([r, extra], 1)

    def _jacobian(self, flat: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "pointwise", False):
            return self.model.jacobian(self.packing.unpack(flat))
        return jacobian(self._residuals, flat)

    def losses(self) -> torch.Tensor:
        return self.loss.value(self.model.predict(self.params), self.target)

    def advance(self, k: int, lr, moving: torch.Tensor | None) -> torch.Tensor:
        state = self.optimizer.state["theta"]
        mu, nu, scale = state["mu"], state["nu"], state["scale"]
        flat = self.packing.pack(self.params)
        r = self._residuals(flat)
        J = self._jacobian(flat)
        cost = r.square().sum(1)  # 2F, the sum of squares
        g = torch.einsum("knp,kn->kp", J, r)
        torch.maximum(scale, torch.linalg.vector_norm(J, dim=1), out=scale)
        D = torch.where(scale > 0, scale, torch.ones_like(scale))
        done = torch.zeros_like(cost, dtype=torch.bool) if moving is None else ~moving.flatten()
        start = flat.clone()
        for _ in range(MAX_TRIALS):
            h = self._step(J, r, D, mu)
            trial = self._inside(flat + h)
            h = trial - flat
            new_cost = self._residuals(trial).square().sum(1)
            # predicted reduction of the sum of squares by the linear model: -(2 h.g + |J h|^2)
            predicted = -(2 * (h * g).sum(1) + torch.einsum("knp,kp->kn", J, h).square().sum(1))
            actual = cost - new_cost
            better = ~done & torch.isfinite(new_cost) & (actual > 0) & (predicted > 0)
            rho = actual / torch.where(predicted > 0, predicted, torch.ones_like(predicted))
            flat = torch.where(better.unsqueeze(1), trial, flat)
            mu.copy_(torch.where(better, mu * torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3), mu))
            worse = ~done & ~better
            mu.copy_(torch.where(worse, mu * nu, mu))
            nu.copy_(torch.where(better, torch.full_like(nu, 2.0), torch.where(worse, nu * 2, nu)))
            done |= better
            if bool(done.all()):
                break
        new = self.packing.unpack(flat)
        for name, p in self.params.items():
            p.copy_(new[name])
        n = r.shape[1]
        # stop rules' view: the step and the parameters scaled by D (MINPACK's xtol), and the
        # largest element of mse's gradient, (2/n) J^T r
        self.motion = (torch.linalg.vector_norm(D * (flat - start), dim=1),
                       torch.linalg.vector_norm(D * flat, dim=1),
                       g.abs().amax(1) * (2.0 / n))
        self.norm = torch.linalg.vector_norm(g[0]) * (2.0 / n)
        # ftol's second half, after MINPACK: the reduction the linear model still promises, for the
        # undamped (Gauss-Newton) step from the start of this update: |P_J r|^2 / |r|^2. A heavily
        # damped step can lower the loss by little while much more is to be had.
        gauss_newton = torch.linalg.lstsq(J, -r.unsqueeze(2)).solution
        promised = torch.einsum("knp,kpo->kn", J, gauss_newton).square().sum(1)
        self.promised = torch.where(cost > 0, promised / cost, torch.zeros_like(cost))
        return self.losses()

    def _step(self, J: torch.Tensor, r: torch.Tensor, D: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """argmin |J h + r|^2 + mu |D h|^2 for each run, by QR on the stacked system."""
        K, P = D.shape
        damping = torch.diag_embed(mu.sqrt().unsqueeze(1) * D)  # [K, P, P]
        A = torch.cat([J, damping], 1)
        b = torch.cat([-r, torch.zeros(K, P, dtype=r.dtype, device=r.device)], 1).unsqueeze(2)
        return torch.linalg.lstsq(A, b).solution.squeeze(2)

    def _inside(self, flat: torch.Tensor) -> torch.Tensor:
        """The trial point projected into the parameters' bounds."""
        params = self.packing.unpack(flat.clone())
        self.model.constrain_(params)
        return self.packing.pack(params)

    def grad_norm(self) -> torch.Tensor:
        """Run 0's |d loss / d parameters| at the start of its last update."""
        return self.norm


class _State:
    """Looks like an optimizer's state to checkpoints: the damping, its factor and the scales."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = {"theta": state}

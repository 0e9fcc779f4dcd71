"""Levenberg-Marquardt for least squares, on K runs at once, with the Jacobian from autograd.

The step solves (J^T J + mu D^2) h = -J^T r, where D holds the largest column norms of J seen so
far (MINPACK's scaling: the method does not care how the parameters are scaled). J D^-1 is
decomposed once per update (an SVD in float64 numpy; J^T J is never formed, which would square the
condition number), so every damped trial step is a closed form. The damping follows Nielsen (1999):
after a step that lowers the loss, mu *= max(1/3, 1 - (2 rho - 1)^3), where rho is the actual over
the predicted reduction; after one that does not, mu grows by a doubling factor and the step is
tried again. Each step carries geodesic acceleration (Transtrum and Sethna, 2012). One update is
one iteration: one Jacobian, and as many trials as it takes to lower the loss (at most MAX_TRIALS;
a run that finds none stays where it is).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gdfit.models import Model, Params

PROBE = 0.1  # the finite-difference step along v, as a fraction of v (Transtrum's h)
MAX_ACCELERATION = 0.75  # the largest 2|a|/|v| a step may have (Transtrum's alpha)
MAX_DAMPING = 1e32  # damping relative to the scaled curvature; MINPACK gives up far below this
MAX_TRIALS = 40


def jacobian(fn, flat: torch.Tensor) -> torch.Tensor:
    """d fn / d flat for K runs, [K, n, P], by forward-mode autograd in one pass: each run is
    repeated P times, copy j carrying the tangent e_j, so the batch's tangent output holds J's
    columns. (P is small next to n; torch.func's jacfwd gives the same numbers but its first call
    costs over a second.)"""
    import torch.autograd.forward_ad as fwAD

    K, P = flat.shape
    primal = flat.repeat_interleave(P, 0)
    tangent = torch.eye(P, dtype=flat.dtype, device=flat.device).repeat(K, 1)
    with warnings.catch_warnings(), fwAD.dual_level():
        warnings.simplefilter("ignore")  # its first use loads torch's jvp rules, which warn about torch.jit
        out = fn(fwAD.make_dual(primal, tangent))
        columns = fwAD.unpack_dual(out).tangent
    if columns is None:  # the output does not depend on the parameters
        columns = torch.zeros(K * P, out.shape[-1], dtype=flat.dtype, device=flat.device)
    return columns.reshape(K, P, -1).transpose(1, 2)


def _cutoff(s: np.ndarray, shape) -> float:
    """Singular values at or below this are rounding: directions J does not determine."""
    return s[0] * max(shape[1:]) * np.finfo(float).eps if s.size else 0.0


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
        self.optimizer = _State({"mu": torch.full((K,), damping, dtype=torch.float64),
                                 "nu": torch.full((K,), 2.0, dtype=torch.float64),
                                 "scale": torch.zeros(K, P, dtype=torch.float64)})
        self.motion, self.stuck = None, None

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
        flat = self.packing.pack(self.params)
        r = self._residuals(flat)
        J = self._jacobian(flat)
        g = torch.einsum("knp,kn->kp", J, r)
        J = J * self._free(flat, g).unsqueeze(1)
        n = r.shape[1]
        # the small dense algebra in float64 numpy: for a few parameters it costs microseconds,
        # where torch's CPU lstsq and svd cost a fraction of a millisecond per call
        x, rn, Jn = (t.detach().cpu().double().numpy() for t in (flat, r, J))
        mu, nu, scale = (state[name].numpy() for name in ("mu", "nu", "scale"))
        np.maximum(scale, np.linalg.norm(Jn, axis=1), out=scale)
        D = np.where(scale > 0, scale, 1.0)
        runs = len(x)
        cost = np.einsum("kn,kn->k", rn, rn)  # the sum of squares
        done = np.zeros(runs, bool) if moving is None else ~moving.flatten().cpu().numpy()
        # J D^-1 = U diag(s) V^T once per update; every damped step is then a closed form
        svd = [np.linalg.svd(Jn[i] / D[i], full_matrices=False) for i in range(runs)]
        c = [U.T @ rn[i] for i, (U, _, _) in enumerate(svd)]
        start, tried = x.copy(), np.zeros(runs)
        resolution = torch.finfo(flat.dtype).eps
        for _ in range(MAX_TRIALS):
            trial, predicted = x.copy(), np.zeros(runs)
            for i in np.flatnonzero(~done):
                _, s, Vt = svd[i]
                shrink = s * s + mu[i]
                # (Js^T Js + mu I) q = -Js^T r with q = D h: q = -V (s c / (s^2 + mu))
                trial[i] = x[i] - (Vt.T @ (s * c[i] / shrink)) / D[i]
                # the linear model's reduction of the sum of squares, -(2 h.g + |J h|^2)
                predicted[i] = 2 * np.sum(s * s * c[i] ** 2 / shrink) - np.sum((s * s * c[i] / shrink) ** 2)
            trial, accepted = self._accelerate(x, trial, rn, Jn, svd, mu, D, done)
            trial = self._inside(trial)
            tried = np.where(done, tried, np.linalg.norm(D * (trial - x), axis=1))
            new_cost = self._costs(trial)
            actual = cost - new_cost
            better = ~done & np.isfinite(new_cost) & (actual > 0) & (predicted > 0) & accepted
            rho = np.clip(actual / np.where(predicted > 0, predicted, 1.0), -10.0, 10.0)  # only (0, 1] matters
            x = np.where(better[:, None], trial, x)
            worse = ~done & ~better
            # a run whose trial step is below its dtype's resolution has no step left to try:
            # nothing better lies around x at working precision (MINPACK's "xtol too small")
            spent = worse & (tried <= resolution * np.linalg.norm(D * x, axis=1))
            mu[:] = np.where(better, mu * np.maximum(1 - (2 * rho - 1) ** 3, 1 / 3), np.where(worse, mu * nu, mu))
            nu[:] = np.where(better, 2.0, np.where(worse, np.minimum(nu * 2, MAX_DAMPING), nu))
            np.minimum(mu, MAX_DAMPING, out=mu)  # past this every step is below any dtype's resolution
            done |= better | spent
            if done.all():
                break
        new = self.packing.unpack(torch.from_numpy(x).to(flat))
        for name, p in self.params.items():
            p.copy_(new[name])
        device = flat.device
        # what the stop rules read: the step and the parameters scaled by D (MINPACK's xtol test),
        # mse's largest gradient element (2/n) J^T r, and, for ftol's second half after MINPACK,
        # the reduction the Gauss-Newton step from this update's start promises, |P_J r|^2 / |r|^2:
        # a heavily damped step can lower the loss by little while much more is to be had
        # a run that found no step lowering the loss reports its last, smallest trial: as the trust
        # radius in MINPACK, it says how far around x nothing better was found
        taken = np.linalg.norm(D * (x - start), axis=1)
        # no step at all, and even at the largest damping the trial rounds back to x: nothing can move this run
        going = np.ones(runs, bool) if moving is None else moving.flatten().cpu().numpy()
        self.stuck = torch.from_numpy((taken == 0) & (tried == 0) & (mu >= MAX_DAMPING) & going).to(flat.device)
        self.motion = (torch.from_numpy(np.where(taken > 0, taken, tried)).to(device),
                       torch.from_numpy(np.linalg.norm(D * x, axis=1)).to(device),
                       g.abs().amax(1).double() * (2.0 / n))
        promised = np.array([np.sum(ci[s > _cutoff(s, Jn.shape)] ** 2) for ci, (_, s, _) in zip(c, svd)])
        self.promised = torch.from_numpy(np.where(cost > 0, promised / np.where(cost > 0, cost, 1.0), 0.0)).to(device)
        self.norm = torch.linalg.vector_norm(g[0]) * (2.0 / n)
        return self.losses()

    def _accelerate(self, x, trial, r, J, svd, mu, D, done) -> tuple[np.ndarray, np.ndarray]:
        """Geodesic acceleration (Transtrum and Sethna, 2012): the second-order correction a/2 to
        each run's step v, from the residuals' second directional derivative along v (by one
        finite difference). It lets steps follow a curved valley instead of leaving it, which is
        what takes BoxBOD from NIST's first start, and cuts Lanczos's and Bennett5's iterations
        three- to eightfold. A run whose correction is large next to v (2|a|/|v| > 0.75) does
        not take that step: its damping grows, as after a failed one."""
        velocity = trial - x
        with np.errstate(all="ignore"):  # a probe far out may overflow: then that step fails
            probe = self._rows(x + PROBE * velocity)
            second = (2 / PROBE) * ((probe - r) / PROBE - np.einsum("knp,kp->kn", J, velocity))
            accepted = np.ones(len(x), bool)
            for i in np.flatnonzero(~done):
                U, s, Vt = svd[i]
                a = -(Vt.T @ (s * (U.T @ second[i]) / (s * s + mu[i]))) / D[i]
                size = np.linalg.norm(D[i] * a) / max(np.linalg.norm(D[i] * velocity[i]), np.finfo(float).tiny)
                accepted[i] = bool(2 * size <= MAX_ACCELERATION)
                trial[i] = trial[i] + 0.5 * a
        return np.where(np.isfinite(trial), trial, x), accepted

    def _rows(self, x: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(x).to(dtype=self.target.dtype, device=self.target.device)
        return self._residuals(rows).double().cpu().numpy()

    def _costs(self, x: np.ndarray) -> np.ndarray:
        """The sum of squared residuals of each run's parameters; inf where not finite."""
        rows = torch.from_numpy(x).to(dtype=self.target.dtype, device=self.target.device)
        costs = self._residuals(rows).double().square().sum(1).cpu().numpy()
        return np.where(np.isfinite(costs), costs, np.inf)

    def _free(self, flat: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """1 for parameters free to move, 0 for those held at a bound that the descent direction
        -g pushes against: their Jacobian columns are left out, so the step solves the problem
        of the others with them fixed there (an active set), rather than being cut by projection."""
        pressed = self._inside_t(flat - torch.sign(g) * flat.abs().clamp_min(1.0)) == flat
        return (~(pressed & (g != 0))).to(flat.dtype)

    def _inside_t(self, flat: torch.Tensor) -> torch.Tensor:
        """Parameters projected into their bounds."""
        params = self.packing.unpack(flat.clone())
        self.model.constrain_(params)
        return self.packing.pack(params)

    def _inside(self, x: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(x).to(dtype=self.target.dtype, device=self.target.device)
        return self._inside_t(rows).cpu().double().numpy()

    def grad_norm(self) -> torch.Tensor:
        """Run 0's |d loss / d parameters| at the start of its last update."""
        return self.norm


class _State:
    """Looks like an optimizer's state to checkpoints: the damping, its factor and the scales."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = {"theta": state}

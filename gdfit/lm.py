"""Levenberg-Marquardt for least squares, on K runs at once, with the Jacobian from autograd.

A trust-region method after MINPACK's `lmder` (Moré, 1978). Each step solves
(J^T J + par D^2) h = -J^T r, where D holds the largest column norms of J seen so far (so the
method does not care how the parameters are scaled) and the Levenberg parameter par is the one
whose step has |D h| within 10% of the trust radius delta (par = 0 when the Gauss-Newton step is
inside). The radius starts at FACTOR |D x0| and follows the ratio rho of the actual to the
predicted reduction: it shrinks after a poor step and doubles after a good one. J D^-1 is
decomposed once per update (an SVD in float64 numpy; J^T J is never formed, which would square the
condition number), so every par and every trial step is a closed form. Each step carries geodesic
acceleration (Transtrum and Sethna, 2012). One update is one iteration: one Jacobian, and as many
trials as it takes to lower the loss (at most MAX_TRIALS; a run that finds none stays where it is).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gdfit.models import Model, Params

PROBE = 0.1  # the finite-difference step along v, as a fraction of v (Transtrum's h)
MAX_ACCELERATION = 0.75  # the largest 2|a|/|v| a step may have (Transtrum's alpha)
# the first trust radius, as a multiple of |D x0|. MINPACK suggests 0.1 to 100 (default 100); at
# 100 the first Gauss-Newton step is taken whole, which throws BoxBOD's b2 from 1 to 200, onto the
# plateau b2 -> infinity (where scipy's MINPACK ends). Measured on NIST's 54 fits and on 312 starts
# around them (README), 10 passes as many as any factor does.
FACTOR = 10.0
GOOD, POOR, ACCEPT = 0.75, 0.25, 1e-4  # MINPACK's ratio thresholds: grow delta, shrink it, take the step
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


def _damped(s: np.ndarray, c: np.ndarray, par: float, shape) -> np.ndarray:
    """w = s c / (s^2 + par): the damped step in J D^-1's right singular basis (q = D h = -V w).
    Undamped, directions J does not determine get no step (the pseudo-inverse, as MINPACK's lmpar)."""
    if par > 0:
        return s * c / (s * s + par)
    keep = s > _cutoff(s, shape)
    return np.where(keep, c / np.where(keep, s, 1.0), 0.0)


def levenberg_parameter(s: np.ndarray, c: np.ndarray, delta: float, par: float, cutoff: float) -> float:
    """MINPACK's lmpar on the SVD of J D^-1: 0 when the Gauss-Newton step has |D h| <= 1.1 delta,
    else the par whose step has |D h| within 10% of delta, by Hebden's safeguarded Newton iteration
    on 1/|D h| (at most 10 steps, starting from the last update's par)."""
    keep = s > cutoff
    gauss_newton = math.sqrt(np.sum((c[keep] / s[keep]) ** 2))
    if gauss_newton <= 1.1 * delta:
        return 0.0
    sc2 = (s * c) ** 2
    # bounds: the Newton step from par = 0 when J has full rank, and |J^T r| / delta
    low = 0.0
    if keep.all():
        low = (gauss_newton - delta) * gauss_newton ** 2 / (delta * np.sum(c * c / s ** 4))
    high = math.sqrt(np.sum(sc2)) / delta
    if high == 0:
        high = np.finfo(float).tiny / min(delta, 0.1)
    par = min(max(par, low), high)
    for _ in range(10):
        if par == 0:
            par = max(np.finfo(float).tiny, 0.001 * high)
        shrink = s * s + par
        length = math.sqrt(np.sum(sc2 / shrink ** 2))
        miss = length - delta
        if abs(miss) <= 0.1 * delta or (low == 0 and miss <= 0 and par <= np.finfo(float).tiny):
            break
        if miss > 0:
            low = max(low, par)
        else:
            high = min(high, par)
        slope = np.sum(sc2 / shrink ** 3) / length  # -d|D h| / d par
        par = max(low, par + (miss / slope) * (length / delta))
    return par


def _radius(delta, rho, actual, predicted, cost, new_cost, length, par) -> np.ndarray:
    """MINPACK's update of the trust radius from rho, per run: after a poor step it shrinks to
    0.1 to 0.5 of the step (by where the quadratic through the actual reduction peaks), after a
    good one (or a Gauss-Newton step that fitted) it becomes twice the step."""
    with np.errstate(all="ignore"):
        # the directional derivative of the cost along the step, -(|J h|^2 + par |D h|^2)
        slope = -(predicted - par * length ** 2)
        shrink = np.where(actual >= 0, 0.5, 0.5 * slope / (slope + 0.5 * actual))
        shrink = np.where(~(np.sqrt(new_cost) * 0.1 < np.sqrt(cost)) | ~(shrink >= 0.1), 0.1, shrink)
        poor = np.minimum(delta, length / 0.1) * shrink
    good = (rho >= GOOD) | ((par == 0) & (rho > POOR))
    return np.where(rho <= POOR, poor, np.where(good, 2 * length, delta))


class Packing:
    """All of a model's parameters for K runs as one [K, P] matrix, and back."""

    def __init__(self, params: Params) -> None:
        self.shapes = {name: p.shape[1:] for name, p in params.items()}
        self.sizes = [math.prod(shape) for shape in self.shapes.values()]

    def pack(self, params: Params) -> torch.Tensor:
        return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], 1)

    def unpack(self, flat: torch.Tensor) -> Params:
        if len(self.sizes) == 1:  # a curve fit's one theta: no split
            (name, shape), = self.shapes.items()
            return {name: flat.reshape(flat.shape[0], *shape)}
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
        # delta 0: not set yet (the first update sets it from the start); par: the Levenberg
        # parameter of the last step, where the next search for it begins
        self.optimizer = _State({"delta": torch.zeros(K, dtype=torch.float64),
                                 "par": torch.full((K,), damping, dtype=torch.float64),
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

    def _residuals_and_jacobian(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r and d r / d flat, [K, n, P]: a curve fit's in one forward-mode pass through its
        expression; other models' by forward-mode autograd over their residuals."""
        if hasattr(self.model, "predict_and_jacobian"):
            prediction, J = self.model.predict_and_jacobian(self.packing.unpack(flat))
            return (prediction - self.target).flatten(1), J
        return self._residuals(flat), jacobian(self._residuals, flat)

    def losses(self) -> torch.Tensor:
        return self.loss.value(self.model.predict(self.params), self.target)

    def advance(self, k: int, lr, moving: torch.Tensor | None) -> torch.Tensor:
        state = self.optimizer.state["theta"]
        flat = self.packing.pack(self.params)
        r, J = self._residuals_and_jacobian(flat)
        g = torch.einsum("knp,kn->kp", J, r)
        J = J * self._free(flat, g).unsqueeze(1)
        n = r.shape[1]
        # the small dense algebra in float64 numpy: for a few parameters it costs microseconds,
        # where torch's CPU lstsq and svd cost a fraction of a millisecond per call
        x, rn, Jn = (t.detach().cpu().double().numpy() for t in (flat, r, J))
        delta, par, scale = (state[name].numpy() for name in ("delta", "par", "scale"))
        np.maximum(scale, np.linalg.norm(Jn, axis=1), out=scale)
        D = np.where(scale > 0, scale, 1.0)
        runs = len(x)
        cost = np.einsum("kn,kn->k", rn, rn)  # the sum of squares
        done = np.zeros(runs, bool) if moving is None else ~moving.flatten().cpu().numpy()
        first = ~done & (delta == 0)  # a run's first update: its radius is set from its start
        size = np.linalg.norm(D * x, axis=1)
        delta[first] = np.where(size[first] > 0, FACTOR * size[first], FACTOR)
        # J D^-1 = U diag(s) V^T once per update; every damped step is then a closed form
        svd = [np.linalg.svd(Jn[i] / D[i], full_matrices=False) for i in range(runs)]
        c = [U.T @ rn[i] for i, (U, _, _) in enumerate(svd)]
        start, tried = x.copy(), np.zeros(runs)
        resolution = torch.finfo(flat.dtype).eps
        for _ in range(MAX_TRIALS):
            trial, predicted, length = x.copy(), np.zeros(runs), np.zeros(runs)
            for i in np.flatnonzero(~done):
                _, s, Vt = svd[i]
                par[i] = levenberg_parameter(s, c[i], delta[i], par[i], _cutoff(s, Jn.shape))
                w = _damped(s, c[i], par[i], Jn.shape)  # q = D h = -V w
                trial[i] = x[i] - (Vt.T @ w) / D[i]
                length[i] = np.linalg.norm(w)
                # the linear model's reduction of the sum of squares, |J h|^2 + 2 par |D h|^2 (MINPACK's prered)
                predicted[i] = np.sum((s * w) ** 2) + 2 * par[i] * length[i] ** 2
            trial = self._inside(self._accelerate(x, trial, rn, Jn, svd, par, D, done))
            stepped = np.linalg.norm(D * (trial - x), axis=1)
            tried = np.where(done, tried, stepped)
            delta[:] = np.where(first & ~done, np.minimum(delta, length), delta)  # MINPACK: the first radius at most the first step
            new_cost = self._costs(trial)
            actual = cost - new_cost
            with np.errstate(all="ignore"):
                rho = np.where(predicted > 0, actual / np.where(predicted > 0, predicted, 1.0), -1.0)
            rho = np.where(np.isfinite(new_cost), rho, -1.0)
            better = ~done & (rho >= ACCEPT)
            delta[:] = np.where(done, delta, _radius(delta, rho, actual, predicted, cost, new_cost, length, par))
            x = np.where(better[:, None], trial, x)
            worse = ~done & ~better
            # a run whose radius is below its dtype's resolution has no step left to try: nothing
            # better lies around x at working precision (MINPACK's "xtol too small")
            spent = worse & (delta <= resolution * size)
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
        # no step at all, and the radius is below the resolution of x: nothing can move this run
        going = np.ones(runs, bool) if moving is None else moving.flatten().cpu().numpy()
        self.stuck = torch.from_numpy((taken == 0) & (delta <= resolution * size) & going).to(flat.device)
        self.motion = (torch.from_numpy(np.where(taken > 0, taken, tried)).to(device),
                       torch.from_numpy(np.linalg.norm(D * x, axis=1)).to(device),
                       g.abs().amax(1).double() * (2.0 / n))
        promised = np.array([np.sum(ci[s > _cutoff(s, Jn.shape)] ** 2) for ci, (_, s, _) in zip(c, svd)])
        self.promised = torch.from_numpy(np.where(cost > 0, promised / np.where(cost > 0, cost, 1.0), 0.0)).to(device)
        self.norm = torch.linalg.vector_norm(g[0]) * (2.0 / n)
        return self.losses()

    def _accelerate(self, x, trial, r, J, svd, par, D, done) -> np.ndarray:
        """Geodesic acceleration (Transtrum and Sethna, 2012): the second-order correction a/2 to
        each run's step v, from the residuals' second directional derivative along v (by one
        finite difference), so that steps follow a curved valley instead of leaving it: it cuts
        the iterations on Bennett5, MGH09 and MGH17 three- to tenfold. Only where the correction
        is small next to v (2|a|/|v| <= 0.75): a larger one says the second-order model does not
        hold that far, and the plain step goes to the ratio test. (Rejecting such steps, as
        Transtrum does, shrinks the radius on MGH10 from NIST's first start until the steps turn
        towards the plateau b1 -> 0.)"""
        velocity = trial - x
        with np.errstate(all="ignore"):  # a probe far out may overflow: then that step goes without
            probe = self._rows(x + PROBE * velocity)
            second = (2 / PROBE) * ((probe - r) / PROBE - np.einsum("knp,kp->kn", J, velocity))
            for i in np.flatnonzero(~done):
                U, s, Vt = svd[i]
                a = -(Vt.T @ _damped(s, U.T @ second[i], par[i], J.shape)) / D[i]
                size = np.linalg.norm(D[i] * a) / max(np.linalg.norm(D[i] * velocity[i]), np.finfo(float).tiny)
                if 2 * size <= MAX_ACCELERATION:
                    trial[i] = trial[i] + 0.5 * a
        return np.where(np.isfinite(trial), trial, x)

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
        if not getattr(self.model, "bounded", True):
            return torch.ones_like(flat)
        pressed = self._inside_t(flat - torch.sign(g) * flat.abs().clamp_min(1.0)) == flat
        return (~(pressed & (g != 0))).to(flat.dtype)

    def _inside_t(self, flat: torch.Tensor) -> torch.Tensor:
        """Parameters projected into their bounds."""
        params = self.packing.unpack(flat.clone())
        self.model.constrain_(params)
        return self.packing.pack(params)

    def _inside(self, x: np.ndarray) -> np.ndarray:
        if not getattr(self.model, "bounded", True):
            return x
        rows = torch.from_numpy(x).to(dtype=self.target.dtype, device=self.target.device)
        return self._inside_t(rows).cpu().double().numpy()

    def grad_norm(self) -> torch.Tensor:
        """Run 0's |d loss / d parameters| at the start of its last update."""
        return self.norm


class _State:
    """Looks like an optimizer's state to checkpoints: the damping, its factor and the scales."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = {"theta": state}

"""Levenberg-Marquardt for least squares, on K runs at once, with an exact Jacobian.

A trust-region method after MINPACK's `lmder` (Moré, 1978). Each step solves
(J^T J + par D^2) h = -J^T r, where D holds the largest column norms of J seen so far (so the
method does not care how the parameters are scaled) and the Levenberg parameter par is the one
whose step has |D h| within 10% of the trust radius delta (par = 0 when the Gauss-Newton step is
inside). The radius starts at FACTOR |D x0| and follows the ratio rho of the actual to the
predicted reduction: it shrinks after a poor step and doubles after a good one. J D^-1 is
decomposed once per update (an SVD in float64 numpy; J^T J is never formed, which would square the
condition number), so every par and every trial step is a closed form (trust.py). Each step carries
geodesic acceleration (Transtrum and Sethna, 2012). One update is one iteration: one Jacobian (a
curve fit's by forward mode through its expression, derivatives.py; other models' by torch's
forward-mode autograd), and as many trials as it takes to lower the loss (at most MAX_TRIALS; a run
that finds none stays where it is).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from gdfit.lazy import torch

from gdfit.fitting.models import Model, Params
from gdfit.fitting.trust import ACCEPT, Subproblem, cutoff, new_radius, norm, rowsum

PROBE = 0.1  # the finite-difference step along v, as a fraction of v (Transtrum's h)
MAX_ACCELERATION = 0.75  # the largest 2|a|/|v| a step's correction may have (Transtrum's alpha)
# the first trust radius, as a multiple of |D x0|. MINPACK suggests 0.1 to 100 (default 100); at
# 100 the first Gauss-Newton step is taken whole, which throws BoxBOD's b2 from 1 to 200, onto the
# plateau b2 -> infinity (where scipy's MINPACK ends), and a start's exponential rates onto theirs.
# 0.1 passes the most of NIST's 54 fits and of 312 random starts around NIST's (README).
FACTOR = 0.1
MAX_TRIALS = 40
# the smallest radius an update begins with, in the dtype's resolution of |D x|. D only grows, and
# a robust loss's can grow a millionfold in one update: its scaled Jacobian is floored at sqrt(eps)
# J while every residual lies beyond f_scale (huber's s is 0 there, cauchy's and arctan's
# below 0), and is about J once one residual comes inside. The radius carried over, in the old D's
# units, then allows only a step below float32's resolution of x, which xtol (acting at float32's
# eps) reads as convergence. 16 resolutions move x by many of its roundings, so the ratio test can
# still judge the step. In float64 a radius this small follows only a step that xtol's default
# 1e-10 has already ended the run on: NIST's fits take the same steps.
RESOLVABLE = 16


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


class Packing:
    """All of a model's parameters for K runs as one [K, P] matrix, and back."""

    def __init__(self, params: Params) -> None:
        self.shapes = {name: p.shape[1:] for name, p in params.items()}
        self.sizes = [math.prod(shape) for shape in self.shapes.values()]
        # one [K, P] parameter (a curve fit's theta) in float64 on the CPU: x is a numpy view of it,
        # read and written without a torch call (they cost microseconds each, a few per update)
        self.params, self.view = params, None
        self.on_host = all(isinstance(p, np.ndarray) for p in params.values())  # a problem computed on the host
        if len(params) == 1:
            (p,) = params.values()
            if self.on_host and p.ndim == 2 and p.dtype == np.float64:
                self.view = p
            elif not self.on_host and p.dim() == 2 and p.dtype == torch.float64 and p.device.type == "cpu":
                self.view = p.detach().numpy()

    def pack(self, params: Params) -> torch.Tensor:
        return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], 1)

    def host(self, params: Params) -> np.ndarray:
        """pack, as a float64 numpy copy: what lm's algebra works on."""
        if self.view is not None and params is self.params:
            return self.view.copy()
        parts = [_float64(p).reshape(p.shape[0], -1) for p in params.values()]
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts, 1)

    def store(self, params: Params, x: np.ndarray) -> None:
        """x [K, P] (float64 numpy) into the parameters, in their dtype and on their device."""
        if self.view is not None and params is self.params:
            self.view[...] = x
            return
        if self.on_host:  # numpy's cast rounds to nearest, as copy_ does
            for p, part in zip(params.values(), np.split(x, np.cumsum(self.sizes)[:-1], 1)):
                p[...] = part.reshape(p.shape)
            return
        for (name, p), part in zip(params.items(), self.unpack(torch.from_numpy(x)).values()):
            p.copy_(part)

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
        # a curve fit is evaluated on the host in numpy, where the algebra is (hostcurve.py)
        self.curve = hasattr(model, "host")
        if self.curve:
            self.host = model.host(target.dtype)
            self.host_target = self.host.array(target)
        self.bounded = getattr(model, "bounded", True)
        self.on_host = isinstance(target, np.ndarray)  # a problem computed on the host: losses as numpy arrays
        self.resolution = float((np if self.on_host else torch).finfo(target.dtype).eps)
        self.native = self.on_host or (target.dtype == torch.float64 and target.device.type == "cpu")
        self.penalty = getattr(model, "penalty_residuals", None)  # a matrix model's sqrt(l2) x parameters
        self.robust = getattr(loss, "robust", None)  # a robust loss's rho (robust.py), None for squares
        K, P = len(next(iter(params.values()))), sum(self.packing.sizes)
        # delta 0: not set yet (the first update sets it from the start); par: the Levenberg
        # parameter of the last step, where the next search for it begins
        self.optimizer = _State({"delta": np.zeros(K), "par": np.full(K, float(damping)), "scale": np.zeros((K, P))})
        self.motion, self.stuck, self.gradient = None, None, None
        self.runs = K
        self.points = None  # the residuals' length, known from the first evaluation
        self.cost = None  # each run's sum of squares (or robust cost) at its parameters, as last evaluated
        # many fits: each run its own data rows (a [K, n] target), which a subset of runs selects
        self.per_run = self.curve and self.host_target.ndim == 2 and self.host_target.shape[0] == K > 1
        self.own_pace = False  # many fits set it: each run's trials at its own pace (advance)
        self.flight: _Flight | None = None  # own pace: every run's update, partway or ended, one row per run
        self.completed = None  # which runs ended an update in the last call (None: every moving one)
        self.pending = None  # own pace: which runs are partway through an update

    def _residuals(self, flat: torch.Tensor) -> torch.Tensor:
        """A model's prediction - target, [K, n], in torch: over the entries the loss keeps (a
        matrix model's fitted ones), then sqrt(l2) x the parameters when the model has an l2 term."""
        r = (self.model.predict(self.packing.unpack(flat)) - self.target).flatten(1)
        if self.kept is not None:
            r = r.index_select(1, self.kept)
        extra = self.penalty(flat) if self.penalty is not None else None
        return r if extra is None else torch.cat([r, extra], 1)

    def _residuals_and_jacobian(self, x: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """r and d r / d x, [m, n, P], of the runs `runs` in float64 numpy: a curve fit's in one
        forward-mode pass through its expression on the host; other models' by torch's
        forward-mode autograd (over every run)."""
        if self.curve:
            host, target = self._host_of(runs)
            prediction, J = host.predict_and_jacobian(x)
            return _float64(prediction - target), _float64(J)
        flat = self._on_device(self._all_runs(x, runs))
        return _float64(self._residuals(flat))[runs], _float64(self._jacobian(flat))[runs]

    def _jacobian(self, flat: torch.Tensor) -> torch.Tensor:
        """d residuals / d flat: from the model's own formula where it has one (lowrank's, from U
        and V), else by forward-mode autograd (which evaluates the model once per parameter)."""
        formula = getattr(self.model, "prediction_jacobian", None)
        if formula is None:
            return jacobian(self._residuals, flat)
        J = formula(flat)
        if self.kept is not None:
            J = J.index_select(1, self.kept)
        if self.penalty is not None:  # sqrt(l2) x the parameters: linear, its Jacobian is itself at I
            K, P = flat.shape
            extra = self.penalty(torch.eye(P, dtype=flat.dtype, device=flat.device))
            if extra is not None:
                J = torch.cat([J, extra.expand(K, P, P)], 1)
        return J

    def _on_device(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(dtype=self.target.dtype, device=self.target.device)

    def losses(self) -> torch.Tensor:
        if self.curve:  # as advance reports them
            r = self._rows(self.packing.host(self.params))
            with np.errstate(all="ignore"):  # a start far out overflows: the loop says so, as `diverged`
                self.cost, self.points = self._cost(r), r.shape[1]
                return self._mse(self.cost, self.points)
        return self.loss.value(self.model.predict(self.params), self.target)

    def _mse(self, cost: np.ndarray, n: int) -> torch.Tensor:
        """A curve fit's loss from each run's sum of squared residuals: mse is their mean."""
        loss = cost / n
        if self.on_host:  # in the target's dtype, as `to` rounds it
            return loss.astype(self.target.dtype, copy=False)
        loss = torch.from_numpy(loss)
        return loss if self.native else loss.to(dtype=self.target.dtype, device=self.target.device)

    def advance(self, k: int, lr, moving: torch.Tensor | None) -> torch.Tensor:
        """One update of every run still moving: one Jacobian, then trial steps until each run
        lowers its sum of squares (MINPACK's inner loop) or has no step left to try. The runs'
        algebra is one array computation over all of them (trust.py): a run's numbers do not depend
        on the others'.

        Many fits go at their own pace (`own_pace`): each call tries one step for every moving
        run, and a run whose step is refused tries its next in the next call, while the others
        go on to their next update. So a few runs that shrink their radius for many trials do not
        hold every other run waiting through those trials; `completed` says whose update ended.
        Each run's arithmetic is the same either way."""
        x = self.packing.host(self.params)
        K = len(x)
        runs = np.arange(K) if moving is None else np.flatnonzero(_host_mask(moving))
        if self.cost is None:  # each run's sum of squares (or robust cost) at its parameters
            with np.errstate(all="ignore"):
                r = self._rows(x)
                self.cost, self.points = self._cost(r), r.shape[1]
        with np.errstate(all="ignore"):  # a trial far out may overflow: its cost is inf, its step refused
            if self.own_pace:
                self._advance_at_own_pace(runs, x)
            else:
                flight = self._begin(runs, x)
                trying = np.arange(len(runs))  # positions in `runs`
                while len(trying):
                    trying = trying[~self._trial(flight, trying)]
                self._end(flight, np.arange(len(runs)), x, K)
        return self._mse(self.cost, self.points) if self.curve else self.losses()

    def _advance_at_own_pace(self, runs: np.ndarray, x: np.ndarray) -> None:
        """One trial for every moving run: those partway through an update try their next step,
        the others begin a new update. The runs' flight is one row per run, kept between calls."""
        K = len(x)
        if self.pending is None:
            self.pending = np.zeros(K, bool)
        starting = runs[~self.pending[runs]]
        if len(starting):
            begun = self._begin(starting, x)
            if self.flight is None:
                self.flight = _rows_for(begun, K)
            _place(self.flight, begun, starting)
        trying = runs  # every moving run is partway through an update, or began one
        ended = self._trial(self.flight, trying) if len(trying) else np.zeros(0, bool)
        self.pending[trying] = ~ended
        self.completed = np.zeros(K, bool)
        self.completed[trying[ended]] = True
        self._end(self.flight, trying[ended], x, K)

    def _begin(self, runs: np.ndarray, x: np.ndarray) -> "_Flight":
        """The update of the runs `runs` from their parameters in x: their Jacobian and its SVD."""
        state, cost = self.optimizer.host, self.cost
        delta, par, scale = state["delta"], state["par"], state["scale"]
        here = x[runs]
        rn, Jn = self._residuals_and_jacobian(here, runs)
        cost[runs] = self._cost(rn)  # at the step taken so far
        if self.robust is not None:  # the subproblem of the robust cost (robust.py), as least_squares
            rn, Jn = self.robust.scale(rn, Jn)
        # a run whose residuals or derivatives are not finite here (0 to a power below 1) has no
        # step to take: it ends its update at once, and reports so (`stuck` 2). Its Jacobian goes
        # in as zeros, for LAPACK's SVD does not end on an inf.
        blocked = ~(np.isfinite(Jn).all(axis=(1, 2)) & np.isfinite(rn).all(axis=1))
        if blocked.any():
            Jn, rn = np.where(blocked[:, None, None], 0.0, Jn), np.where(blocked[:, None], 0.0, rn)
        g = np.matmul(rn[:, None, :], Jn)[:, 0, :]  # J^T r
        if self.bounded:
            Jn = Jn * self._free(here, g, runs)[:, None, :]
        # |D x| in the scales so far, which a robust loss's radius follows (below)
        before = norm(np.where(scale[runs] > 0, scale[runs], 1.0) * here) if self.robust is not None else None
        scale[runs] = np.maximum(scale[runs], np.sqrt(np.vecdot(Jn, Jn, axis=1)))
        D = np.where(scale[runs] > 0, scale[runs], 1.0)
        update = _Updates(Jn, rn, D, here, delta[runs] == 0, cost[runs])
        carried = delta[runs]
        if self.robust is not None:
            # a robust loss's scales grow up to a millionfold once a first residual comes inside
            # f_scale (robust.py floors the scaled Jacobian while none is): the radius carried
            # over, in the old scales' units, grows with |D x|, or it would take some twenty
            # doublings to catch up (33 updates instead of 13 on the robust-fits page's example)
            with np.errstate(all="ignore"):
                carried = carried * np.where(before > 0, np.maximum(update.size / before, 1.0), 1.0)
        radius = np.where(update.first, np.where(update.size > 0, FACTOR * update.size, FACTOR),
                          np.maximum(carried, RESOLVABLE * self.resolution * update.size))
        # last: each run's last trial, reported if none is taken
        return _Flight(runs, update, here, here.copy(), np.full_like(here, math.nan), radius, par[runs], rn, Jn, g,
                       np.zeros(len(runs), np.int64), blocked)

    def _trial(self, f: "_Flight", rows: np.ndarray) -> np.ndarray:
        """One trial step for the flight's runs at positions `rows`; which of them ended their update."""
        update = f.update
        f.damping[rows], velocity, (length, predicted) = update.step(rows, f.radius[rows], f.damping[rows])
        from_here, runs = f.here[rows], f.runs[rows]
        # geodesic acceleration reads the residuals' curvature, which a robust loss's scaling changes
        moved = from_here + velocity if self.robust is not None else self._accelerate(
            runs, from_here, velocity, f.rn[rows], f.Jn[rows], update, rows, f.damping[rows], length)
        trial = self._inside(moved, runs)
        new_cost = self._costs(trial, runs)
        f.last[rows] = trial
        f.radius[rows], better = update.judge(rows, f.radius[rows], f.damping[rows], new_cost, length, predicted)
        taken = rows[better]
        f.here[taken], update.cost_now[taken] = trial[better], new_cost[better]
        f.tries[rows] += 1
        # a run whose radius is below its dtype's resolution has no step left to try:
        # nothing better lies around x at working precision (MINPACK's "xtol too small")
        return better | ~(f.radius[rows] > self.resolution * update.size[rows]) | (f.tries[rows] >= MAX_TRIALS) \
            | f.blocked[rows]

    def _end(self, f: "_Flight", rows: np.ndarray, x: np.ndarray, K: int) -> None:
        """The ended updates of the flight's runs at positions `rows`: their parameters, radii and
        costs kept, and reported."""
        state, runs, here, radius = self.optimizer.host, f.runs[rows], f.here[rows], f.radius[rows]
        state["delta"][runs], state["par"][runs] = radius, f.damping[rows]
        x[runs], self.cost[runs] = here, f.update.cost_now[rows]
        self.packing.store(self.params, x)
        self._report(K, runs, here, f.start[rows], f.last[rows], f.update.D[rows], f.g[rows], f.update, rows, radius,
                     f.blocked[rows])

    def _report(self, K, runs, x, start, last, D, g, update, rows, radius, blocked) -> None:
        """What the stop rules read, for every run (those not moving: nothing): the step and the
        parameters scaled by D (MINPACK's xtol test), mse's largest gradient element (2/n) J^T r,
        and, for ftol's second half after MINPACK, the reduction the Gauss-Newton step from this
        update's start promises, |P_J r|^2 / |r|^2: a heavily damped step can lower the loss by
        little while much more is to be had. A run that found no step lowering the loss reports
        its last, smallest trial: as the trust radius in MINPACK, it says how far around x nothing
        better was found."""
        taken = norm(D * (x - start))
        tried = norm(D * (last - x))
        none = taken == 0
        step, size, gradient = np.zeros(K), np.zeros(K), np.zeros(K)
        step[runs] = np.where(none, tried, taken)
        size[runs] = norm(D * x)
        gradient[runs] = np.maximum.reduce(np.abs(g), axis=1) * (2.0 / self.points)
        promised, stuck = np.zeros(K), np.zeros(K, np.int8)
        promised[runs] = update.promised(rows)
        # 1: no step at all, and the radius is below the resolution of x: nothing can move this
        # run; 2: no finite derivative to step by
        stuck[runs] = np.where(blocked, 2, none & (radius <= self.resolution * update.size[rows]))
        promised[runs[blocked]], gradient[runs[blocked]] = math.inf, math.nan  # nothing known: no tolerance is met
        # numpy arrays: the stop rules take them as they are (on the host) or to the device
        self.motion, self.promised, self.stuck = (step, size, gradient), promised, stuck
        self.gradient = (g[0], self.points) if len(runs) and runs[0] == 0 else self.gradient  # run 0's J^T r, for grad_norm

    def _accelerate(self, runs, x, velocity, r, J, update, rows, par, length) -> np.ndarray:
        """x + v + a/2: each trying run's step v with geodesic acceleration (Transtrum and
        Sethna, 2012), the second-order correction from the residuals' second directional
        derivative along v (by one finite difference), so that steps follow a curved valley
        instead of leaving it: it cuts the NIST suite's iterations from 2645 to 973 (Bennett5's
        from its second start from 450 to 23; README). Only where the correction is small next to
        v (2|a|/|v| <= 0.75): a larger one says the second-order model does not hold that far, and
        the plain step goes to the ratio test. (Rejecting such steps, as Transtrum does, shrinks the radius on MGH10 from NIST's
        first start until the steps turn towards the plateau b1 -> 0.) A probe far out may
        overflow: then that step goes without (the caller ignores numpy's floating-point errors),
        and a parameter it makes infinite stays where it is. `runs` are the runs' indices,
        `rows` their positions in `update`."""
        trial = x + velocity
        probe = self._rows(x + PROBE * velocity, runs)
        second = (2 / PROBE) * ((probe - r) / PROBE - np.matmul(J, velocity[:, :, None])[:, :, 0])
        q = update.solve(rows, second, par)  # D a = -q
        small = 2 * norm(q) <= MAX_ACCELERATION * length  # |D v| is |w|, the step's length
        trial = np.where(small[:, None], trial - 0.5 * q / update.D[rows], trial)
        return np.where(np.isfinite(trial), trial, x)

    def _costs(self, x: np.ndarray, runs: np.ndarray) -> np.ndarray:
        """The sum of squared residuals of the runs' parameters (inf or NaN where not finite:
        such a step fails the ratio test)."""
        return self._cost(self._rows(x, runs))

    def _cost(self, r: np.ndarray) -> np.ndarray:
        """Each run's sum of squared residuals, or its robust cost sum f_scale^2 rho((r / f_scale)^2)."""
        return np.vecdot(r, r) if self.robust is None else self.robust.cost(r)

    def _rows(self, x: np.ndarray, runs: np.ndarray | None = None) -> np.ndarray:
        """The residuals at x [m, P] of the runs `runs` (all when None), float64."""
        if self.curve:
            host, target = self._host_of(runs)
            return _float64(host.predict(x) - target)
        return _float64(self._residuals(self._on_device(self._all_runs(x, runs))))[self._which(runs)]

    def _host_of(self, runs: np.ndarray | None):
        """A curve's host form and target for the runs `runs`: each its own data in many fits."""
        if runs is None or not self.per_run or len(runs) == self.runs:
            return self.host, self.host_target
        return self.host.select(runs), self.host_target[runs]

    def _all_runs(self, x: np.ndarray, runs: np.ndarray | None) -> np.ndarray:
        """x of some runs inside every run's parameters, for a model evaluated on all runs at once
        (the others' rows do not change these runs' residuals: runs are independent)."""
        if runs is None or len(runs) == self.runs:
            return x
        whole = self.packing.host(self.params)
        whole[runs] = x
        return whole

    @staticmethod
    def _which(runs: np.ndarray | None):
        return slice(None) if runs is None else runs

    def _free(self, x: np.ndarray, g: np.ndarray, runs: np.ndarray) -> np.ndarray:
        """1 for parameters free to move, 0 for those held at a bound that the descent direction
        -g pushes against: their Jacobian columns are left out, so the step solves the problem
        of the others with them fixed there (an active set), rather than being cut by projection."""
        if not self.bounded:
            return np.ones_like(x)
        pressed = self._inside(x - np.sign(g) * np.maximum(np.abs(x), 1.0), runs) == x
        return (~(pressed & (g != 0))).astype(x.dtype)

    def _inside(self, x: np.ndarray, runs: np.ndarray) -> np.ndarray:
        """The runs' parameters projected into their bounds."""
        if not self.bounded:
            return x
        if self.curve:
            return self.host.inside(x)
        params = self.packing.unpack(self._on_device(self._all_runs(x, runs)).clone())
        self.model.constrain_(params)
        return self.packing.pack(params).cpu().double().numpy()[self._which(runs)]

    def grad_norm(self) -> float:
        """Run 0's |d loss / d parameters| at the start of its last update."""
        if self.gradient is None:
            return math.nan
        g, n = self.gradient
        return math.sqrt(float(g @ g)) * (2.0 / n)


def _float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return values.detach().to("cpu", torch.float64).numpy()  # any dtype (numpy has no bfloat16), any device


class _Updates:
    """The update of m runs: J D^-1 = U diag(s) V^T of each (one batched SVD), then MINPACK's
    inner loop in closed forms (trust.py). Methods take `rows`, the positions of the runs they
    are for, with their arrays in that order."""

    def __init__(self, J: np.ndarray, r: np.ndarray, D: np.ndarray, x: np.ndarray, first: np.ndarray,
                 cost: np.ndarray) -> None:
        U, s, self.Vt = np.linalg.svd(J / D[:, None, :], full_matrices=False)
        self.U, self.D, self.first = U, D, first
        self.problem = Subproblem(s, np.matmul(r[:, None, :], U)[:, 0, :], cutoff(s, r.shape[1]))
        self.cost = cost  # each run's sum of squares at the update's start
        self.cost_now = cost.copy()  # and at the step it has taken
        self.size = norm(D * x)  # |D x|

    def step(self, rows: np.ndarray, delta: np.ndarray, par: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The Levenberg parameter for radius delta, the step h, and (|D h|, the predicted reduction)."""
        par, w, length = self.problem.parameter(delta, par, rows)  # D h = -V w
        # the linear model's reduction of the sum of squares, |J h|^2 + 2 par |D h|^2 (MINPACK's prered)
        sw = self.problem.s[rows] * w
        return par, -self._rotate(rows, w) / self.D[rows], (length, rowsum(sw * sw) + 2 * par * length * length)

    def _rotate(self, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        """V w for each run."""
        return rowsum(self.Vt[rows].transpose(0, 2, 1) * w[:, None, :])

    def solve(self, rows: np.ndarray, b: np.ndarray, par: np.ndarray) -> np.ndarray:
        """q = V damped(U^T b): D h for residuals b at the Levenberg parameter par, negated."""
        c = np.matmul(b[:, None, :], self.U[rows])[:, 0, :]
        return self._rotate(rows, self.problem.damped(c, par, rows))

    def judge(self, rows: np.ndarray, delta: np.ndarray, par: np.ndarray, new_cost: np.ndarray, length: np.ndarray,
              predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The new radii, and which steps are taken (rho >= 1e-4, MINPACK's test)."""
        delta = np.where(self.first[rows], np.minimum(delta, length), delta)  # MINPACK: the first radius at most the first step
        actual = self.cost[rows] - new_cost
        with np.errstate(all="ignore"):
            rho = np.where((predicted > 0) & np.isfinite(new_cost), actual / predicted, -1.0)
        return new_radius(delta, rho, actual, predicted, self.cost[rows], new_cost, length, par), rho >= ACCEPT

    def promised(self, rows: np.ndarray) -> np.ndarray:
        """|P_J r|^2 / |r|^2 of the runs `rows`: the relative reduction the Gauss-Newton step promises."""
        kept = np.where(self.problem.keep[rows], self.problem.c[rows], 0.0)
        cost = self.cost[rows]
        with np.errstate(all="ignore"):
            return np.where(cost > 0, rowsum(kept * kept) / cost, 0.0)


class _Flight:
    """Runs partway through their updates: their indices `runs`, their `_Updates`, where each
    stands (`here`), started (`start`) and last tried (`last`), its radius, Levenberg parameter,
    residuals, Jacobian, J^T r, trials so far, and whether it has no step. Every array has one
    row per run."""

    def __init__(self, runs, update, here, start, last, radius, damping, rn, Jn, g, tries, blocked) -> None:
        self.runs, self.update, self.here, self.start, self.last = runs, update, here, start, last
        self.radius, self.damping, self.rn, self.Jn, self.g, self.tries = radius, damping, rn, Jn, g, tries
        self.blocked = blocked  # no finite residuals or derivatives: no step


def _rows_for(part, K: int):
    """An empty flight (or update, subproblem) shaped like `part`, with one row for each of K runs."""
    copy = object.__new__(type(part))
    for name, value in vars(part).items():
        # in part's memory layout: matmul's BLAS kernel, and so its rounding, follows the layout
        setattr(copy, name, np.empty_like(value, shape=(K, *value.shape[1:])) if isinstance(value, np.ndarray)
                else _rows_for(value, K))
    if isinstance(copy, _Flight):
        copy.runs[:] = np.arange(K)
    return copy


def _place(into, part, runs: np.ndarray) -> None:
    """part's rows (a flight of the runs `runs`, its update, its subproblem) into those runs' rows of `into`."""
    for name, value in vars(part).items():
        if isinstance(value, np.ndarray):
            getattr(into, name)[runs] = value
        else:
            _place(getattr(into, name), value, runs)


def _host_mask(moving) -> np.ndarray:
    """The loop's mask of moving runs (a tensor, or a numpy array on the host) as numpy bools."""
    if isinstance(moving, np.ndarray):
        return moving.reshape(-1)
    return moving.reshape(-1).cpu().numpy()


class _State:
    """Looks like an optimizer's state to checkpoints: the trust radius, the Levenberg parameter,
    the scales. It lives on the host in numpy, where lm's algebra reads and writes it in place;
    `state` shows it as tensors sharing its memory."""

    def __init__(self, host: dict[str, np.ndarray]) -> None:
        self.host = host

    @property
    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"theta": {key: torch.from_numpy(a) for key, a in self.host.items()}}

    @state.setter
    def state(self, value: dict[str, dict[str, torch.Tensor]]) -> None:  # a checkpoint's, on any device
        self.host = {key: t.cpu().numpy() for key, t in value["theta"].items()}

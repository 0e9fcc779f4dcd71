"""L-BFGS with a strong-Wolfe line search (Nocedal and Wright, Numerical Optimization, 2nd ed.,
algorithms 7.4, 3.5 and 3.6), for K runs at once.

One update is one L-BFGS iteration: a direction from the two-loop recursion over the last
`history_size` curvature pairs, then a line search for a step t satisfying the strong Wolfe
conditions (f(x + t d) <= f + c1 t g.d and |g(x + t d).d| <= c2 |g.d|). Each run's update is a
generator that asks for the loss and gradient at the points it wants; the runs' requests are
evaluated together, in one batched call of the model and the loss's closed-form gradient.

What torch.optim.LBFGS does differently, and why it stops short (a 60 x 40 low-rank factorization
from a small start ends at a loss twice the SVD's): it drops a curvature pair when y.s <= 1e-10
in absolute terms, so on a problem whose gradients are small every pair is dropped; and once its
line search returns t = 0 it repeats the same direction for ever. Here a pair is kept when
y.s > eps |y|^2 (scale free, as L-BFGS-B), and a line search that finds nothing lower forgets the
history and searches again along -g; only when that fails too is the run stuck: `stalled`, unless
the model promised no more than ftol from there (then nothing lower is to be had at working
precision, and ftol says `converged`, as for any update that lowers the loss by less).

What the stop rules read is honest about what the method knows: ftol's relative reduction counts
only where the quasi-Newton model also promises little more (-g.d / 2f, as lm's Gauss-Newton
promise), and xtol's step only where the line search took the whole quasi-Newton step (t = lr);
a steepest-descent step's length says nothing about the distance to the minimum. Neither counts
while the relative gradient is above RELATIVE_GRADIENT: on a badly scaled curve (Misra1a from
b1 = 500, b2 = 1e-4) the model learns b2's curvature first and takes b1 for settled.

A curve fit on squared residuals has a better witness: its exact Jacobian on the host
(hostcurve.py), and with it the Gauss-Newton model that lm trusts (`GaussNewton`). Where a rule
could stop a run, that model judges the claim: ftol reads the larger of the two promises, xtol
the longer of the two steps, and for ftol the Gauss-Newton promise stands in for the relative
gradient's veto (it sees what the quasi-Newton model has not learnt yet, in every direction;
xtol keeps the veto). On NIST's 54 fits that takes lbfgs from 29 certified to 43. This is what
tells a plateau from a minimum. When an exponential rate runs off towards infinity, the curve
stops depending on it and the gradient truly vanishes, so the quasi-Newton model promises nothing
more; but the rate's Jacobian column keeps a fixed direction as it shrinks, the residuals keep
their part along it, and the Gauss-Newton model still promises that part (BoxBOD from NIST's
second start: half the loss) by a step that would move the rate many times its own size. A run
on such a plateau goes on (and may come back down, as BoxBOD's does), or stops `stalled` naming
the parameter. Both measures are scale free: they do not change when a parameter or the data is
rescaled. MINPACK's per-parameter cosine |J_j.r| / (|J_j| |r|) separates the NIST plateaus as well,
but misses a run-off along a combination of parameters (Bennett5's curved valley: cosine 7e-6,
Gauss-Newton promise 3e-2).
"""

from __future__ import annotations

import math
from typing import Generator, NamedTuple

import numpy as np
import torch

from gdfit.fitting.lm import Packing
from gdfit.fitting.losses import Loss, MeanSquared
from gdfit.fitting.models import Model, Params
from gdfit.fitting.steppers import objective
from gdfit.fitting.trust import cutoff

C1, C2 = 1e-4, 0.9  # the strong Wolfe conditions' constants for quasi-Newton methods (Nocedal and Wright)
MAX_EVALS = 40  # loss evaluations one line search may make (torch's max_ls is 25)
EXTRAPOLATE = 10.0  # the largest growth of t per evaluation while bracketing
EPS = float(np.finfo(float).eps)
# the largest relative gradient at which a run may claim convergence by ftol or xtol (`_relative_gradient`)
RELATIVE_GRADIENT = 1e-6

Request = tuple[float, torch.Tensor]  # what an update yields: t, and the direction d
Answer = tuple[float, torch.Tensor]  # what it is sent back: f(x + t d) and the gradient there


def cubic_minimum(t1: float, f1: float, g1: float, t2: float, f2: float, g2: float, low: float, high: float) -> float:
    """The minimiser of the cubic through (t1, f1, g1) and (t2, f2, g2) within [low, high]
    (Nocedal and Wright, eq. 3.59); the interval's middle where the cubic has none (or is a line:
    on a plateau both slopes can be equal, and so small that their squares underflow)."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    square = d1 * d1 - g1 * g2
    if not (square >= 0 and math.isfinite(square)):
        return (low + high) / 2
    d2 = math.copysign(math.sqrt(square), t2 - t1)
    denominator = g2 - g1 + 2 * d2
    if denominator == 0:
        return (low + high) / 2
    t = t2 - (t2 - t1) * (g2 + d2 - d1) / denominator
    return min(max(t, low), high) if math.isfinite(t) else (low + high) / 2


def line_search(f0: float, gtd0: float, t: float, d: torch.Tensor
                ) -> Generator[Request, Answer, tuple[float, float, torch.Tensor] | None]:
    """A step along d satisfying the strong Wolfe conditions, from the first trial t: yields each
    trial (t, d), is sent (f, gradient) there, and returns (t, f, gradient) of the step taken: the
    Wolfe point, or else the lowest point found below f0; None when none lies below f0.
    A non-finite loss counts as too high (the step went too far)."""
    d_norm = float(torch.linalg.vector_norm(d))
    previous = (0.0, f0, gtd0, None)  # (t, f, g.d, gradient)
    best = None  # the lowest point below f0 met so far
    evals = 0
    low = high = None
    while evals < MAX_EVALS:  # bracketing: grow t until a bracket holds a Wolfe point
        f, g = yield t, d
        evals += 1
        gtd = float(g @ d) if math.isfinite(f) else math.nan
        point = (t, f, gtd, g)
        if math.isfinite(f) and f < f0 and (best is None or f < best[1]):
            best = point
        if not math.isfinite(f) or f > f0 + C1 * t * gtd0 or (evals > 1 and f >= previous[1]):
            low, high = previous, point
            break
        if abs(gtd) <= -C2 * gtd0:
            return t, f, g
        if gtd >= 0:
            low, high = point, previous
            break
        step = cubic_minimum(previous[0], previous[1], previous[2], t, f, gtd, t + 0.01 * (t - previous[0]),
                             t * EXTRAPOLATE)
        previous, t = point, step
    while low is not None and evals < MAX_EVALS:  # zoom: shrink the bracket [low, high] onto a Wolfe point
        width = abs(high[0] - low[0])
        if width * d_norm <= EPS * max(1.0, low[0] * d_norm):  # the bracket is below x's resolution
            break
        left, right = min(low[0], high[0]), max(low[0], high[0])
        if math.isfinite(high[1]) and math.isfinite(high[2]):
            t = cubic_minimum(low[0], low[1], low[2], high[0], high[1], high[2], left, right)
        else:
            t = (left + right) / 2
        if min(t - left, right - t) < 0.1 * width:  # safeguard: stay off the bracket's ends
            t = (left + right) / 2
        f, g = yield t, d
        evals += 1
        gtd = float(g @ d) if math.isfinite(f) else math.nan
        point = (t, f, gtd, g)
        if math.isfinite(f) and f < f0 and (best is None or f < best[1]):
            best = point
        if not math.isfinite(f) or f > f0 + C1 * t * gtd0 or f >= low[1]:
            high = point
        else:
            if abs(gtd) <= -C2 * gtd0:
                return t, f, g
            if gtd * (high[0] - low[0]) >= 0:
                high = low
            low = point
    return (best[0], best[1], best[3]) if best is not None else None


class History:
    """One run's curvature pairs (s, y), the newest last, at most `size` of them."""

    def __init__(self, size: int) -> None:
        self.size, self.pairs = size, []

    def remember(self, s: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the pair when y.s > eps |y|^2 (positive curvature that is not rounding, in any scale)."""
        ys, yy = float(y @ s), float(y @ y)
        if ys > EPS * yy and yy > 0:
            self.pairs.append((s, y, 1.0 / ys))
            if len(self.pairs) > self.size:
                self.pairs.pop(0)

    def forget(self) -> None:
        self.pairs = []

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion, with H0 = (s.y / y.y) I from the newest pair."""
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * float(s @ q)
            q.sub_(y, alpha=alpha)
            alphas.append(alpha)
        if self.pairs:
            s, y, rho = self.pairs[-1]
            q.mul_(1.0 / (rho * float(y @ y)))
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas)):
            beta = rho * float(y @ q)
            q.add_(s, alpha=alpha - beta)
        return q.neg_()


class Runaway(NamedTuple):
    """A parameter the curve has (nearly) stopped depending on, where a run stopped: its value,
    and how far the Gauss-Newton step would move it (inf: the curve does not depend on it at all)."""

    name: str
    value: float
    step: float


class Verdict(NamedTuple):
    """What a curve fit's Gauss-Newton model says at one point (`GaussNewton.judge`)."""

    promise: float  # |P_J r|^2 / |r|^2: the relative reduction its step promises (inf: none is determined)
    step: float  # |h|, the length of the Gauss-Newton step h (NaN: no claim)
    runaway: Runaway | None  # the parameter that step would move farthest past its own size, if far


class GaussNewton:
    """A curve fit's Gauss-Newton model at a point, from its exact Jacobian on the host: the one
    lm holds ftol and xtol to. Its promise and step are invariant to the scale of each parameter
    (J's columns are normalised, as lm's D does) and of the data (the promise is relative)."""

    def __init__(self, model: Model, target: torch.Tensor) -> None:
        self.host = model.host(target.dtype)
        self.target = self.host.array(target)
        self.names = model.names
        # a parameter the Gauss-Newton step would move by more than this many times its own size
        # has run off: at a plateau's stall it is 1e12 and more, at a stall by float32's rounding
        # short of the minimum (Misra1a from NIST's first start) about 1
        self.far = 1 / math.sqrt(float(np.finfo(self.host.dtype).eps))

    @staticmethod
    def applies(model: Model, loss: Loss) -> bool:
        """A curve fit (it has a host form) on plain squared residuals over all its points."""
        return hasattr(model, "host") and type(loss) is MeanSquared and getattr(loss, "keep", None) is None

    def judge(self, x: np.ndarray) -> list[Verdict]:
        """Each run's verdict at parameters x [K, p] (float64)."""
        prediction, J = self.host.predict_and_jacobian(x)
        r = (prediction - self.target).astype(np.float64)
        J = J.astype(np.float64)
        return [self._verdict(J[i], r[i], x[i]) for i in range(len(x))]

    def _verdict(self, J: np.ndarray, r: np.ndarray, x: np.ndarray) -> Verdict:
        cost = float(r @ r)
        if not (math.isfinite(cost) and np.isfinite(J).all()):
            return Verdict(math.inf, math.nan, None)
        if cost == 0:  # an exact fit: nothing is left to promise
            return Verdict(0.0, 0.0, None)
        norms = np.sqrt(np.einsum("ij,ij->j", J, J))
        present = norms > 0  # a zero column: the curve does not depend on that parameter here
        U, s, Vt = np.linalg.svd(J[:, present] / norms[present], full_matrices=False)
        keep = s > cutoff(s, len(r))
        c = U[:, keep].T @ r
        h = np.zeros_like(x)
        h[present] = -(Vt[keep].T @ (c / s[keep])) / norms[present]  # the least-norm Gauss-Newton step
        size = np.where(x != 0, np.abs(x), 1.0)
        j = int(np.argmax(np.abs(h) / size))
        runaway = Runaway(self.names[j], float(x[j]), float(abs(h[j]))) if abs(h[j]) > self.far * size[j] else None
        if not present.all():  # no optimum determines that parameter: no claim
            j = int(np.argmin(present))
            return Verdict(math.inf, math.nan, runaway or Runaway(self.names[j], float(x[j]), math.inf))
        with np.errstate(over="ignore"):  # a step off a plateau may be too long for float64: inf
            length = float(np.linalg.norm(h))
        return Verdict(float(c @ c) / cost, length, runaway)


class LBFGSStepper:
    """The stepper for `optimizer: lbfgs`: every run's iteration, its evaluations batched."""

    def __init__(self, model: Model, loss: Loss, target: torch.Tensor, params: Params, history_size: int,
                 lr: float, ftol: float | None = None) -> None:
        self.model, self.loss, self.target, self.params = model, loss, target, params
        self.packing = Packing(params)
        x = self.packing.pack(params).detach().to(torch.float64)
        self.runs = x.shape[0]
        self.histories = [History(history_size) for _ in range(self.runs)]
        self.x = x
        self.f, self.g = self._evaluate(x)
        self.directions: list[torch.Tensor | None] = [None] * self.runs  # each run's next d, once known
        self.promise = [math.inf] * self.runs  # each update's promise from its start (`_promise`)
        self.motion, self.stuck, self.promised = None, None, None
        self.gauss_newton = GaussNewton(model, target) if GaussNewton.applies(model, loss) else None
        self.ftol = ftol or 0.0  # below this relative reduction the ftol rule reads the promise
        self.runaways: list[Runaway | None] = [None] * self.runs  # where each run stands, by its last verdict

    def _evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every run's loss [K] and gradient [K, P] at x [K, P] (float64), in the model's dtype."""
        flat = x.to(self.target.dtype)
        params = self.packing.unpack(flat)
        prediction = self.model.predict(params)
        f = objective(self.model, self.loss.value(prediction, self.target), params)
        grads = self.model.parameter_grads(params, self.loss.grad(prediction, self.target))
        g = self.packing.pack(grads)
        return f.detach().to(torch.float64), g.detach().to(torch.float64)

    def losses(self) -> torch.Tensor:
        return self.f.to(self.target.dtype, copy=True)  # a copy: the loop keeps it, self.f changes in place

    def _direction(self, i: int) -> torch.Tensor:
        d = self.directions[i]
        return d if d is not None else self.histories[i].direction(self.g[i])

    def _update(self, i: int, lr: float) -> Generator[Request, Answer, tuple | None]:
        """Run i's iteration: (t, f, gradient, whether the step was the whole quasi-Newton step, d),
        or None when no step along d, nor along -g, lowers the loss."""
        f0, g0, history = float(self.f[i]), self.g[i], self.histories[i]
        d = self._direction(i)
        self.promise[i] = self._promise(i, d) if history.pairs else math.inf
        for attempt in range(2):
            gtd = float(g0 @ d)
            if not (gtd < 0) or not math.isfinite(gtd):  # not a descent direction: start afresh along -g
                history.forget()
                d = g0.neg()
                gtd = float(g0 @ d)
                if gtd == 0:
                    return None  # the gradient is exactly 0: nowhere to go
            fresh = not history.pairs
            # a fresh start has no curvature to scale its step: a first trial of length lr (scipy's
            # L-BFGS-B takes unit length), which the line search grows or shrinks
            t = lr / math.sqrt(-gtd) if fresh else lr
            found = yield from line_search(f0, gtd, t, d)
            if found is not None:
                t, f, g = found
                history.remember(t * d, g - g0)
                return t, f, g, (not fresh and t == lr), d
            if fresh:
                return None
            history.forget()  # the history misled the search: try once more along -g
            d = g0.neg()
        return None

    def advance(self, k: int, lr, moving: torch.Tensor | None) -> torch.Tensor:
        going = [True] * self.runs if moving is None else moving.flatten().tolist()
        rates = self._rates(lr)
        updates = {i: self._update(i, rates[i]) for i in range(self.runs) if going[i]}
        requests: dict[int, Request] = {}
        results: dict[int, tuple | None] = {}
        for i, update in updates.items():
            self._ask(i, update, None, requests, results)
        while requests:
            trial = self.x.clone()
            for i, (t, d) in requests.items():
                trial[i] = self.x[i] + t * d
            f, g = self._evaluate(trial)
            asked, requests = requests, {}
            for i in asked:
                self._ask(i, updates[i], (float(f[i]), g[i]), requests, results)
        step = torch.full((self.runs,), math.nan, dtype=torch.float64)
        stuck = torch.zeros(self.runs, dtype=torch.bool)
        before = self.f.clone()
        for i, found in results.items():
            if found is None:
                stuck[i] = True
                continue
            t, f, g, whole, d = found
            self.x[i] = self.x[i] + t * d
            self.f[i], self.g[i] = f, g
            self.directions[i] = None
            if whole:  # the step the quasi-Newton model proposed: its length measures the distance left
                step[i] = t * float(torch.linalg.vector_norm(d))
        self.packing.store(self.params, self.x.cpu().numpy())
        self._report(step, stuck, before, list(results))
        return self.losses()

    def _ask(self, i, update, answer, requests, results) -> None:
        """Send run i's update its answer (None to start it) and file what it asks for next."""
        try:
            requests[i] = update.send(answer)
        except StopIteration as done:
            results[i] = done.value

    def _rates(self, lr) -> list[float]:
        if isinstance(lr, torch.Tensor):
            values = lr.flatten().tolist()
            return values if len(values) == self.runs else values[:1] * self.runs
        return [float(lr)] * self.runs

    def _report(self, step: torch.Tensor, stuck: torch.Tensor, before: torch.Tensor, updated: list[int]) -> None:
        """What the stop rules read: the quasi-Newton step's length (NaN, no claim, where the step
        was not one), |x| and max |g|; the relative reduction the model still promises, -g.d / 2f
        at the new point (inf where there is no history to promise anything); and who is stuck.
        No claim while the relative gradient is large; in a curve fit, the Gauss-Newton model
        judges the promise instead (`_back`)."""
        promised = torch.full((self.runs,), math.inf, dtype=torch.float64)
        unsure = self._relative_gradient() > RELATIVE_GRADIENT
        step[unsure] = math.nan
        judged = self._judged(step, stuck, before, updated)
        for i in updated:  # a run's verdict is of where it stands now, or none
            self.runaways[i] = None
        for i in range(self.runs):
            if unsure[i] and i not in judged:
                continue
            if stuck[i]:  # nothing lower found: what the model promised from here, before the search
                promised[i] = self.promise[i]
            elif self.histories[i].pairs:
                d = self.histories[i].direction(self.g[i])
                self.directions[i] = d
                promised[i] = self._promise(i, d)
        self._back(step, promised, judged)
        self.motion = (step, torch.linalg.vector_norm(self.x, dim=1), self.g.abs().amax(1))
        self.promised, self.stuck = promised, stuck

    def _judged(self, step: torch.Tensor, stuck: torch.Tensor, before: torch.Tensor, updated: list[int]) -> set[int]:
        """The runs of a curve fit whose claims the Gauss-Newton model judges in this update: those
        a rule could stop (stuck, a loss that fell by at most ftol, a step xtol reads). A Jacobian
        on the host for those only: none in most updates."""
        if self.gauss_newton is None:
            return set()
        return {i for i in updated if bool(stuck[i]) or not math.isnan(float(step[i]))
                or float(before[i] - self.f[i]) <= self.ftol * abs(float(before[i]))}

    def _back(self, step: torch.Tensor, promised: torch.Tensor, judged: set[int]) -> None:
        """Hold the judged runs' claims to the Gauss-Newton model too: ftol reads the larger
        promise, xtol the longer step (none where the model determines no step)."""
        if not judged:
            return
        runs = sorted(judged)
        for i, verdict in zip(runs, self.gauss_newton.judge(self.x[runs].cpu().numpy())):
            promised[i] = max(float(promised[i]), verdict.promise)
            if not math.isnan(float(step[i])):
                step[i] = max(float(step[i]), verdict.step) if not math.isnan(verdict.step) else math.nan
            self.runaways[i] = verdict.runaway

    def _promise(self, i: int, d: torch.Tensor) -> float:
        """The relative reduction the quasi-Newton model expects along d: -g.d / 2 |f|."""
        f, reduction = float(self.f[i]), -0.5 * float(self.g[i] @ d)
        return reduction / abs(f) if f != 0 else (0.0 if reduction == 0 else math.inf)

    def _relative_gradient(self) -> torch.Tensor:
        """Each run's max_i |g_i| |x_i| / |f| (Dennis and Schnabel's relative gradient, |x_i| taken
        as 1 where x_i is 0): the relative loss change of a small relative change in one parameter.
        It is a scale-free first-order test: a point where it is large is no minimum, however short
        the quasi-Newton step (on a badly scaled curve the model can think so)."""
        scale = torch.where(self.x == 0, 1.0, self.x.abs())
        change = (self.g.abs() * scale).amax(1)
        f = self.f.abs()
        return torch.where(f > 0, change / f.clamp_min(torch.finfo(torch.float64).tiny),
                           torch.where(change > 0, math.inf, 0.0))

    def grad_norm(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.g[0])

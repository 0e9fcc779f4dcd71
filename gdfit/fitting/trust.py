"""MINPACK's trust region (Moré, 1978) for one run's Levenberg-Marquardt step, on the SVD of J D^-1.

With J D^-1 = U diag(s) V^T and c = U^T r, the step for a Levenberg parameter par is
D h = -V w, w = s c / (s^2 + par): every quantity lmder needs (|D h|, its derivative in par, the
predicted reduction) is then a sum over the few singular values, without a new factorisation.
Plain floats and numpy: each call works on a handful of numbers.
"""

from __future__ import annotations

import math

import numpy as np

GOOD, POOR, ACCEPT = 0.75, 0.25, 1e-4  # MINPACK's ratio thresholds: grow delta, shrink it, take the step
TINY = float(np.finfo(float).tiny)
EPS = float(np.finfo(float).eps)


def cutoff(s: np.ndarray, rows: int) -> float:
    """Singular values at or below this are rounding: directions J does not determine."""
    return float(s[0]) * max(rows, len(s)) * EPS if s.size else 0.0


class Subproblem:
    """One update's trust-region subproblem, J D^-1 = U diag(s) V^T with c = U^T r: what all its
    trial steps share (the Gauss-Newton step, the bounds' ingredients) computed once."""

    def __init__(self, s: np.ndarray, c: np.ndarray, floor: float) -> None:
        self.s, self.c, self.floor = s, c, floor
        self.s2, self.sc = s * s, s * c
        self.keep = s > floor
        self.full = s.size == 0 or bool(s[-1] > floor)  # J has full rank (s descends)
        self.gauss_newton_step = self.damped(c, 0.0)  # w at par = 0
        self.gauss_newton = math.sqrt(float(self.gauss_newton_step @ self.gauss_newton_step))  # its |D h|
        # (sums of a few squares as dot products: numpy's sum costs more than the arithmetic)
        steps = self.gauss_newton_step
        self.curvature = float(steps @ (steps / self.s2)) if self.full else 0.0  # for the lower bound on par
        self.gradient = math.sqrt(float(self.sc @ self.sc))  # |J^T r| in D's scale

    def damped(self, c: np.ndarray, par: float) -> np.ndarray:
        """w = s c / (s^2 + par): D h = -V w. Undamped, directions J does not determine
        (s <= floor) get no step: the pseudo-inverse, as MINPACK's lmpar takes it for a
        rank-deficient J."""
        if par > 0:
            return self.s * c / (self.s2 + par)
        if self.full:
            return c / self.s
        return np.where(self.keep, c / np.where(self.keep, self.s, 1.0), 0.0)

    def parameter(self, delta: float, par: float) -> tuple[float, np.ndarray, float]:
        """MINPACK's lmpar: 0 when the Gauss-Newton step has |D h| <= 1.1 delta, else the par
        whose step has |D h| within 10% of delta, by Hebden's safeguarded Newton iteration on
        1/|D h| (at most 10 steps, from the last update's par kept inside the bounds); and that
        par's w, with |w| = |D h|."""
        delta, par = max(float(delta), TINY), float(par)
        gauss_newton = self.gauss_newton
        if gauss_newton <= 1.1 * delta:
            return 0.0, self.gauss_newton_step, gauss_newton
        # bounds: the Newton step from par = 0 when J has full rank, and |J^T r| / delta
        # (a curvature that underflowed to 0, on data near float64's smallest numbers, gives no bound)
        bounded = self.full and delta * self.curvature > 0
        low = (gauss_newton - delta) * gauss_newton ** 2 / (delta * self.curvature) if bounded else 0.0
        high = self.gradient / delta
        if high == 0:
            high = TINY / min(delta, 0.1)
        par = min(max(par, low), high)
        s2, sc = self.s2, self.sc
        for _ in range(10):
            if par == 0:
                par = max(TINY, 0.001 * high)
            shrink = s2 + par
            w = sc / shrink  # divided before squared: a huge par underflows, never overflows
            length = math.sqrt(float(w @ w))
            miss = length - delta
            if abs(miss) <= 0.1 * delta or length == 0:
                return par, w, length
            if miss > 0:
                low = max(low, par)
            else:
                high = min(high, par)
            slope = float(w @ (w / shrink)) / length  # -d|D h| / d par
            if slope == 0:  # underflowed: par is far beyond every s^2, and a Newton step cannot tell more
                return par, w, length
            par = max(low, par + (miss / slope) * (length / delta))
        w = self.damped(self.c, par)
        return par, w, math.sqrt(float(w @ w))


def new_radius(delta: float, rho: float, actual: float, predicted: float, cost: float, new_cost: float,
               length: float, par: float) -> float:
    """MINPACK's update of the trust radius from rho (actual over predicted reduction): after a
    poor step it shrinks to 0.1 to 0.5 of the step, by where the quadratic through the actual
    reduction peaks; after a good one (or a Gauss-Newton step that fitted) it is twice the step.
    `length` is |D h|, `predicted` |J h|^2 + 2 par |D h|^2, costs are sums of squares."""
    if rho <= POOR:
        slope = -(predicted - par * length ** 2)  # the cost's derivative along the step, -(|J h|^2 + par |D h|^2)
        shrink = 0.5 if actual >= 0 else 0.5 * slope / (slope + 0.5 * actual)
        if not (new_cost < 100 * cost) or not (shrink >= 0.1):  # a step 10x up in |r|, or NaN
            shrink = 0.1
        return min(delta, length / 0.1) * shrink
    if rho >= GOOD or par == 0:
        return 2 * length
    return delta

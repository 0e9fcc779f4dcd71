"""MINPACK's trust region (Moré, 1978) for the Levenberg-Marquardt steps of m runs at once, on the SVDs of J D^-1.

With J D^-1 = U diag(s) V^T and c = U^T r, the step for a Levenberg parameter par is
D h = -V w, w = s c / (s^2 + par): every quantity lmder needs (|D h|, its derivative in par, the
predicted reduction) is then a sum over the few singular values, without a new factorisation.

Every function works on all runs together, as arrays with the runs along the first axis: [m]
for a run's number, [m, P] for its vector. Each run's arithmetic is elementwise or a sum along its
own row, so a run's numbers do not depend on which other runs share the arrays (a fit of one
group equals the same fit among thousands, bit for bit). Sums go through `rowsum` for that reason:
BLAS's dot products may group their terms by the data's alignment in memory.
"""

from __future__ import annotations

import numpy as np

GOOD, POOR, ACCEPT = 0.75, 0.25, 1e-4  # MINPACK's ratio thresholds: grow delta, shrink it, take the step
TINY = float(np.finfo(float).tiny)
EPS = float(np.finfo(float).eps)
NEWTON_STEPS = 10  # lmpar's iterations on par


def rowsum(a: np.ndarray) -> np.ndarray:
    """The sum along the last axis, row by row in a fixed order: the same bits whatever the other
    rows (term after term for a few terms; numpy's pairwise sum of each contiguous row for many)."""
    if a.shape[-1] > 16:  # a model with many parameters: a Python loop over them would cost more than the sum
        return np.add.reduce(np.ascontiguousarray(a), axis=-1)
    total = a[..., 0].copy() if a.shape[-1] else np.zeros(a.shape[:-1])
    for j in range(1, a.shape[-1]):
        total += a[..., j]
    return total


def norm(v: np.ndarray) -> np.ndarray:
    """|v| of each row."""
    return np.sqrt(rowsum(v * v))


def cutoff(s: np.ndarray, rows: int) -> np.ndarray:
    """Singular values at or below this are rounding: directions J does not determine (numpy's
    matrix_rank tolerance). s [m, P], descending; one cutoff per run."""
    if s.shape[-1] == 0:
        return np.zeros(s.shape[:-1])
    return s[..., 0] * (max(rows, s.shape[-1]) * EPS)


class Subproblem:
    """The trust-region subproblems of one update of m runs, J D^-1 = U diag(s) V^T with c = U^T r
    (s, c [m, P]): what all their trial steps share (the Gauss-Newton steps, the bounds'
    ingredients), computed once."""

    def __init__(self, s: np.ndarray, c: np.ndarray, floor: np.ndarray) -> None:
        self.s, self.c = s, c
        self.s2, self.sc = s * s, s * c
        self.keep = s > floor[:, None]
        self.full = self.keep.all(axis=1) if s.shape[1] else np.ones(len(s), bool)  # J has full rank
        with np.errstate(all="ignore"):
            self.gauss_newton_step = self.damped(c, np.zeros(len(s)))  # w at par = 0
            self.gauss_newton = norm(self.gauss_newton_step)  # its |D h|
            steps = self.gauss_newton_step
            # for the lower bound on par: only where J has full rank (else no s is 0 divided by)
            self.curvature = np.where(self.full, rowsum(steps * (steps / np.where(self.keep, self.s2, 1.0))), 0.0)
        self.gradient = norm(self.sc)  # |J^T r| in D's scale

    def damped(self, c: np.ndarray, par: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """w = s c / (s^2 + par) [m, P] for the runs `rows` (all when None): D h = -V w.
        Undamped (par = 0), directions J does not determine (s <= floor) get no step: the
        pseudo-inverse, as MINPACK's lmpar takes it for a rank-deficient J."""
        s, s2, keep = (self.s, self.s2, self.keep) if rows is None else (self.s[rows], self.s2[rows], self.keep[rows])
        par = par[:, None]
        with np.errstate(all="ignore"):
            damped = s * c / (s2 + par)
            undamped = np.where(keep, c / np.where(keep, s, 1.0), 0.0)
        return np.where(par > 0, damped, undamped)

    def parameter(self, delta: np.ndarray, par: np.ndarray, rows: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MINPACK's lmpar for the runs `rows` (all when None), each with its radius delta and its
        last par: 0 when the Gauss-Newton step has |D h| <= 1.1 delta, else the par whose step has
        |D h| within 10% of delta, by Hebden's safeguarded Newton iteration on 1/|D h| (at most 10
        steps, from the last par kept inside the bounds); and that par's w, with |w| = |D h|."""
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])
        delta = np.maximum(np.asarray(delta, float), TINY)
        par = np.array(par, float)
        gauss_newton, step = pick(self.gauss_newton), pick(self.gauss_newton_step)
        w, length = step.copy(), gauss_newton.copy()
        fits = gauss_newton <= 1.1 * delta
        par[fits] = 0.0
        searching = np.flatnonzero(~fits)
        if not len(searching):
            return par, w, length
        # from here on, arrays over the runs still searching (their positions: `searching`)
        d, g = delta[searching], gauss_newton[searching]
        full, curvature = pick(self.full)[searching], pick(self.curvature)[searching]
        s2, sc = pick(self.s2)[searching], pick(self.sc)[searching]
        with np.errstate(all="ignore"):
            # bounds: the Newton step from par = 0 when J has full rank, and |J^T r| / delta
            # (a curvature that underflowed to 0, on data near float64's smallest numbers, gives no bound)
            bounded = full & (d * curvature > 0)
            low = np.where(bounded, (g - d) * g ** 2 / np.where(bounded, d * curvature, 1.0), 0.0)
            high = pick(self.gradient)[searching] / d
            high = np.where(high == 0, TINY / np.minimum(d, 0.1), high)
            p = np.minimum(np.maximum(par[searching], low), high)
            for _ in range(NEWTON_STEPS):
                p = np.where(p == 0, np.maximum(TINY, 0.001 * high), p)
                shrink = s2 + p[:, None]
                v = sc / shrink  # divided before squared: a huge par underflows, never overflows
                size = norm(v)
                miss = size - d
                slope = rowsum(v * (v / shrink)) / size  # -d|D h| / d par
                # done: within 10% of delta, or no step, or a slope that underflowed (par is far
                # beyond every s^2, and a Newton step cannot tell more)
                done = (np.abs(miss) <= 0.1 * d) | (size == 0)
                done |= ~done & (slope == 0)
                ended = searching[done]
                par[ended], w[ended], length[ended] = p[done], v[done], size[done]
                going = ~done
                if not going.any():
                    return par, w, length
                low = np.where(miss > 0, np.maximum(low, p), low)
                high = np.where(miss > 0, high, np.minimum(high, p))
                p = np.maximum(low, p + (miss / slope) * (size / d))
                searching, d, low, high, p = searching[going], d[going], low[going], high[going], p[going]
                s2, sc = s2[going], sc[going]
        rest = searching if rows is None else rows[searching]
        w[searching] = self.damped(self.c[rest], p, rest)
        par[searching], length[searching] = p, norm(w[searching])
        return par, w, length


def new_radius(delta, rho, actual, predicted, cost, new_cost, length, par) -> np.ndarray:
    """MINPACK's update of the trust radius from rho (actual over predicted reduction), per run:
    after a poor step it shrinks to 0.1 to 0.5 of the step, by where the quadratic through the
    actual reduction peaks; after a good one (or a Gauss-Newton step that fitted) it is twice the
    step. `length` is |D h|, `predicted` |J h|^2 + 2 par |D h|^2, costs are sums of squares."""
    with np.errstate(all="ignore"):
        slope = -(predicted - par * length ** 2)  # the cost's derivative along the step, -(|J h|^2 + par |D h|^2)
        shrink = np.where(actual >= 0, 0.5, 0.5 * slope / (slope + 0.5 * actual))
        # a step 10x up in |r|, or NaN: the smallest shrink
        shrink = np.where(np.logical_not(np.less(new_cost, 100 * cost)) | np.logical_not(shrink >= 0.1), 0.1, shrink)
        poor = np.minimum(delta, length / 0.1) * shrink
    good = np.where((rho >= GOOD) | (par == 0), 2 * length, delta)
    return np.where(rho <= POOR, poor, good)

"""Robust losses for lm, as scipy.optimize.least_squares defines and scales them.

The cost is C = sum_i f_scale^2 rho((r_i / f_scale)^2) (scipy's cost doubled, so that for
rho(z) = z it is lm's sum of squares). Each update solves the Gauss-Newton subproblem of C through
scaled residuals and Jacobian (least_squares.py `construct_loss_function`, common.py
`scale_for_robust_loss_function`): with rho', rho'' at z,

    s = rho' + 2 rho'' r^2 (floored at eps), J~ = sqrt(s) J, r~ = rho' r / sqrt(s),

so that J~^T r~ = sum rho' r J, half C's gradient, and J~^T J~ approximates half its Hessian:
the same stationary points as scipy, without reweighting iterations.
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(float).eps)


def _soft_l1(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = 1 + z
    return 2 * (t ** 0.5 - 1), t ** -0.5, -0.5 * t ** -1.5


def _huber(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inside = z <= 1
    root = np.sqrt(np.where(inside, 1.0, z))
    return (np.where(inside, z, 2 * root - 1), np.where(inside, 1.0, 1 / root),
            np.where(inside, 0.0, -0.5 / (root * root * root)))


def _cauchy(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = 1 + z
    return np.log1p(z), 1 / t, -1 / (t * t)


def _arctan(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = 1 + z * z
    return np.arctan(z), 1 / t, -2 * z / (t * t)


RHO = {"soft_l1": _soft_l1, "huber": _huber, "cauchy": _cauchy, "arctan": _arctan}


class RobustLoss:
    """rho and f_scale of one of scipy's robust losses, on residuals [K, n] in float64 numpy."""

    def __init__(self, name: str, f_scale: float) -> None:
        self.name, self.f_scale, self.rho = name, float(f_scale), RHO[name]

    def describe(self) -> dict[str, float | str]:
        return {"name": self.name, "f_scale": self.f_scale}

    def cost(self, r: np.ndarray) -> np.ndarray:
        """C of each run: sum f_scale^2 rho((r / f_scale)^2)."""
        c2 = self.f_scale ** 2
        return c2 * self.rho(np.square(r) / c2)[0].sum(-1)

    def scale(self, r: np.ndarray, J: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scaled residuals r~ [K, n] and Jacobian J~ [K, n, P] whose Gauss-Newton step is C's."""
        c2 = self.f_scale ** 2
        _, rho1, rho2 = self.rho(np.square(r) / c2)
        rho2 = rho2 / c2
        s = rho1 + 2 * rho2 * np.square(r)
        s = np.sqrt(np.where(s < EPS, EPS, s))
        return r * (rho1 / s), J * s[..., None]


def robust_loss(spec) -> RobustLoss | None:
    """The robust loss of a config's `loss:` for lm, None for mse."""
    if spec.name == "huber":
        return RobustLoss("huber", spec.scale)
    if spec.name in RHO:
        return RobustLoss(spec.name, spec.f_scale)
    return None

"""Step-size advice: the largest curvature L of the loss at the start.

For mse of x itself the Hessian is exactly (2/n) I, so L = 2/n and gd is stable for lr < n,
stated exactly. Otherwise L comes from power iteration on Hessian-vector products by double
backward, never the full Hessian. For gd on a quadratic, updates are stable exactly when lr < 2/L.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gdfit.lazy import torch

from gdfit.fitting.losses import Loss, MeanSquared
from gdfit.fitting.models import Identity, Model

FLOAT64_LIMIT = 1_000_000  # elements


def largest_curvature(loss_fn, x0: torch.Tensor, target: torch.Tensor, iterations: int = 20, rtol: float = 1e-4) -> float:
    """Largest Hessian eigenvalue (by magnitude) of loss_fn(., target) at x0."""
    # float64 where it is cheap; large problems stay in their own dtype (at least float32), so the
    # estimate never needs more memory than the run itself
    dtype = torch.float64 if x0.numel() <= FLOAT64_LIMIT else torch.promote_types(x0.dtype, torch.float32)
    x = x0.detach().to(dtype).requires_grad_(True)
    t = target.detach().to(dtype)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(x, t), x, create_graph=True)
        if grad.grad_fn is None:
            return 0.0  # the gradient does not depend on x: zero curvature (l1 away from kinks)
        gen = torch.Generator().manual_seed(0)
        v = torch.rand(x.shape, generator=gen, dtype=dtype).to(x.device) + 0.5
        v /= torch.linalg.vector_norm(v)
        estimate = 0.0
        for _ in range(iterations):
            # H v as the gradient of (grad . v); passing v as grad_outputs would make torch import
            # sympy for a shape check, a quarter of a second at every start
            (hv,) = torch.autograd.grad(torch.dot(grad.flatten(), v.flatten()), x, retain_graph=True, allow_unused=True)
            if hv is None:
                return 0.0
            new = float(torch.dot(v.flatten(), hv.flatten()))
            norm = float(torch.linalg.vector_norm(hv))
            if norm == 0.0:
                return 0.0
            v = hv / norm
            if abs(new - estimate) <= rtol * abs(new):
                return new
            estimate = new
    return estimate


CHOOSES_ITS_STEPS = ("lm", "lbfgs")  # optimizers whose steps no learning rate sets


def shown(optimizer: str) -> bool:
    """Whether a run's start event carries advice: not for lm and lbfgs, which choose their own
    steps (nothing reads it there, and on 100,000 rows it costs a sixth of an lm fit).
    `gdfit config --advise` still gives their curvature on request."""
    return optimizer not in CHOOSES_ITS_STEPS


def advise(loss: Loss, x0: torch.Tensor, target: torch.Tensor, model: Model | None = None,
           optimizer: str = "gd") -> dict[str, Any]:
    """Curvature, gd's stable range and a suggested rate, for the start event and `config --advise`.
    The step-size rule is gd's: for another optimizer the advice gives the curvature alone."""
    if optimizer == "lm" and hasattr(model, "host"):  # a curve fit by lm: on the host, as lm computes it
        curvature = curve_curvature(model, x0, target)
        return {"curvature": curvature, "max_stable_lr": None, "suggested_lr": None,
                "note": f"lm chooses its own steps (no learning-rate advice); largest curvature at the start {curvature:.6g}"}
    advice = _for_gd(loss, x0, target, model)
    if optimizer == "gd":
        return advice
    curvature = advice["curvature"]
    if optimizer in CHOOSES_ITS_STEPS:
        note = f"{optimizer} chooses its own steps (no learning-rate advice); largest curvature at the start {curvature:.6g}"
    else:
        note = (f"largest curvature at the start {curvature:.6g}; gd's stable-step rule (lr < 2 / curvature) "
                f"does not carry over to {optimizer}")
    return {**advice, "max_stable_lr": None, "suggested_lr": None, "note": note}


def curve_curvature(model, x0, target) -> float:
    """mse's largest curvature at x0 for a curve fit, from its numpy form (no torch): the Hessian
    by central differences of the exact gradient (2/n) J^T r (error ~ eps^(2/3), far below the
    power iteration's 1e-4), and its eigenvalue largest in magnitude."""
    host = model.host("float64")
    theta, y = host.array(x0).astype(np.float64), host.array(target)

    def gradient(t: np.ndarray) -> np.ndarray:
        prediction, J = host.predict_and_jacobian(t[None])
        return (2.0 / y.size) * (J[0].T @ (prediction[0] - y))

    steps = np.cbrt(np.finfo(np.float64).eps) * np.maximum(np.abs(theta), 1.0)
    with np.errstate(all="ignore"):
        rows = [(gradient(theta + h * e) - gradient(theta - h * e)) / (2 * h) for h, e in zip(steps, np.eye(theta.size))]
        hessian = np.array(rows)
        if not np.isfinite(hessian).all():
            return math.nan
    return float(np.abs(np.linalg.eigvalsh((hessian + hessian.T) / 2)).max())


def _for_gd(loss: Loss, x0: torch.Tensor, target: torch.Tensor, model: Model | None) -> dict[str, Any]:
    if isinstance(loss, MeanSquared) and isinstance(model or Identity(), Identity):
        n = loss.numel
        return _advice(2.0 / n, float(n), n / 2.0)  # 2 / (2/n) = n exactly, not n(1 + eps)
    closed = _matrix_curvature(loss, target, model)
    if closed is not None:
        curvature, exact = closed
        advice = _advice(curvature, 2.0 / curvature, 1.0 / curvature) if curvature > 0 else None
        if advice is not None:
            if not exact:
                advice["note"] += " (curvature estimated where the fit ends; see docs/matrix-models.md)"
            return {**advice, "exact": exact}
    fn = loss.functional()
    if model is not None and not isinstance(model, Identity):  # the curvature in the parameters' space
        plain = fn

        def fn(start, t):
            params = model.parameters(start.unsqueeze(0))
            value = plain(model.predict(params)[0], t)
            penalty = model.penalty(params) if hasattr(model, "penalty") else None
            return value if penalty is None else value + penalty[0]
    curvature = largest_curvature(fn, x0, target)
    if curvature <= 0 or not math.isfinite(curvature):
        return {
            "curvature": curvature,
            "max_stable_lr": None,
            "suggested_lr": None,
            "note": "no curvature at the start (the loss is piecewise linear here); any lr is stable, "
            "but gd needs a decaying schedule to settle",
        }
    return _advice(curvature, 2.0 / curvature, 1.0 / curvature)


def _matrix_curvature(loss: Loss, target: torch.Tensor, model: Model | None) -> tuple[float, bool] | None:
    """mse's curvature for the matrix models, in closed form: exact for linear on a complete
    target (2 sigma_max^2 / n), estimated at the fit for lowrank (gdfit.fitting.matrix)."""
    if model is None or not hasattr(model, "entries") or loss.name != "mse":
        return None
    from gdfit.fitting.matrix import LowRank, lowrank_advice

    found = lowrank_advice(model, target) if isinstance(model, LowRank) else model.advice()
    return (found["curvature"], found["exact"]) if found is not None else None


def _advice(curvature: float, max_stable: float, suggested: float) -> dict[str, Any]:
    return {
        "curvature": curvature,
        "max_stable_lr": max_stable,
        "suggested_lr": suggested,  # the step that solves a quadratic in one update
        "note": f"gd is stable for lr < {max_stable:.6g}; lr = {suggested:.6g} is fastest on a quadratic",
    }

"""When a fit's uncertainties may be reported, and when a fit may be made at all.

Standard errors, the covariance and intervals describe the curvature of chi-square at its
minimum. A run that stopped anywhere else (stalled, max_iters, diverged, timeout, interrupted)
reports them as null, with the reason in `fit.stderr_reason`, rather than numbers that look like
a fit's and are not. A fit with fewer data points than free parameters has no unique optimum: it is
refused unless `allow_underdetermined: true` says the user knows.
"""

from __future__ import annotations

from typing import Any

from gdfit import records
from gdfit.errors import ConfigError
from gdfit.words import plural

UNCERTAIN = ("stderr", "ci")  # a parameter's entries that describe the minimum's curvature


def stderr_reason(status: str) -> str | None:
    """Why a fit reports no standard errors (None when it reports them)."""
    if status != records.CONVERGED:
        return (f"the fit did not converge (status {status}): standard errors describe chi-square's curvature "
                "at its minimum, which this point is not")
    return None


def robust_covariances(host, x, target, robust, absolute_sigma: bool):
    """The covariances of K robust fits at parameters x [K, p] as scipy's curve_fit gives them:
    from the Jacobian scaled for the loss (J~ = sqrt(rho' + 2 rho'' r^2) J, robust.py), with s^2
    the robust cost sum f_scale^2 rho((r / f_scale)^2) over n - p. Returns (covariance [K, p, p],
    defined [K]), as `curvefit.covariances`; each run's numbers are its own row's."""
    import math

    import numpy as np

    from gdfit.curves.curvefit import covariances

    with np.errstate(all="ignore"):
        prediction, J = host.predict_and_jacobian(x)
        r = prediction - target
        cost = robust.cost(r)
        _, scaled = robust.scale(r, np.asarray(J))
        dof = r.shape[1] - x.shape[1]
        return covariances(scaled, cost / dof if dof > 0 else np.full(len(x), math.nan), absolute_sigma)


def robust_covariance(statistics: dict[str, Any], model, theta, target, robust, absolute_sigma: bool
                      ) -> dict[str, Any]:
    """A single robust fit's statistics with its stderr and covariance (`robust_covariances`)."""
    import math

    import numpy as np
    import torch

    host = model.host(torch.float64)
    x = theta.detach().cpu().to(torch.float64).numpy()[None]
    (covariance,), (defined,) = robust_covariances(host, x, host.array(target)[None], robust, absolute_sigma)
    stderr = ([math.sqrt(v) if v >= 0 else math.nan for v in np.diag(covariance)] if defined
              else [math.nan] * x.shape[1])
    of = dict(zip(model.names, stderr))
    params = {name: ({**entry, "stderr": of[name]} if name in of else entry)
              for name, entry in statistics["params"].items()}
    return {**statistics, "params": params, "covariance": covariance.tolist() if defined else None}


def withhold(statistics: dict[str, Any], status: str) -> dict[str, Any]:
    """A curve fit's statistics, with stderr, covariance (and intervals) null and the reason
    given in `fit.stderr_reason` when the fit did not converge."""
    fit = statistics.get("fit")
    if fit is None:
        return statistics
    reason = stderr_reason(status)
    if reason is None:
        return statistics
    params = {name: {key: (None if key in UNCERTAIN else value) for key, value in entry.items()}
              for name, entry in statistics["params"].items()}
    return {**statistics, "params": params, "covariance": None, "fit": {**fit, "stderr_reason": reason}}


def check_determined(points: int, free: int, allowed: bool, source: str | None) -> None:
    """Refuse a fit with fewer data points than free parameters, unless it is allowed."""
    if points < free and not allowed:
        raise ConfigError(f"{plural(points, 'data point')} cannot determine {plural(free, 'free parameter')}: "
                          "give more data, fix parameters with vary: false, or set allow_underdetermined: true",
                          source=source, key="model.params")

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


def stderr_reason(status: str, robust: dict[str, Any] | None = None) -> str | None:
    """Why a fit reports no standard errors (None when it reports them)."""
    if status != records.CONVERGED:
        return (f"the fit did not converge (status {status}): standard errors describe chi-square's curvature "
                "at its minimum, which this point is not")
    if robust is not None:
        return (f"a robust loss ({robust['name']}) down-weights points by their residuals: chi-square's covariance "
                "does not describe its estimate")
    return None


def withhold(statistics: dict[str, Any], status: str, robust: dict[str, Any] | None = None) -> dict[str, Any]:
    """A curve fit's statistics, with stderr, covariance (and intervals) null and the reason
    given in `fit.stderr_reason` when the fit did not converge or minimised a robust loss (which
    `fit.loss` then names)."""
    fit = statistics.get("fit")
    if fit is None:
        return statistics
    if robust is not None:
        fit = {**fit, "loss": robust}
    reason = stderr_reason(status, robust)
    if reason is None:
        return {**statistics, "fit": fit}
    params = {name: {key: (None if key in UNCERTAIN else value) for key, value in entry.items()}
              for name, entry in statistics["params"].items()}
    return {**statistics, "params": params, "covariance": None, "fit": {**fit, "stderr_reason": reason}}


def check_determined(points: int, free: int, allowed: bool, source: str | None) -> None:
    """Refuse a fit with fewer data points than free parameters, unless it is allowed."""
    if points < free and not allowed:
        raise ConfigError(f"{plural(points, 'data point')} cannot determine {plural(free, 'free parameter')}: "
                          "give more data, fix parameters with vary: false, or set allow_underdetermined: true",
                          source=source, key="model.params")

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

"""The statistics of K independent curve fits at once (many fits: one group per run).

Each group's figures are `curvefit.statistics`' for the same fit run alone: the same functions
on the same float64 rows (the covariance s^2 (J^T J)^-1 through the SVD of J, as NIST and
curve_fit define it), so a group's stderr equals its single fit's bit for bit. The model and its
Jacobian are evaluated once for the whole batch.
"""

from __future__ import annotations

import math

import numpy as np

from gdfit.curves.curvefit import FIT_FIELDS, run_statistics
from gdfit.curves.uncertainty import robust_covariances
from gdfit.fitting.models import ExpressionFit

__all__ = ["FIT_FIELDS", "group_statistics"]


def group_statistics(model: ExpressionFit, theta, target, absolute_sigma: bool, robust=None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each group's standard errors [K, p] (inf where the data do not determine a direction, NaN
    where they are not finite) and its `fit` figures as columns [K] (NaN where undefined); with a
    robust loss (robust.py), the standard errors of a robust fit, as its single fit's.
    `theta` and `target`: numpy arrays (groups fitted on the host) or tensors."""
    host = model.host("float64")
    x = (theta if isinstance(theta, np.ndarray) else theta.detach().cpu().double().numpy()).astype(np.float64,
                                                                                                 copy=False)
    y = host.array(target)
    figures = run_statistics(host, x, y, absolute_sigma)
    if robust is None:
        return figures.stderr, figures.fit
    covariance, defined = robust_covariances(host, x, y, robust, absolute_sigma)
    variance = np.diagonal(covariance, axis1=1, axis2=2)
    with np.errstate(invalid="ignore"):
        stderr = np.where(defined[:, None] & (variance >= 0), np.sqrt(np.where(variance >= 0, variance, 0.0)),
                          math.nan)
    return stderr, figures.fit

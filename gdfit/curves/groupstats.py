"""The statistics of K independent curve fits at once (many fits: one group per run).

Each group's figures are `curvefit.statistics`' for the same fit run alone: the same functions
on the same float64 rows (the covariance s^2 (J^T J)^-1 through the SVD of J, as NIST and
curve_fit define it), so a group's stderr equals its single fit's bit for bit. The model and its
Jacobian are evaluated once for the whole batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gdfit.curves.curvefit import covariance_of, fit_figures
from gdfit.fitting.models import ExpressionFit

FIT_FIELDS = ("n", "p", "dof", "rss", "residual_std", "chi2", "reduced_chi2", "r2", "aic", "bic")


def group_statistics(model: ExpressionFit, theta: torch.Tensor, target: torch.Tensor, absolute_sigma: bool
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each group's standard errors [K, p] (inf where the data do not determine a direction, NaN
    where they are not finite) and its `fit` figures as columns [K] (NaN where undefined)."""
    with np.errstate(all="ignore"):  # a diverged fit's statistics are inf or NaN, and say so
        host = model.host(torch.float64)
        x = theta.detach().cpu().to(torch.float64).numpy()
        target = host.array(target)
        prediction, J = host.predict_and_jacobian(x)
        residuals = target - prediction
        K, n = residuals.shape
        p = x.shape[1]
        y = target * host.sigma if host.sigma is not None else target
        f = host.curve(x)
        stderr = np.full((K, p), math.nan)
        fits = {name: np.full(K, math.nan) for name in FIT_FIELDS}
        for i in range(K):
            r = residuals[i]
            rss = float(r @ r)  # weighted: chi^2 when sigma is given
            covariance = covariance_of(J[i], rss / (n - p) if n > p else math.nan, absolute_sigma)
            if covariance is not None:
                stderr[i] = [math.sqrt(v) if v >= 0 else math.nan for v in np.diag(covariance)]
            plain = float(np.square(y[i] - f[i]).sum())  # unweighted RSS, for R^2
            total = float(np.square(y[i] - y[i].mean()).sum())
            for name, value in fit_figures(n, p, plain, rss, total).items():
                if value is not None:
                    fits[name][i] = value
        return stderr, fits

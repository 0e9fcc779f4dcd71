"""The F-test of a profile-likelihood interval, as lmfit's `conf_interval` (its `f_compare`) defines it.

With one parameter fixed (nfix = 1) and nfree = n - p degrees of freedom in the best fit, a refit
with chi-square chi2 has the probability P(F(1, nfree) <= (chi2 / chi2_best - 1) nfree). F(1, nu)
is the square of Student's t with nu degrees of freedom, so P(F(1, nu) <= t^2) = P(|T| <= t), which
for a whole number nu is a finite sum (Abramowitz and Stegun 26.7.3 and 26.7.4): exact, in numpy,
without scipy (tests/curves/test_profile.py holds it to scipy.special.fdtr).
"""

from __future__ import annotations

import math

import numpy as np


def probability(sigma: float) -> float:
    """The probability of an interval of `sigma` standard deviations of a normal distribution,
    erf(sigma / sqrt(2)); a value below 1 is a probability already (as lmfit reads it)."""
    return sigma if sigma < 1 else math.erf(sigma / math.sqrt(2))


def f_compare(chi2: float, best: float, nfree: int) -> float:
    """lmfit's `f_compare` for one fixed parameter: the F-test probability of a refit's chi-square."""
    return f_one_cdf((chi2 / best - 1.0) * nfree, nfree)


def f_one_cdf(f: float, nu: int) -> float:
    """P(F(1, nu) <= f) for a whole number nu >= 1: P(|T| <= sqrt(f)) for Student's t with nu
    degrees of freedom, A(t | nu) of Abramowitz and Stegun 26.7.3 (nu odd) and 26.7.4 (nu even)."""
    if not f > 0:
        return 0.0
    if math.isinf(f):
        return 1.0
    theta = math.atan(math.sqrt(f / nu))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if nu % 2:  # (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), to cos^(nu - 2)
        j = np.arange(1, (nu - 3) // 2 + 1, dtype=np.float64)
        series = 1.0 + float(np.cumprod(2 * j / (2 * j + 1) * c2).sum()) if nu > 1 else 0.0
        return min(1.0, 2 / math.pi * (theta + s * math.sqrt(c2) * series))
    j = np.arange(1, (nu - 2) // 2 + 1, dtype=np.float64)  # sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    return min(1.0, s * (1.0 + float(np.cumprod((2 * j - 1) / (2 * j) * c2).sum())))

"""Starting values for the built-in curves, guessed from the data as lmfit's `Model.guess` does.

`guess(name, x, y)` takes the data as plain 1-D float arrays, in any order, and returns a start for
every parameter of the model (config.curves). It assumes finite values (the fit leaves NaN targets
out before it asks) and at least 2 points (3 for quadratic, 4 for the 4PL's plateaus and slope).

- Peaks (gaussian, lorentzian, pseudovoigt): the peak is the extreme farther from 0 (so a dip is a
  negative amplitude); its position and height are the data's; its width is the full width at half
  that height, where the data first fall below half on each side of the peak (interpolated
  between points), so noise elsewhere and a second peak do not widen it. Amplitude, sigma and
  centre then follow from each shape's own height and FWHM (lmfit scales a rough height instead).
- exponential: a straight line through log|y| against x, weighted by |y| (points near 0, whose log
  noise swamps, count little); decay = -1 / slope.
- powerlaw: a straight line through log|y| against log x over x > 0, weighted by |y|.
- linear, quadratic: the least-squares polynomial (numpy.polyfit), which is the optimum itself.
- logistic4: bottom and top from the plateaus at the smallest and largest x, ec50 where the data
  cross the midpoint (interpolated in log x), hill from a line through logit((y - bottom) /
  (top - bottom)) against log x between the plateaus.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

SQRT_2PI = math.sqrt(2 * math.pi)
GAUSS_FWHM = 2 * math.sqrt(2 * math.log(2))  # FWHM / sigma of a Gaussian


def guess(name: str, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """A start for each parameter of the built-in curve `name`, from its data x and y."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    return {key: float(value) for key, value in GUESSES[name](x[order], y[order]).items()}


# ---------------------------------------------------------------- peaks


def peak(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(height, center, fwhm) of the data's largest peak or dip (height < 0 for a dip); x sorted."""
    sign = 1.0 if y.max() >= -y.min() else -1.0
    s = sign * y
    top = int(np.argmax(s))
    height = s[top]
    half = height / 2
    left = _crossing(x, s, top, half, -1)
    right = _crossing(x, s, top, half, +1)
    span = x[-1] - x[0] if len(x) > 1 else 1.0
    if left is None and right is None:
        left, right = x[top] - span / 6, x[top] + span / 6
    elif left is None:
        left = 2 * x[top] - right
    elif right is None:
        right = 2 * x[top] - left
    fwhm = right - left
    if not fwhm > 0:
        fwhm = span / 3 if span > 0 else 1.0
    center = (left + right) / 2 if left < x[top] < right else x[top]
    return sign * height, center, fwhm


def _crossing(x: np.ndarray, s: np.ndarray, start: int, level: float, step: int) -> float | None:
    """Where s first falls below `level` walking from `start` in direction `step`, interpolated."""
    below = np.nonzero(s[start::step] < level)[0] if step > 0 else np.nonzero(s[start::-1] < level)[0]
    if len(below) == 0:
        return None
    j = start + step * int(below[0])
    i = j - step  # the last point at or above the level
    if s[i] == s[j]:
        return float(x[j])
    return float(x[i] + (level - s[i]) * (x[j] - x[i]) / (s[j] - s[i]))


def _gaussian(x, y):
    height, center, fwhm = peak(x, y)
    sigma = fwhm / GAUSS_FWHM
    return {"amplitude": height * sigma * SQRT_2PI, "center": center, "sigma": sigma}


def _lorentzian(x, y):
    height, center, fwhm = peak(x, y)
    sigma = fwhm / 2
    return {"amplitude": height * math.pi * sigma, "center": center, "sigma": sigma}


def _pseudovoigt(x, y):
    # both parts have FWHM 2 sigma (lmfit's pseudovoigt); half and half, as lmfit's guess starts
    height, center, fwhm = peak(x, y)
    sigma, fraction = fwhm / 2, 0.5
    sigma_g = sigma / math.sqrt(2 * math.log(2))
    per_amplitude = (1 - fraction) / (sigma_g * SQRT_2PI) + fraction / (math.pi * sigma)
    return {"amplitude": height / per_amplitude, "center": center, "sigma": sigma, "fraction": fraction}


# ---------------------------------------------------------------- decays, powers, polynomials


def _line(u: np.ndarray, v: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the weighted least-squares line v ~ slope u + intercept; slope 0 and
    the weighted mean when u does not vary."""
    w = weights / weights.sum()
    mu, mv = w @ u, w @ v
    var = w @ (u - mu) ** 2
    slope = (w @ ((u - mu) * (v - mv))) / var if var > 0 else 0.0
    return float(slope), float(mv - slope * mu)


def _signed_log(y: np.ndarray, keep: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The data's sign (by the larger total), and which points have it, with their log |y|."""
    sign = 1.0 if y[y > 0].sum() >= -y[y < 0].sum() else -1.0
    keep = keep & (sign * y > 0)
    return sign, keep, np.log(sign * y[keep]) if keep.any() else np.array([])


def _exponential(x, y):
    sign, keep, log_y = _signed_log(y, np.ones_like(y, dtype=bool))
    if keep.sum() < 2:
        return {"amplitude": float(y[np.argmax(np.abs(y))]) or 1.0, "decay": float(x[-1] - x[0]) or 1.0}
    slope, intercept = _line(x[keep], log_y, sign * y[keep])
    span = float(x[-1] - x[0]) or 1.0
    decay = -1 / slope if slope != 0 else 1e3 * span
    return {"amplitude": sign * math.exp(min(intercept, 700.0)), "decay": decay}


def _powerlaw(x, y):
    sign, keep, log_y = _signed_log(y, x > 0)
    if keep.sum() < 2:
        return {"amplitude": float(y[np.argmax(np.abs(y))]) or 1.0, "exponent": 1.0}
    slope, intercept = _line(np.log(x[keep]), log_y, sign * y[keep])
    return {"amplitude": sign * math.exp(min(intercept, 700.0)), "exponent": slope}


def _polyfit(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """numpy's least-squares polynomial, without its RankWarning: x with fewer distinct values than
    the degree needs still gives a start (the fit's report then says the data do not determine
    every parameter), and a library prints nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        return np.polyfit(x, y, degree)


def _linear(x, y):
    slope, intercept = _polyfit(x, y, 1)
    return {"slope": slope, "intercept": intercept}


def _quadratic(x, y):
    a, b, c = _polyfit(x, y, 2)
    return {"a": a, "b": b, "c": c}


# ---------------------------------------------------------------- dose-response


def _logistic4(x, y):
    """bottom at the small-x plateau and top at the large-x one (hill > 0 then, whichever way the
    curve goes); ec50 and hill from the points between the plateaus, in log x."""
    positive = x > 0
    lx, ly = x[positive], y[positive]
    if len(lx) < 2:
        return {"bottom": float(y.min()), "top": float(y.max()), "ec50": 1.0, "hill": 1.0}
    ends = max(1, len(y) // 10)  # a plateau: the mean of the tenth of the points at each end
    bottom, top = float(y[:ends].mean()), float(y[-ends:].mean())
    if bottom == top:
        top = bottom + (float(np.ptp(y)) or 1.0)
    share = (ly - bottom) / (top - bottom)  # 0 at the bottom plateau, 1 at the top
    log_x = np.log(lx)
    above = np.nonzero(share >= 0.5)[0]
    if len(above) and above[0] > 0:
        i, j = above[0] - 1, above[0]
        t = (0.5 - share[i]) / (share[j] - share[i]) if share[j] != share[i] else 0.5
        log_ec50 = log_x[i] + t * (log_x[j] - log_x[i])
    else:
        log_ec50 = float(np.median(log_x))
    inside = (share > 0.05) & (share < 0.95)
    hill = 1.0
    if inside.sum() >= 2 and np.ptp(log_x[inside]) > 0:
        logit = np.log(share[inside] / (1 - share[inside]))
        slope, _ = _line(log_x[inside], logit, np.ones(inside.sum()))
        if slope > 0:
            hill = slope
    return {"bottom": bottom, "top": top, "ec50": math.exp(log_ec50), "hill": hill}


GUESSES: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "gaussian": _gaussian, "lorentzian": _lorentzian, "pseudovoigt": _pseudovoigt, "logistic4": _logistic4,
    "exponential": _exponential, "linear": _linear, "quadratic": _quadratic, "powerlaw": _powerlaw,
}

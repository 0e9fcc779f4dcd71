"""Profile-likelihood confidence intervals (`--ci`, `confidence: [1, 2]`), as lmfit's `conf_interval`.

For each fitted scalar parameter, the parameter is held at a value and the others are refitted
with lm (the one loop, `Loop`, with the run's own stop rules); the refit's chi-square against the
best one gives the F-test probability (ftest.py). Each side's bound for sigma level s is where
that probability reaches erf(s / sqrt(2)). As lmfit does: step away from the best value (by the
stderr, or 20% of the value) until the probability passes the highest level, the parameter's
bound is met, or the probability stops growing; then find each level's crossing between the
best value (or the last crossing) and there. Unlike lmfit, it steps by the stderr wherever that
is finite (see `_limit`). A level the search did not reach is unreachable
(`null`). lmfit stops its root search at a relative tolerance of 5e-5; this one goes on to
ROOT_RTOL, so it agrees with lmfit to lmfit's tolerance and with the F-test to far better.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from gdfit import records
from gdfit.engine.loop import Loop
from gdfit.curves.ftest import f_compare, probability
from gdfit.fitting.lm import LevenbergMarquardt

MAX_STEPS = 200  # lmfit's maxiter: steps of the search for a value past the highest level
MIN_REL_CHANGE = 1e-5  # lmfit's min_rel_change: a probability growing slower has levelled off
ROOT_RTOL = 1e-10  # the crossing's bracket, relative to the parameter's scale
MAX_ROOT_STEPS = 100
FINISHED = (records.CONVERGED, records.STALLED)  # a refit lm ended at a minimum (stalled: no lower step at working precision)


@dataclass
class Profile:
    """One parameter's profile: every value refitted, (value, chi2, probability), and its interval."""

    name: str
    best: float
    stderr: float | None
    points: list[tuple[float, float, float]] = field(default_factory=list)
    ci: dict[str, list[float | None]] | None = None


class RefitFailed(Exception):
    """A refit did not end at a minimum: the interval beyond it cannot be trusted."""


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C) while its intervals were being found."""


def confidence_intervals(problem, theta: torch.Tensor, fitted: dict[str, Any], status: str, sigmas: list[float],
                         should_stop: Callable[[], bool] = lambda: False) -> tuple[dict[str, Any], list[Profile]]:
    """Adds `ci` to each fitted parameter in `fitted["params"]`; returns the run's `confidence`
    summary (levels, probabilities, refits, notes) and the profiles (for --ci-plot)."""
    started = time.perf_counter()
    fit, params = fitted["fit"], fitted["params"]
    summary: dict[str, Any] = {"sigmas": sigmas, "probabilities": {_key(s): probability(s) for s in sigmas},
                               "test": "F", "refits": 0, "notes": []}
    reason = _no_intervals(status, fit)
    profiles: list[Profile] = []
    if reason is not None:
        summary["notes"].append(reason)
        for name in problem.model.names:
            params[name]["ci"] = None
        return summary, profiles
    search = _Search(problem, theta, fit["chi2"], fit["dof"], sigmas, should_stop)
    try:
        for index, name in enumerate(problem.model.names):
            profile = Profile(name, float(theta[index]), params[name].get("stderr"))
            profile.ci = search.interval(index, profile, summary["notes"])
            params[name]["ci"] = profile.ci
            profiles.append(profile)
    except Stopped:
        left = [name for name in problem.model.names if "ci" not in params[name]]
        summary["notes"].append(f"interrupted: no intervals for {', '.join(left)}")
        for name in left:
            params[name]["ci"] = None
    summary["refits"] = search.refits
    summary["elapsed_s"] = time.perf_counter() - started
    return summary, profiles


def _key(sigma: float) -> str:
    return f"{sigma:g}"


def _no_intervals(status: str, fit: dict[str, Any]) -> str | None:
    """Why a fit has no intervals, or None."""
    if status != records.CONVERGED:
        return f"no intervals: the fit did not converge ({status}), so its chi-square is not the best one"
    if not fit["dof"] > 0:
        return f"no intervals: the F-test needs more points than fitted parameters (dof {fit['dof']})"
    if not (math.isfinite(fit["chi2"]) and fit["chi2"] > 0):
        return f"no intervals: the F-test needs a positive finite chi-square (chi2 {fit['chi2']})"
    return None


class _Search:
    """lmfit's search and root finding over one problem's refits."""

    def __init__(self, problem, theta: torch.Tensor, best: float, nfree: int, sigmas: list[float],
                 should_stop: Callable[[], bool]) -> None:
        self.problem, self.theta = problem, theta.detach().cpu().to(problem.dtype)
        self.best, self.nfree, self.should_stop = best, nfree, should_stop
        self.levels = [(s, probability(s)) for s in sigmas]  # ascending
        self.refits = 0

    def interval(self, index: int, profile: Profile, notes: list[str]) -> dict[str, list[float | None]]:
        bounds = {_key(s): [None, None] for s, _ in self.levels}
        cache: dict[float, float] = {}
        for side, direction in ((0, -1), (1, 1)):
            try:
                for sigma, value in self._side(index, direction, profile, cache):
                    bounds[_key(sigma)][side] = value
            except RefitFailed as err:
                notes.append(f"{profile.name}: {err}; its {'lower' if direction < 0 else 'upper'} bounds are left out")
        profile.points = sorted((x, chi2, self._probability(chi2)) for x, chi2 in cache.items())
        return bounds

    def _side(self, index: int, direction: int, profile: Profile, cache: dict[float, float]):
        """(sigma, bound) for each level this side reaches, in lmfit's order."""
        def excess(x: float, target: float) -> float:
            if x not in cache:
                cache[x] = self._chi2(index, x)
            return self._probability(cache[x]) - target

        limit, reached = self._limit(index, direction, profile, lambda x: excess(x, 0.0))
        low = profile.best
        for sigma, target in self.levels:
            if target > reached:
                return  # this level and the ones above it lie beyond the search
            low = _crossing(lambda x: excess(x, target), low, limit, max(abs(limit), abs(profile.best)))
            yield sigma, low

    def _limit(self, index: int, direction: int, profile: Profile, chance: Callable[[float], float]
               ) -> tuple[float, float]:
        """lmfit's `find_limit`: a value whose probability passes the highest level, or where the
        search stopped, and the probability there."""
        best, stderr = profile.best, profile.stderr
        # lmfit steps by the stderr only where it is below |value|, else by 20% of the value or
        # 0.001, which on a parameter near 0 with a large stderr ends its 200 steps short of a bound
        # that is there. The step only brackets the crossing: where lmfit's search reaches a level,
        # both find the same bound.
        step = stderr if stderr is not None and 0 < stderr < math.inf else max(abs(best) * 0.2, 0.001)
        low, high = float(self.problem.model.low[index]), float(self.problem.model.high[index])
        top = self.levels[-1][1]
        limit, old, new = best, 0.0, 0.0
        for _ in range(MAX_STEPS + 1):
            limit += step * direction
            at_bound = not low < limit < high
            limit = min(max(limit, low), high)
            new = chance(limit)
            change = (new - old) / max(new, old, 1e-12)
            old = new
            if new >= top or at_bound or change < MIN_REL_CHANGE:
                break
        return limit, new

    def _probability(self, chi2: float) -> float:
        return f_compare(chi2, self.best, self.nfree)

    def _chi2(self, index: int, value: float) -> float:
        """The chi-square of the best refit with parameter `index` held at `value`."""
        self.refits += 1
        name = self.problem.model.names[index]
        model = self.problem.model.fixing(name, value)
        start = torch.cat([self.theta[:index], self.theta[index + 1:]])
        theta, status = _refit(self.problem, model, start, self.should_stop)
        if status == records.INTERRUPTED or self.should_stop():
            raise Stopped
        if status not in FINISHED:
            raise RefitFailed(f"the refit at {name} = {value:.8g} ended {status}")
        host = model.host(torch.float64)
        residuals = host.predict(theta.to(torch.float64).numpy()[None])[0] - host.array(self.problem.target)
        return float(residuals @ residuals)


def _refit(problem, model, start: torch.Tensor, should_stop: Callable[[], bool]) -> tuple[torch.Tensor, str]:
    """lm on `model` from `start`, through the one loop and the run's stop rules."""
    if not model.names:  # the only fitted parameter is the one held: nothing to refit
        return start, records.CONVERGED
    config = problem.config  # lm's, as the best fit's (FitConfig refuses confidence with another optimizer)
    stepper = LevenbergMarquardt(model, problem.loss, problem.target, model.parameters(start.unsqueeze(0).clone()),
                                 config.optimizer.damping)
    loop = Loop(config, stepper, config.learning_rate, should_stop=should_stop)
    for _ in loop.chunks():
        pass
    outcome = loop.outcome
    return outcome.params["theta"][0], outcome.statuses[0]


def _crossing(excess: Callable[[float], float], a: float, b: float, scale: float) -> float:
    """Where `excess` crosses zero between a (below) and b (at or above): regula falsi with the
    Illinois modification (each side's value halved when the other side moves twice), which keeps
    the bracket and converges superlinearly on a smooth profile."""
    fa, fb = excess(a), excess(b)
    if fb <= 0:
        return b
    side = 0
    for _ in range(MAX_ROOT_STEPS):
        x = b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if not (min(a, b) < x < max(a, b)):
            x = 0.5 * (a + b)
        fx = excess(x)
        if fx == 0 or abs(b - a) <= ROOT_RTOL * scale:
            return x
        if (fx > 0) == (fb > 0):
            b, fb = x, fx
            if side == 1:
                fa *= 0.5
            side = 1
        else:
            a, fa = x, fx
            if side == -1:
                fb *= 0.5
            side = -1
    return x

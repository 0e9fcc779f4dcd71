"""When a run stops, and why: the stop rules of SPEC.md plus timeout and stall."""

from __future__ import annotations

import math

from gdfit import records
from gdfit.config import FitConfig


class StopRules:
    """Checks one run's loss after each update; returns (status, rule) once a rule fires."""

    def __init__(self, config: FitConfig, initial_loss: float, started: float) -> None:
        self.config = config
        self.ceiling = config.divergence_factor * initial_loss
        self.best = initial_loss
        self.best_iter = 0
        self.deadline = started + config.timeout_s if config.timeout_s else math.inf

    def initial(self, loss: float) -> tuple[str, str] | None:
        """A start that already meets the threshold (or has no updates to make) ends at once."""
        if not math.isfinite(loss):
            return records.DIVERGED, "the initial loss is not finite"
        if loss <= self.config.threshold:
            return records.CONVERGED, f"loss <= threshold ({self.config.threshold:g})"
        if self.config.max_iters == 0:
            return records.MAX_ITERS, "max_iters = 0"
        return None

    def check(self, k: int, loss: float, now: float, interrupted: bool) -> tuple[str, str] | None:
        """The status after update k, or None to go on. Order: diverged, converged, then limits."""
        config = self.config
        if not math.isfinite(loss):
            return records.DIVERGED, "the loss is not finite"
        if loss > self.ceiling:
            return records.DIVERGED, f"loss > {config.divergence_factor:g} x the initial loss"
        if loss <= config.threshold:
            return records.CONVERGED, f"loss <= threshold ({config.threshold:g})"
        if interrupted:
            return records.INTERRUPTED, "interrupted by a signal"
        if config.patience is not None:
            if loss < self.best * (1 - config.min_rel_improvement):
                self.best, self.best_iter = loss, k
            elif k - self.best_iter >= config.patience:
                return records.STALLED, (
                    f"no relative improvement >= {config.min_rel_improvement:g} in {config.patience} updates"
                )
        if now >= self.deadline:
            return records.TIMEOUT, f"timeout_s ({config.timeout_s:g} s) reached"
        if k >= config.max_iters:
            return records.MAX_ITERS, f"max_iters ({config.max_iters}) reached"
        return None

"""When a run stops, and why (README: "Iteration semantics", "Exit codes").

The rules are decided on [K] tensors on the runs' own device, so a GPU loop never waits for the
host between synchronisations, and the outcome is the same however often the host looks. Losses
are compared in float64, so a float32 loss is held to the threshold the user wrote, as the
tutorial's `loss.item() <= threshold` does, not to the threshold's float32 rounding.
"""

from __future__ import annotations

import torch

from gdfit import records
from gdfit.config import FitConfig


def rule_text(status: str, config: FitConfig, iters: int) -> str:
    """The stop rule that gave `status`, in words: the one place this wording lives."""
    if status == records.DIVERGED:
        if iters == 0:
            return "the initial loss is not finite"
        return f"loss not finite or > {config.divergence_factor:g} x the initial loss"
    return {
        records.CONVERGED: f"loss <= threshold ({config.threshold:g})",
        records.STALLED: f"no relative improvement >= {config.min_rel_improvement:g} in {config.patience} updates",
        records.TIMEOUT: f"timeout_s ({config.timeout_s:g} s) reached" if config.timeout_s else "timeout",
        records.INTERRUPTED: "interrupted by a signal",
        records.MAX_ITERS: f"max_iters ({config.max_iters}) reached",
    }[status]


class StopRules:
    """K runs' stop rules. `active[i]` is True while run i goes on; `updates[i]` counts its updates."""

    def __init__(self, config: FitConfig, initial: torch.Tensor) -> None:
        self.config = config
        initial = initial.to(torch.float64)
        self.ceiling = initial * config.divergence_factor
        # a start at or below the threshold has converged; a non-finite one has diverged
        self.active = torch.isfinite(initial) & (initial > config.threshold)
        self.updates = torch.zeros_like(initial, dtype=torch.long)
        self.stalled = torch.zeros_like(self.active)
        self.best = initial.clone()
        self.best_iter = torch.zeros_like(self.updates)

    FIELDS = ("ceiling", "active", "updates", "stalled", "best", "best_iter")

    def state(self) -> dict[str, torch.Tensor]:
        """The rules' state (best loss, patience counter, who is still going), on the CPU."""
        return {name: getattr(self, name).detach().cpu().clone() for name in self.FIELDS}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.FIELDS:
            setattr(self, name, state[name].to(getattr(self, name).dtype).clone())

    def after_update(self, k: int, losses: torch.Tensor) -> None:
        """Update number k was made by every active run; `losses` are the new ones."""
        config = self.config
        losses = losses.to(torch.float64)
        self.updates.add_(self.active)
        going = (losses > config.threshold) & (losses <= self.ceiling)  # NaN fails both
        if config.patience is not None:
            improved = self.active & (losses < self.best * (1 - config.min_rel_improvement))
            self.best = torch.where(improved, losses, self.best)
            self.best_iter.masked_fill_(improved, k)
            stalling = self.active & going & (k - self.best_iter >= config.patience)
            self.stalled |= stalling
            going &= ~stalling
        self.active &= going

    def outcome(self, losses: list[float], active: list[bool], limit: str) -> list[str]:
        """Each run's status, given its final loss; runs still active stopped by `limit`."""
        statuses = []
        for loss, running, stalled in zip(losses, active, self.stalled.tolist()):
            if running:
                statuses.append(limit)
            elif stalled:
                statuses.append(records.STALLED)
            elif loss <= self.config.threshold:  # False for NaN
                statuses.append(records.CONVERGED)
            else:
                statuses.append(records.DIVERGED)
        return statuses

"""Which target entries a matrix model is fitted to: missing ones left out, held-out ones hidden.

An entry is missing when the target holds NaN there (inline `.nan` or null, NaN in a .npy/.pt,
NaN or an empty cell in a CSV) or when `mask` holds 0 there. `holdout` hides a seeded share of
the observed entries from the loss; the prediction's RMSE on them is reported. The loss is the
mean over the entries left (`MaskedLoss`), so its value and gradient are those of the loss of
the observed entries alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gdfit.config import FileSource, HoldoutSpec, RandomSource, Resolved
from gdfit.errors import ConfigError, InputFileError
from gdfit.fitting.losses import Loss


@dataclass
class Entries:
    """The target's entries, split. Masks are None where every entry is in."""

    total: int
    observed: int
    fitted: torch.Tensor | None  # bool, the target's shape: entries the loss sees
    held: torch.Tensor | None  # flat indices of the held-out entries, ascending
    held_values: torch.Tensor | None  # the target there, float64

    @property
    def fitted_count(self) -> int:
        return self.observed - (0 if self.held is None else self.held.numel())

    @property
    def complete(self) -> bool:
        """Every entry of the target is known (held-out ones are known too)."""
        return self.observed == self.total

    def describe(self) -> dict[str, Any]:
        """What the start event and the result report of the split."""
        return {"entries": self.total, "observed": self.observed, "missing": self.total - self.observed,
                "held_out": 0 if self.held is None else self.held.numel(), "fitted": self.fitted_count}

    def rmse(self, predicted: torch.Tensor) -> float | None:
        """The RMSE of predicted held-out values ([h], in `held` order) against the target's."""
        if self.held_values is None:
            return None
        return float((predicted.double() - self.held_values).square().mean().sqrt())


def split(resolved: Resolved, target: torch.Tensor, build_tensor) -> Entries:
    """Missing entries (NaN, `mask`), then the held-out share of the observed ones."""
    config = resolved.config
    observed = ~torch.isnan(target)
    if config.mask is not None:
        observed &= _mask(resolved, target, build_tensor)
    count = int(observed.sum())
    if count == 0:
        raise InputFileError("every target entry is missing (NaN, or 0 in the mask): nothing to fit",
                             source=resolved.source, key="target")
    held = held_values = None
    fitted = observed
    if config.holdout is not None:
        held = _held_out(config.holdout, observed, count, resolved.source)
        fitted = observed.clone()
        fitted.view(-1)[held] = False
        held_values = target.reshape(-1)[held].double()
    everything = count == target.numel() and held is None
    return Entries(target.numel(), count, None if everything else fitted, held, held_values)


def _mask(resolved: Resolved, target: torch.Tensor, build_tensor) -> torch.Tensor:
    spec = resolved.config.mask
    mask = build_tensor(spec, "mask")
    where = spec.file if isinstance(spec, FileSource) else resolved.source
    if tuple(mask.shape) != tuple(target.shape):
        raise InputFileError(f"the mask has shape {list(mask.shape)} but the target has shape {list(target.shape)}; "
                             "they must be equal", source=where, key="mask")
    if isinstance(spec, RandomSource) or not bool(((mask == 0) | (mask == 1)).all()):
        raise InputFileError("the mask must hold only 0 (missing) and 1 (observed)", source=where, key="mask")
    return mask.to(target.device) == 1


def _held_out(spec: HoldoutSpec, observed: torch.Tensor, count: int, source: str) -> torch.Tensor:
    """Exactly round(fraction x observed) entries, drawn from the split's own seed on the CPU."""
    hidden = round(spec.fraction * count)
    if hidden < 1 or hidden >= count:
        raise ConfigError(f"holding out {spec.fraction:g} of {count} observed entries leaves "
                          f"{'none held out' if hidden < 1 else 'none to fit'}", source=source, key="holdout")
    candidates = observed.reshape(-1).nonzero().squeeze(1).cpu()
    order = torch.randperm(count, generator=torch.Generator().manual_seed(spec.seed))
    return candidates[order[:hidden]].sort().values.to(observed.device)


class MaskedLoss(Loss):
    """A loss over the entries in `keep` only: their mean, and its gradient (0 elsewhere).

    Entries left out get the prediction itself as their target, so their residual, their loss
    and their gradient are exactly 0 for every built-in loss (mse, l1, huber, smooth_l1).
    """

    def __init__(self, inner: Loss, keep: torch.Tensor) -> None:
        super().__init__(inner.numel)  # inner's numel is the count kept: the mean's denominator
        self.inner, self.keep = inner, keep
        self.name = inner.name
        self.temporaries = inner.temporaries + 1  # the filled target

    def _filled(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep, target, pred)

    def value(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        elementwise = self.inner.functional("none")(pred, self._filled(pred, target))
        return elementwise.flatten(1).sum(1, dtype=torch.float64).div_(self.numel).to(pred.dtype)

    def grad(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner.grad(pred, self._filled(pred, target))

    def functional(self, reduction: str = "mean"):
        inner, keep, count = self.inner.functional("none"), self.keep, self.numel

        def masked(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            elementwise = inner(x, torch.where(keep, t, x.detach()))
            return elementwise.sum() / count if reduction == "mean" else elementwise

        return masked


def fill_missing(target: torch.Tensor) -> torch.Tensor:
    """The target with missing (NaN) entries as 0: the loss never reads them, and summaries stay finite."""
    return torch.nan_to_num(target, nan=0.0) if bool(torch.isnan(target).any()) else target


def rms(target: torch.Tensor, keep: torch.Tensor | None) -> float:
    """The root mean square of the entries in `keep` (all when None), in float64."""
    values = target.double() if keep is None else target.double()[keep]
    return math.sqrt(float(values.square().mean())) if values.numel() else 0.0

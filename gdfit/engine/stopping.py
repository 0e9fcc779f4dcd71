"""When a run stops, and why (README: "Iteration semantics", "Exit codes").

The rules are decided on [K] tensors on the runs' own device, so a GPU loop never waits for the
host between synchronisations, and the outcome is the same however often the host looks. Losses
are compared in float64, so a float32 loss is held to the threshold the user wrote, as the
tutorial's `loss.item() <= threshold` does, not to the threshold's float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np

from gdfit.lazy import torch

from gdfit import records
from gdfit.config import FitConfig
from gdfit.words import plural


TOLERANCES = ("ftol", "xtol", "gtol")  # codes 1, 2, 3 in `StopRules.fired`; 0 is none


def _tolerances(config: FitConfig, eps: float) -> dict[str, float | None]:
    """ftol, xtol and gtol. Tolerances finer than the runs' dtype can resolve (eps) act at its
    resolution (MINPACK stops there too, with "no further improvement is possible")."""
    return {name: max(value, eps) if value else value
            for name, value in (("ftol", config.ftol), ("xtol", config.xtol), ("gtol", config.gtol))}
STUCK = "stuck"  # code 4: the update made no move at all (lbfgs's line search found no lower loss)
NOT_FINITE = "not_finite"  # code 5: no step, the curve's derivative is not finite there (lm)
STOPS = TOLERANCES + (STUCK, NOT_FINITE)  # every `fired` code's name, from 1


def rule_text(status: str, config: FitConfig, iters: int, fired: str | None = None, runaway=None) -> str:
    """The stop rule that gave `status`, in words: the one place this wording lives. `runaway`:
    the parameter a curve fit's curve stopped depending on where it stopped (lbfgs.Runaway)."""
    if status == records.STALLED and runaway is not None:
        return _plateau_text(runaway, stuck=fired == STUCK)
    if status == records.STALLED and fired == NOT_FINITE:
        return ("no step: the curve's derivative is not finite at these parameters (as for 0 to a power "
                "below 1): try another start, or bounds that keep the curve smooth")
    if status == records.STALLED and fired == STUCK:
        return "no move: the update's step was exactly zero (no step it tried lowered the loss)"
    if status == records.CONVERGED and fired:
        meaning = {"ftol": "relative loss reduction", "xtol": "relative parameter step",
                   "gtol": "largest gradient element"}[fired]
        return f"{fired}: {meaning} <= {getattr(config, fired):g}"
    if status == records.DIVERGED:
        if iters == 0:
            return "the initial loss is not finite"
        return f"loss not finite or > {config.divergence_factor:g} x the initial loss"
    return {
        records.CONVERGED: f"loss <= threshold ({config.threshold:g})",
        records.STALLED: f"no relative improvement >= {config.min_rel_improvement:g} in {plural(config.patience, 'update')}",
        records.TIMEOUT: f"timeout_s ({config.timeout_s:g} s) reached" if config.timeout_s else "timeout",
        records.INTERRUPTED: "interrupted by a signal",
        records.MAX_ITERS: f"max_iters ({config.max_iters}) reached",
    }[status]


def _plateau_text(runaway, stuck: bool) -> str:
    """A curve fit stopped on a plateau, not at a minimum: the parameter, in words."""
    how = "no step lowered the loss" if stuck else "the loss stopped improving"
    name, value = runaway.name, f"{runaway.value:.6g}"
    if math.isinf(runaway.step):
        return (f"a plateau, not a minimum: {how}, but the curve does not depend on {name} at all here "
                f"({name} = {value}), so no minimum determines it: try another start, or optimizer lm")
    return (f"a plateau, not a minimum: {how}, but the curve barely depends on {name} here (a Gauss-Newton "
            f"step would move it by {runaway.step:.3g} from {value}: a rate run off towards infinity?): "
            f"try another start, or optimizer lm")


class StopRules:
    """K runs' stop rules. `active[i]` is True while run i goes on; `updates[i]` counts its updates."""

    def __init__(self, config: FitConfig, initial: torch.Tensor, own_pace: bool = False) -> None:
        self.config = config
        # runs whose updates end at their own pace (lm's many fits: `completed` says whose did):
        # each run's updates count, and end at max_iters, on their own
        self.own_pace = own_pace
        # the rules' arrays: tensors on the runs' device, or numpy arrays for a problem computed on
        # the host (torch is then never imported); the operations below are the same in both
        self.xp = xp = np if isinstance(initial, np.ndarray) else torch
        self.device = None if xp is np else initial.device
        floating = initial.dtype.kind == "f" if xp is np else initial.is_floating_point()
        self.tolerance = _tolerances(config, xp.finfo(initial.dtype).eps if floating else 0.0)
        initial = self._float64(initial)
        self.ceiling = initial * config.divergence_factor
        # a start at or below the threshold has converged; a non-finite one has diverged
        self.active = xp.isfinite(initial) & (initial > config.threshold)
        self.updates = xp.zeros_like(initial, dtype=xp.int64)
        self.stalled = xp.zeros_like(self.active)
        self.best = initial.copy() if xp is np else initial.clone()
        self.best_iter = xp.zeros_like(self.updates)
        self.previous = initial.copy() if xp is np else initial.clone()
        self.fired = xp.zeros_like(self.updates)
        self.capped = xp.zeros_like(self.active)  # runs that reached max_iters on their own (own pace)
        self.needs_motion = bool(config.xtol or config.gtol)  # 0 or null turns a rule off

    def _float64(self, values):
        """A method's per-run numbers (a tensor, or a numpy array from the host) as float64 arrays of the rules' kind."""
        if self.xp is np:
            return np.asarray(values, dtype=np.float64)
        return torch.as_tensor(values, dtype=torch.float64, device=self.device)

    def _codes(self, values):
        """A method's per-run codes (bools, or small integers) as int64 arrays of the rules' kind."""
        if self.xp is np:
            return np.asarray(values).astype(np.int64)
        return torch.as_tensor(values, device=self.device).to(torch.int64)

    def _mask(self, values):
        if self.xp is np:
            return np.asarray(values, dtype=bool)
        return torch.as_tensor(values, dtype=torch.bool, device=self.device)

    # what a checkpoint keeps (`capped` is not: a loop at its own pace, many fits', is not checkpointed)
    FIELDS = ("ceiling", "active", "updates", "stalled", "best", "best_iter", "previous", "fired")

    def state(self) -> dict[str, torch.Tensor]:
        """The rules' state (best loss, patience counter, who is still going), on the CPU."""
        if self.xp is np:
            return {name: getattr(self, name).copy() for name in self.FIELDS}
        return {name: getattr(self, name).detach().cpu().clone() for name in self.FIELDS}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.FIELDS:
            if name in state:  # checkpoints from before the tolerances start with their defaults
                setattr(self, name, state[name].to(getattr(self, name).dtype).clone())

    def after_update(self, k: int, losses: torch.Tensor, motion=None, promised=None, stuck=None,
                     completed=None) -> None:
        if self.xp is not np:
            self._after_update(k, losses, motion, promised, stuck, completed)
            return
        # numpy's rules meet inf and NaN losses as torch's do: silently (a run that overflows is
        # `diverged`, said once in its status, not warned about at every update)
        with np.errstate(all="ignore"):
            self._after_update(k, losses, motion, promised, stuck, completed)

    def _after_update(self, k: int, losses: torch.Tensor, motion=None, promised=None, stuck=None,
                      completed=None) -> None:
        """Update number k was made by every active run (own pace: by the active runs in
        `completed`; the others are partway through theirs); `losses` are the new ones; `motion`
        (|step|, |parameters|, max |gradient| per run) when xtol or gtol is set; `promised`, the
        relative reduction a method's local model still expects (lm's), which ftol also holds to.
        These and `stuck` are tensors, or numpy arrays where a method computes them on the host."""
        config, xp = self.config, self.xp
        losses = self._float64(losses)
        updated = self.active if completed is None else self.active & self._mask(completed)
        self.updates += updated
        going = (losses > config.threshold) & (losses <= self.ceiling)  # NaN fails both
        met = self._tolerances(losses, updated, going, motion, promised)
        if met is not None:
            going &= ~met
        if stuck is not None:  # a run that cannot move would repeat the same update until max_iters
            code = self._codes(stuck)  # 1: no move (STUCK), 2: no finite derivative (NOT_FINITE)
            stopped = updated & going & (code > 0)
            self.fired = xp.where(stopped, len(TOLERANCES) + code, self.fired)
            self.stalled |= stopped
            going &= ~stopped
        self.previous = xp.where(updated, losses, self.previous)
        if config.patience is not None:
            at = self.updates if self.own_pace else k  # the same for every active run when all keep one pace
            improved = updated & (losses < self.best * (1 - config.min_rel_improvement))
            self.best = xp.where(improved, losses, self.best)
            self.best_iter = xp.where(improved, at, self.best_iter)
            stalling = updated & going & (at - self.best_iter >= config.patience)
            self.stalled |= stalling
            going &= ~stalling
        if self.own_pace:
            capped = updated & going & (self.updates >= config.max_iters)
            self.capped |= capped
            going &= ~capped
        self.active &= going if completed is None else going | ~updated

    def _tolerances(self, losses: torch.Tensor, updated: torch.Tensor, going: torch.Tensor, motion, promised
                    ) -> torch.Tensor | None:
        """Runs that met ftol, xtol or gtol in this update (least_squares' meanings), recorded; None
        when no tolerance is on (three tensor operations fewer per update, a sweep's run's default)."""
        ftol, xtol, gtol = (self.tolerance[name] for name in ("ftol", "xtol", "gtol"))
        hits = []
        if ftol:
            reduction = self.previous - losses
            hit = (reduction >= 0) & (reduction <= ftol * self.previous)
            hits.append(hit if promised is None else hit & (self._float64(promised) <= ftol))
        else:
            hits.append(None)
        step, size, gradient = (self._float64(m) for m in motion) if motion is not None else (None, None, None)
        # a step of exactly 0 is no convergence: the method found no way down (a failed line search)
        hits.append((step > 0) & (step <= xtol * (xtol + size)) if xtol and step is not None else None)
        hits.append(gradient <= gtol if gtol and gradient is not None else None)
        if all(hit is None for hit in hits):
            return None
        met = self.xp.zeros_like(going)
        for code, hit in enumerate(hits, start=1):
            if hit is not None:
                new = updated & going & hit & ~met
                self.fired = self.xp.where(new, code, self.fired)
                met |= new
        return met

    def running(self) -> int:
        """How many runs are still going (a host look: it waits for the device)."""
        return int(self.active.sum())

    def settle(self) -> None:
        """Bring the tensors that `outcome` and the loop's end read up to date (they are)."""

    def fired_rules(self) -> list[str | None]:
        """Which tolerance stopped each run, if one did."""
        return [STOPS[code - 1] if code else None for code in self.fired.tolist()]

    def outcome(self, losses: list[float], active: list[bool], limit: str) -> list[str]:
        """Each run's status, given its final loss; runs still active stopped by `limit`."""
        statuses = []
        for loss, running, stalled, fired, capped in zip(losses, active, self.stalled.tolist(), self.fired.tolist(),
                                                         self.capped.tolist()):
            if running:
                statuses.append(limit)
            elif capped:
                statuses.append(records.MAX_ITERS)
            elif stalled:
                statuses.append(records.STALLED)
            elif fired:
                statuses.append(records.CONVERGED)
            elif loss <= self.config.threshold:  # False for NaN
                statuses.append(records.CONVERGED)
            else:
                statuses.append(records.DIVERGED)
        return statuses


class HostStopRules(StopRules):
    """The same rules for one run on the CPU, on Python floats. There the host reads each update's
    loss anyway, and a float comparison costs a hundredth of a [1]-tensor operation: on a 3x3
    problem the tensor rules were half of each update. tests/engine/test_stopping.py holds both forms to
    the same decisions."""

    def __init__(self, config: FitConfig, initial, own_pace: bool = False) -> None:
        # the base's rules on Python floats, from a [1] tensor or numpy array (no torch call for numpy's)
        self.config, self.own_pace = config, own_pace
        floating = initial.dtype.kind == "f" if isinstance(initial, np.ndarray) else initial.is_floating_point()
        finfo = np.finfo if isinstance(initial, np.ndarray) else torch.finfo
        self.tolerance = _tolerances(config, finfo(initial.dtype).eps if floating else 0.0)
        self.needs_motion = bool(config.xtol or config.gtol)
        self.tolerates = any(self.tolerance.values())
        start = float(initial.reshape(-1)[0])
        # a start at or below the threshold has converged; a non-finite one has diverged
        self.scalars = {"ceiling": start * config.divergence_factor,
                        "active": math.isfinite(start) and start > config.threshold,
                        "updates": 0, "stalled": False, "best": start, "best_iter": 0, "previous": start,
                        "fired": 0, "capped": False}
        self.settle()

    def state(self) -> dict[str, torch.Tensor]:
        kinds = {"ceiling": torch.float64, "active": torch.bool, "updates": torch.long, "stalled": torch.bool,
                 "best": torch.float64, "best_iter": torch.long, "previous": torch.float64, "fired": torch.long}
        return {name: torch.tensor([self.scalars[name]], dtype=kinds[name]) for name in self.FIELDS}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.FIELDS:
            if name in state:
                self.scalars[name] = state[name].reshape(-1)[0].item()
        self.settle()

    def running(self) -> int:
        return int(self.scalars["active"])

    def after_update(self, k: int, losses: torch.Tensor, motion=None, promised=None, stuck=None,
                     completed=None) -> None:
        s, config = self.scalars, self.config
        if completed is not None and not completed[0]:
            return  # the run is partway through its update
        loss = losses.item()
        active = s["active"]
        s["updates"] += active
        going = config.threshold < loss <= s["ceiling"]  # NaN fails both
        if going and active and self.tolerates:
            going = not self._tolerance_met(loss, motion, promised)
        code = int(stuck.item()) if stuck is not None else 0  # as the base's codes
        if code and active and going:
            s["fired"], s["stalled"], going = len(TOLERANCES) + code, True, False
        if active:
            s["previous"] = loss
        if config.patience is not None and active:
            at = s["updates"] if self.own_pace else k
            if loss < s["best"] * (1 - config.min_rel_improvement):
                s["best"], s["best_iter"] = loss, at
            if going and at - s["best_iter"] >= config.patience:
                s["stalled"], going = True, False
        if self.own_pace and active and going and s["updates"] >= config.max_iters:
            s["capped"], going = True, False
        s["active"] = active and going

    def _tolerance_met(self, loss: float, motion, promised) -> bool:
        ftol, xtol, gtol = (self.tolerance[name] for name in ("ftol", "xtol", "gtol"))
        previous = self.scalars["previous"]
        step, size, gradient = (m.item() for m in motion) if motion is not None else (None, None, None)
        hits = (
            ftol and 0 <= previous - loss <= ftol * previous and (promised is None or promised.item() <= ftol),
            xtol and step is not None and 0 < step <= xtol * (xtol + size),
            gtol and gradient is not None and gradient <= gtol,
        )
        for code, hit in enumerate(hits, start=1):
            if hit:
                self.scalars["fired"] = code
                return True
        return False

    KINDS = {"ceiling": np.float64, "active": np.bool_, "updates": np.int64, "stalled": np.bool_,
             "best": np.float64, "best_iter": np.int64, "previous": np.float64, "fired": np.int64,
             "capped": np.bool_}

    def settle(self) -> None:
        """The base's fields, as [1] numpy arrays (what `outcome` and the loop's end read)."""
        for name in self.FIELDS + ("capped",):
            setattr(self, name, np.array([self.scalars[name]], dtype=self.KINDS[name]))

"""K runs as one tensor program: the engine of `gdfit sweep`, and of single runs on CUDA.

The K runs live in one tensor of shape [K, *target_shape] (as residuals d = x - target). Settings
that differ between runs are [K, 1, ...] tensors. Each run stops at its own update: a per-run
"active" mask, kept on the device, zeroes the step of finished runs, and the update at which each
stopped is recorded on the device too. The host reads the mask only every `sync_every` updates, so
on a GPU the loop never waits for the device in between, yet the results equal a check after
every update.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from gdfit import records
from gdfit.config import GD, MSE, Constant, FitConfig
from gdfit.losses import Loss
from gdfit.optimizers import make_optimizer
from gdfit.schedules import lr_factor



@dataclass
class Batch:
    """What the loop needs: the shared target and config, per-run starts and settings."""

    config: FitConfig
    target: torch.Tensor
    x0: torch.Tensor  # [K, *shape]
    loss: Loss
    lr: torch.Tensor  # [K], float64
    hyper: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer settings that vary, [K]


@dataclass
class BatchOutcome:
    """Per-run results, on the host."""

    status: list[str]
    iters: list[int]
    loss: list[float]
    x: torch.Tensor  # [K, *shape] final x, on the host
    elapsed_s: float
    history: list[float] | None = None  # run 0's loss after every update (single runs only)
    last_grad_norm: float | None = None  # run 0's |grad| in its last update (single runs only)


@dataclass
class Progress:
    """Emitted at each host synchronisation: how many runs are done, and run 0's new updates."""

    done: int
    losses: list[float] | None = None  # run 0's loss for each update since the last Progress
    snapshots: list[tuple[int, torch.Tensor, float]] | None = None  # (k, x, |grad|) when reported


def _column(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """[K] -> [K, 1, ..., 1] so it broadcasts over each run's elements."""
    return values.view(-1, *([1] * (ndim - 1)))


class BatchedDescent:
    """Iterate `progress()` to run; read `outcome` afterwards."""

    def __init__(
        self,
        batch: Batch,
        sync_every: int = 32,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        keep_history: bool = False,
        snapshot: Callable[[int], bool] = lambda k: False,
    ) -> None:
        self.batch = batch
        self.sync_every = max(1, sync_every)
        self.should_stop = should_stop
        self.clock = clock
        self.keep_history = keep_history
        self.snapshot = snapshot
        self.outcome: BatchOutcome | None = None

    @torch.no_grad()
    def progress(self) -> Iterator[Progress]:
        batch, config = self.batch, self.batch.config
        device, dtype = batch.target.device, batch.target.dtype
        d = batch.x0 - batch.target
        k_runs, n, ndim = d.shape[0], batch.target.numel(), d.dim()
        losses = batch.loss.value(d)
        initial = losses.clone()
        final_loss = initial.clone()  # each run's loss after its last update
        stop_iter = torch.zeros(k_runs, dtype=torch.long, device=device)  # updates each run made
        active = (initial > config.threshold) & torch.isfinite(initial)
        active_column = active.view(-1, *([1] * (ndim - 1)))  # a view: in-place updates show through
        stalled = torch.zeros_like(active)
        ceiling = initial * config.divergence_factor
        best, best_iter = initial.clone(), torch.zeros_like(stop_iter)
        lr = batch.lr.to(device=device, dtype=torch.float64)
        # settings stay float64 until they multiply a tensor, as a float setting would in a single run
        hyper = {name: _column(v.to(device=device, dtype=torch.float64), ndim) for name, v in batch.hyper.items()}
        optimizer = make_optimizer(config.optimizer, hyper)
        gd_on_mse = isinstance(config.optimizer, GD) and isinstance(config.loss, MSE)
        constant = isinstance(config.schedule, Constant)
        if gd_on_mse:  # x - lr * 2 (x - t) / n on d is one multiply; 1 for finished runs
            multiplier = _column((1.0 - lr * (2.0 / n)).to(dtype), ndim)
            unchanged = torch.ones_like(multiplier)
        pending_losses: list[torch.Tensor] = []
        pending_snapshots: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        history: list[float] = [float(initial[0])] if self.keep_history else []
        last_grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        started = self.clock()
        deadline = started + config.timeout_s if config.timeout_s else math.inf
        limit_status = records.MAX_ITERS
        k = 0
        if config.max_iters > 0 and bool(active.any()):
            for k in range(1, config.max_iters + 1):
                factor = 1.0 if constant else lr_factor(config.schedule, k, config.max_iters, 1.0)
                take_snapshot = self.snapshot(k)
                # run 0's |grad| is kept only for single runs, which report it (keep_history)
                if gd_on_mse:
                    if self.keep_history:  # |grad| = 2 |d| / n = 2 sqrt(loss / n), loss before the step
                        grad_norm = 2.0 * torch.sqrt(losses[0].clamp_min(0) / n)
                    if not constant:
                        multiplier = _column((1.0 - lr * (factor * 2.0 / n)).to(dtype), ndim)
                    d.mul_(torch.where(active_column, multiplier, unchanged))
                else:
                    grad = batch.loss.grad(d)
                    if self.keep_history:
                        grad_norm = torch.linalg.vector_norm(grad[0])
                    optimizer.step(d, grad, _column(lr * factor * active, ndim), k)  # finished: 0 step
                losses = batch.loss.value(d)
                # stop rules, on the device, for the runs still active (NaN fails both tests)
                stop_iter.add_(active)
                if not gd_on_mse:  # gd on mse freezes a finished run exactly (x 1), loss and all
                    final_loss = torch.where(active, losses, final_loss)
                if self.keep_history:
                    last_grad_norm = torch.where(active[0], grad_norm, last_grad_norm)
                going = (losses > config.threshold) & (losses <= ceiling)
                if config.patience is not None:
                    improved = active & (losses < best * (1 - config.min_rel_improvement))
                    best = torch.where(improved, losses, best)
                    best_iter = torch.where(improved, torch.full_like(best_iter, k), best_iter)
                    stalling = active & going & (k - best_iter >= config.patience)
                    stalled |= stalling
                    going &= ~stalling
                active.logical_and_(going)
                if self.keep_history:
                    pending_losses.append(losses[0:1])
                if take_snapshot:
                    pending_snapshots.append((k, d[0].clone(), grad_norm))
                if k % self.sync_every == 0 or k == config.max_iters:
                    done = k_runs - int(active.sum())  # the one host synchronisation per chunk
                    chunk = self._drain(pending_losses, history)
                    yield Progress(done, chunk, self._targets(pending_snapshots))
                    pending_snapshots = []
                    if done == k_runs:
                        break
                    if self.should_stop():
                        limit_status = records.INTERRUPTED
                        break
                    if self.clock() >= deadline:
                        limit_status = records.TIMEOUT
                        break
        if pending_losses or pending_snapshots:
            yield Progress(k_runs - int(active.sum()), self._drain(pending_losses, history),
                           self._targets(pending_snapshots))
        if gd_on_mse and k > 0:
            final_loss = losses
        elapsed = self.clock() - started
        self.outcome = self._outcome(active, stalled, final_loss, stop_iter, d, elapsed, limit_status,
                                     history, last_grad_norm, k)

    def _outcome(self, active, stalled, final_loss, stop_iter, d, elapsed, limit_status, history,
                 last_grad_norm, k) -> BatchOutcome:
        threshold = self.batch.config.threshold
        names = []
        for running, stall, loss in zip(active.tolist(), stalled.tolist(), final_loss.tolist()):
            if running:
                names.append(limit_status)
            elif stall:
                names.append(records.STALLED)
            elif loss <= threshold:  # False for NaN
                names.append(records.CONVERGED)
            else:
                names.append(records.DIVERGED)
        iters = stop_iter.tolist()
        return BatchOutcome(
            status=names,
            iters=iters,
            loss=final_loss.tolist(),
            x=(d + self.batch.target).cpu(),
            elapsed_s=elapsed,
            history=history[: iters[0] + 1] if self.keep_history else None,
            last_grad_norm=float(last_grad_norm) if self.keep_history and k > 0 else None,
        )

    def _drain(self, pending: list[torch.Tensor], history: list[float]) -> list[float] | None:
        if not pending:
            return None
        values = torch.cat(pending).tolist()
        pending.clear()
        history.extend(values)
        return values

    def _targets(self, snapshots: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[tuple[int, torch.Tensor, float]]:
        return [(k, d + self.batch.target, float(norm)) for k, d, norm in snapshots]


def run_all(batch: Batch, **kwargs: Any) -> BatchOutcome:
    """Run a batch to the end, ignoring progress."""
    descent = BatchedDescent(batch, **kwargs)
    for _ in descent.progress():
        pass
    return descent.outcome

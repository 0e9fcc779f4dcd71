"""The descent loop. Imports torch, never rich or typer; yields records and never prints.

Two engines run the same iteration (SPEC.md, "Iteration semantics"):
- `autograd` is the tutorial's literal loop: a fresh leaf each update, loss.backward(),
  x = x - lr * x.grad, x.detach_(), x.requires_grad_(True). It is the reference.
- `fused` keeps the residual d = x - target and applies the closed-form gradient in place under
  no_grad. For gd on mse an update is one multiply of d, and the loss one norm of d: three memory
  passes, the floor for "read x and target, write x". Tests hold it to the autograd engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from gdfit import __version__, records
from gdfit.advisor import advise
from gdfit.config import GD, MSE, Constant, Resolved
from gdfit.devices import describe, resolve_device, resolve_dtype
from gdfit.losses import Loss, make_loss
from gdfit.optimizers import make_optimizer, state_copies
from gdfit.schedules import describe as describe_schedule
from gdfit.schedules import lr_factor
from gdfit.stopping import StopRules
from gdfit.tensors import build_init, build_target

X_LIMIT = 100  # elements: larger tensors are summarised, not copied into records


@dataclass
class Problem:
    """A config made concrete: tensors on their device, the loss, the engine to use."""

    resolved: Resolved
    device: torch.device
    dtype: torch.dtype
    target: torch.Tensor
    x0: torch.Tensor
    loss: Loss
    engine: str

    @property
    def config(self):
        return self.resolved.config


def prepare(resolved: Resolved) -> Problem:
    """Resolve device and dtype once, check memory, build the target and the start."""
    config = resolved.config
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    copies = 4 + state_copies(config.optimizer)  # target, x, gradient, temporaries, optimizer state
    target = build_target(resolved, dtype, device, copies)
    x0 = build_init(resolved, target)
    engine = "fused" if config.engine == "auto" else config.engine
    return Problem(resolved, device, dtype, target, x0, make_loss(config.loss, target.numel()), engine)


def summarize(x: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Shape, min, max and max |x - target|: what the table shows of a tensor too big to print."""
    return {
        "shape": list(x.shape),
        "min": float(x.min()),
        "max": float(x.max()),
        "max_abs_error": float((x - target).abs().max()),
    }


def every_n(n: int) -> Callable[[int], bool]:
    """Report every n-th update; 0 reports none (the last is always reported)."""
    return (lambda k: k % n == 0) if n > 0 else (lambda k: False)


def versions() -> dict[str, str]:
    return {"gdfit": __version__, "torch": torch.__version__}


class Descent:
    """One run. Read `start`, iterate `steps()` for the reported updates, then read `result`."""

    def __init__(
        self,
        problem: Problem,
        report: Callable[[int], bool] | None = None,
        report_last: bool = True,
        x_limit: int = X_LIMIT,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        advice: bool = True,
        sync_every: int | None = None,
    ) -> None:
        self.problem = problem
        self.report = report or every_n(1)
        self.report_last = report_last
        self.x_limit = x_limit
        self.should_stop = should_stop
        self.clock = clock
        self.result: records.FitResult | None = None
        # On CUDA the fused engine checks stop rules on the device and syncs every 32 updates;
        # on the CPU a check per update costs nothing, so the plain loop runs (sync_every = 1).
        if sync_every is None:
            sync_every = 32 if problem.device.type == "cuda" and problem.engine == "fused" else 1
        self.sync_every = sync_every
        config = problem.config
        fn = problem.loss.functional()
        self.initial_loss = float(fn(problem.x0, problem.target))
        self.advice = advise(config, fn, problem.x0, problem.target) if advice else None
        self.start = records.StartRecord(
            config=config.model_dump(mode="json"),
            device=describe(problem.device),
            dtype=str(problem.dtype).removeprefix("torch."),
            shape=list(problem.target.shape),
            loss=self.initial_loss,
            engine=problem.engine,
            schedule=describe_schedule(config.schedule),
            x=self._snapshot(problem.x0),
            advice=self.advice,
            warnings=self._warnings(),
        )

    def _warnings(self) -> list[str]:
        config, problem = self.problem.config, self.problem
        notes = []
        stable = (self.advice or {}).get("max_stable_lr")
        if stable is not None and isinstance(config.optimizer, GD) and config.learning_rate >= stable:
            notes.append(
                f"learning_rate {config.learning_rate:g} is not below gd's stable limit {stable:.6g} "
                f"(2 / curvature): expect divergence"
            )
        floor = resolution_floor(problem)
        if 0 < config.threshold < floor:
            notes.append(
                f"threshold {config.threshold:g} is below what {config.dtype} can resolve for this target "
                f"(about {floor:.3g}); the run may never converge"
            )
        return notes

    def _snapshot(self, x: torch.Tensor) -> Any:
        if x.numel() <= self.x_limit:
            return x.detach().to("cpu", copy=True)
        return summarize(x.detach(), self.problem.target)

    def steps(self) -> Iterator[records.StepRecord]:
        """Run to the end, yielding a record for each reported update (and always the last)."""
        if self.sync_every > 1 and self.problem.engine == "fused":
            yield from self._batched_steps()
            return
        problem, config = self.problem, self.problem.config
        started = self.clock()
        rules = StopRules(config, self.initial_loss, started)
        history = [self.initial_loss]
        stop = rules.initial(self.initial_loss)
        k, loss, x = 0, self.initial_loss, problem.x0
        if stop is None:
            loop = self._autograd_updates if problem.engine == "autograd" else self._fused_updates
            for k, loss, grad_norm, current in loop():
                history.append(loss)
                stop = rules.check(k, loss, self.clock(), self.should_stop())
                if stop is not None:
                    x = current()  # computed once: the fused engine builds x from d here
                if self.report(k) or (stop is not None and self.report_last):
                    now = x if stop is not None else current()
                    yield records.StepRecord(k, loss, self._lr(k), grad_norm(), self._snapshot(now))
                if stop is not None:
                    break
        elapsed = self.clock() - started
        status, rule = stop
        self.result = records.FitResult(
            status=status,
            iters=k,
            loss=loss,
            x=self._snapshot(x),
            elapsed_s=elapsed,
            stop_rule=rule,
            history=history,
            seed=config.seed,
            device=describe(problem.device),
            versions=versions(),
        )

    def _batched_steps(self) -> Iterator[records.StepRecord]:
        """The same run through the batched loop (K = 1): stop rules on the device, one host
        synchronisation every `sync_every` updates, records emitted after each."""
        from gdfit.batched import Batch, BatchedDescent

        problem, config = self.problem, self.problem.config
        batch = Batch(
            config, problem.target, problem.x0.unsqueeze(0), problem.loss,
            lr=torch.tensor([config.learning_rate], dtype=torch.float64),
        )
        runner = BatchedDescent(
            batch, sync_every=self.sync_every, should_stop=self.should_stop, clock=self.clock,
            keep_history=True, snapshot=self.report,
        )
        history = [self.initial_loss]
        held: list[tuple[int, Any, float]] = []
        for progress in runner.progress():
            history.extend(progress.losses or [])
            if progress.done:  # the run stopped in this chunk: later snapshots are past its end
                held.extend(progress.snapshots or [])
                continue
            for k, x, norm in progress.snapshots or []:
                yield records.StepRecord(k, history[k], self._lr(k), norm, self._snapshot(x))
        outcome = runner.outcome
        iters = outcome.iters[0]
        reported = set()
        for k, x, norm in held:
            if k <= iters:
                reported.add(k)
                yield records.StepRecord(k, history[k], self._lr(k), norm, self._snapshot(x))
        x_final = outcome.x[0]
        if iters > 0 and self.report_last and iters not in reported and not self.report(iters):
            yield records.StepRecord(
                iters, outcome.loss[0], self._lr(iters), outcome.last_grad_norm, self._snapshot(x_final)
            )
        self.result = records.FitResult(
            status=outcome.status[0],
            iters=iters,
            loss=outcome.loss[0],
            x=self._snapshot(x_final),
            elapsed_s=outcome.elapsed_s,
            stop_rule=_rule_text(outcome.status[0], config),
            history=outcome.history,
            seed=config.seed,
            device=describe(problem.device),
            versions=versions(),
        )

    def _lr(self, k: int) -> float:
        config = self.problem.config
        if isinstance(config.schedule, Constant):
            return config.learning_rate
        return config.learning_rate * lr_factor(config.schedule, k, config.max_iters, config.learning_rate)

    def _autograd_updates(self):
        """The tutorial's loop, literally. Yields (k, loss, grad_norm(), x())."""
        problem, config = self.problem, self.problem.config
        fn, target = problem.loss.functional(), problem.target
        optimizer = make_optimizer(config.optimizer, exact=True)  # torch.optim's own ops
        literal_gd = isinstance(config.optimizer, GD)
        x = problem.x0.clone().requires_grad_(True)
        loss = fn(x, target)
        for k in range(1, config.max_iters + 1):
            lr = self._lr(k)
            loss.backward()
            grad = x.grad
            if literal_gd:
                x = x - lr * x.grad
            else:
                x = x.detach().clone()
                optimizer.step(x, grad, lr, k)
            x.detach_()
            x.requires_grad_(True)
            loss = fn(x, target)
            yield k, loss.item(), (lambda g=grad: float(torch.linalg.vector_norm(g))), (lambda x=x: x)

    def _fused_updates(self):
        """In place on the residual d = x - target. Yields (k, loss, grad_norm(), x()).

        No tensor here requires grad, so no graph is built; a no_grad decorator would cost more
        than the update itself, since a generator re-enters it at every yield."""
        problem, config = self.problem, self.problem.config
        target, loss_of = problem.target, problem.loss
        d = (problem.x0 - target).detach().unsqueeze(0)  # a run dimension of 1, as in a sweep
        n = target.numel()
        optimizer = make_optimizer(config.optimizer)
        gd_on_mse = isinstance(config.optimizer, GD) and isinstance(config.loss, MSE)
        previous = self.initial_loss
        for k in range(1, config.max_iters + 1):
            lr = self._lr(k)
            if gd_on_mse:
                # x - lr * 2 (x - t) / n, written on d: one multiply, no gradient tensor at all
                d.mul_(1.0 - lr * 2.0 / n)
                grad_norm = (lambda p=previous: 2.0 * math.sqrt(max(p, 0.0) / n))
            else:
                grad = loss_of.grad(d)
                optimizer.step(d, grad, lr, k)
                grad_norm = (lambda g=grad: float(torch.linalg.vector_norm(g)))
            previous = loss_of.value(d).item()
            yield k, previous, grad_norm, (lambda: d[0] + target)


def _rule_text(status: str, config) -> str:
    """The stop rule's words for a status decided on the device (see stopping.StopRules)."""
    return {
        records.CONVERGED: f"loss <= threshold ({config.threshold:g})",
        records.DIVERGED: f"loss not finite or > {config.divergence_factor:g} x the initial loss",
        records.STALLED: f"no relative improvement >= {config.min_rel_improvement:g} in {config.patience} updates",
        records.TIMEOUT: f"timeout_s ({config.timeout_s} s) reached",
        records.INTERRUPTED: "interrupted by a signal",
        records.MAX_ITERS: f"max_iters ({config.max_iters}) reached",
    }[status]


def resolution_floor(problem: Problem) -> float:
    """The loss of an x one rounding step from the target in every element: the smallest loss
    the dtype can meaningfully tell apart from zero for this target."""
    eps = torch.finfo(problem.dtype).eps
    step = problem.target.abs().clamp_min(torch.finfo(problem.dtype).tiny) * eps
    floor = problem.loss.value(step.unsqueeze(0))
    return float(floor[0])

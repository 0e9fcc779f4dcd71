"""The one descent loop: K runs of one problem, updated together until each stops.

`gdfit run` is K = 1 and `gdfit sweep` is K = many; both go through `Loop.chunks()`. Every update
the stepper moves the runs still going and returns their losses; the stop rules are decided on the
device (`stopping.StopRules`); the host looks every `sync_every` updates. Runs that stopped are
held still, so what the host sees is the same however often it looks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from gdfit.lazy import torch

from gdfit import records
from gdfit.config import FitConfig
from gdfit.fitting.optimizers import Setting
from gdfit.engine.schedules import rate
from gdfit.engine.stopping import HostStopRules, StopRules

CUDA_SYNC_EVERY = 32  # small problems on CUDA: a host look costs more than an update
SWEEP_SYNC_EVERY = 8  # sweeps on the CPU: looking at K runs costs a few tensor operations
LARGE_PROBLEM = 1 << 16  # elements per run above which an update outweighs a host look
HOST_CHUNK = 64  # one small run on the CPU: updates per chunk handed to the caller (see `Loop`)


def sync_interval(device: torch.device, runs: int, numel: int) -> int:
    """Updates between host looks: every update where looking is as cheap as updating."""
    if device.type == "cuda" and numel < LARGE_PROBLEM:
        return CUDA_SYNC_EVERY
    return 1 if runs == 1 else SWEEP_SYNC_EVERY


class Stepper(Protocol):
    params: dict[str, torch.Tensor]

    def losses(self) -> torch.Tensor: ...

    def advance(self, k: int, lr: Setting, moving: torch.Tensor | None) -> torch.Tensor: ...

    def grad_norm(self) -> torch.Tensor: ...


@dataclass
class Chunk:
    """What the host learns at one look: runs done so far, and run 0's updates when watched."""

    done: int
    losses: list[float] = field(default_factory=list)  # run 0's loss after each update since the last look
    snapshots: list[tuple[int, Any, float]] = field(default_factory=list)  # (k, capture(params), |grad|)


@dataclass
class LoopState:
    """Everything the loop needs to go on exactly where it was, at a host look (on the CPU)."""

    iters: int
    params: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, torch.Tensor]]
    rules: dict[str, torch.Tensor]
    initial: torch.Tensor
    elapsed_s: float  # time spent in the loop so far: the timeout's budget used


@dataclass
class Outcome:
    """Every run's end, on the host."""

    statuses: list[str]
    iters: list[int]
    losses: list[float]
    params: dict[str, torch.Tensor]  # [K, ...] on the CPU
    elapsed_s: float
    last_grad_norm: float | None = None  # run 0's |grad| in its last update, when watched
    fired: list[str | None] = field(default_factory=list)  # the tolerance that stopped each run
    runaways: list = field(default_factory=list)  # a curve fit's parameter each run's curve stopped depending on, or None


class Loop:
    """Iterate `chunks()` to run; read `outcome` afterwards.

    One run on the CPU looking after every update (`sync_every` 1) reads each loss anyway, so it
    decides its stop rules on the host (`HostStopRules`), asks `should_stop` (and the clock, under a
    timeout) after every update, and hands its caller a chunk every HOST_CHUNK updates of a small problem, or when it stops: on a 3x3
    problem the bookkeeping of a chunk costs as much as an update."""

    def __init__(
        self,
        config: FitConfig,
        stepper: Stepper,
        lr: Setting,
        *,
        sync_every: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        watch: Callable[[int], bool] | None = None,
        capture: Callable[[dict[str, torch.Tensor]], Any] = lambda params: {n: p[0].detach().to("cpu", copy=True)
                                                                            for n, p in params.items()},
        resume: LoopState | None = None,
        chunk_every: int | None = None,
    ) -> None:
        self.config, self.stepper, self.lr = config, stepper, lr
        self.sync_every = max(1, sync_every)
        self.should_stop, self.clock = should_stop, clock
        self.watch = watch  # None: run 0's losses are not kept; else which updates to snapshot
        # the runs' parameters ([K, ...], as the stepper holds them) -> what a snapshot of run 0 keeps (a
        # CPU copy, or a summary); it picks run 0 itself, so that it can keep a view of it between updates
        self.capture = capture
        current = stepper.losses()  # also readies the stepper's own view of its parameters
        numpy = isinstance(current, np.ndarray)  # a problem computed on the host, without torch
        self.initial = current if resume is None else resume.initial.to(current.device)
        on_cpu = numpy or current.device.type == "cpu"
        self.on_host = self.initial.shape[0] == 1 and on_cpu and self.sync_every == 1
        # lm's many fits: each run ends its updates at its own pace, and counts them to max_iters itself
        self.own_pace = getattr(stepper, "own_pace", False)
        self.rules = (HostStopRules if self.on_host else StopRules)(config, self.initial, self.own_pace)
        small = math.prod(next(iter(stepper.params.values())).shape[1:]) < LARGE_PROBLEM
        # a chunk per update where each must be seen (a checkpoint saves the state of a look)
        self.chunk_every = chunk_every or (HOST_CHUNK if self.on_host and small else self.sync_every)
        self.k, self.spent = 0, 0.0
        self.resumed_at = resume.iters if resume is not None else 0
        if resume is not None:
            self.rules.restore({name: t.to(current.device) for name, t in resume.rules.items()})
            self.k, self.spent = resume.iters, resume.elapsed_s
        self.outcome: Outcome | None = None

    def state(self) -> LoopState:
        """The loop's state now, between two chunks, on the CPU. On the CPU it shares the loop's
        tensors, which change at the next update: save it before going on."""
        stepper = self.stepper
        optimizer = getattr(stepper, "optimizer", None)
        return LoopState(
            iters=self.k,
            params={n: p.detach().cpu() for n, p in stepper.params.items()},
            optimizer={n: {k: t.detach().cpu() for k, t in st.items()} for n, st in optimizer.state.items()}
            if optimizer is not None else {},
            rules=self.rules.state(),
            initial=self.initial.detach().cpu().clone(),
            elapsed_s=self.looked - self.started if self.k > self.resumed_at else self.spent,
        )

    def chunks(self) -> Iterator[Chunk]:
        config, stepper, rules = self.config, self.stepper, self.rules
        runs = self.initial.shape[0]
        hold = runs > 1 or self.sync_every > 1  # else the loop ends as soon as the one run stops
        column = (-1,) + (1,) * (len(next(iter(stepper.params.values())).shape) - 1)
        losses, pending, snapshots = stepper.losses() if self.k else self.initial, [], []
        self.started = self.clock() - self.spent  # a resumed run has used some of its time
        deadline = self.started + config.timeout_s if config.timeout_s else math.inf
        limit, k = records.MAX_ITERS, self.k
        # the loop's last update; at its own pace each run stops itself at max_iters (rules.capped)
        last = math.inf if self.own_pace and config.max_iters > 0 else config.max_iters
        last_norm = None
        going = k < last and rules.running() > 0
        if going and config.timeout_s and self.spent >= config.timeout_s:  # resumed with its time used up
            limit, going = records.TIMEOUT, False
        while going:
            k += 1
            moving = rules.active.reshape(column) if hold else None
            losses = stepper.advance(k, rate(config.schedule, self.lr, k, config.max_iters), moving)
            if self.watch is not None and hold:  # run 0's |grad| at its own last update, learnt later
                norm = torch.as_tensor(stepper.grad_norm(), dtype=torch.float64)
                last_norm = norm if last_norm is None else torch.where(moving.flatten()[0], norm, last_norm)
            # `moving` is a view of the rules' state: read it first
            rules.after_update(k, losses, stepper.motion if rules.needs_motion else None,
                               getattr(stepper, "promised", None), getattr(stepper, "stuck", None),
                               **({"completed": stepper.completed} if self.own_pace else {}))
            if self.watch is not None:
                pending.append(losses if runs == 1 else losses[:1])  # a slice costs more than an update's product
                if self.watch(k):
                    snapshots.append((k, self.capture(stepper.params), stepper.grad_norm()))
            asked = None  # should_stop's answer, where this update asked it already
            if k % self.chunk_every and k < last:
                if not self.on_host:
                    continue
                asked = self.should_stop()
                late = deadline < math.inf and self.clock() >= deadline
                if rules.running() and not asked and not late:
                    continue
            # the host's one look at the device
            done = runs - rules.running()
            self.k, self.looked = k, self.clock()  # one clock reading per look, which a checkpoint keeps
            yield self._chunk(done, pending, snapshots)
            pending, snapshots = [], []
            if done == runs or k >= last:
                break
            if self.should_stop() if asked is None else asked:
                limit, going = records.INTERRUPTED, False
            elif self.looked >= deadline:
                limit, going = records.TIMEOUT, False
        self.k = k
        elapsed = self.clock() - self.started
        if self.watch is not None and not hold and k > self.resumed_at:
            last_norm = stepper.grad_norm()  # the loop ended at run 0's last update
        final = losses.tolist()
        rules.settle()
        active = rules.active.tolist()
        self.outcome = Outcome(
            statuses=rules.outcome(final, active, limit),
            iters=rules.updates.tolist(),
            losses=final,
            params={n: _on_cpu(p) for n, p in stepper.params.items()},
            elapsed_s=elapsed,
            last_grad_norm=float(last_norm) if last_norm is not None else None,
            fired=rules.fired_rules(),
            runaways=list(getattr(stepper, "runaways", [])),
        )

    def _chunk(self, done: int, pending: list, snapshots: list) -> Chunk:
        if len(pending) > 1:
            pending = [np.concatenate(pending) if isinstance(pending[0], np.ndarray) else torch.cat(pending)]
        losses = pending[0].tolist() if pending else []
        return Chunk(done, losses, [(k, shot, float(norm)) for k, shot, norm in snapshots])


def _on_cpu(values):
    """A parameter on the CPU: a tensor's CPU form (itself when there), a numpy array as it is."""
    return values if isinstance(values, np.ndarray) else values.detach().cpu()

"""A config made concrete, and one run of it. Imports torch, never rich or typer; yields records.

`prepare` decides device and dtype once, checks memory and builds the tensors. `Descent` is one
run (K = 1 of `loop.Loop`): it yields a `StepRecord` per reported update and leaves a `FitResult`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from gdfit.lazy import torch

from gdfit import records
from gdfit.engine.advisor import advise, shown
from gdfit.engine.checkpoint import Checkpoint, Checkpointer, check_compatible, check_optimizer_state, target_digest
from gdfit.engine.checkpoint import versions
from gdfit.config import ALS, CURVE_MODELS, GD, LBFGS, LM, MSE, ROBUST_LOSSES, ColumnSource, ExpressionModel, FitConfig, IdentityModel, LinearModel, LowRankModel, Resolved
from gdfit.files.devices import HOST, describe, resolve_device, resolve_dtype
from gdfit.fitting.losses import Loss, MeanSquared, make_loss
from gdfit.engine.loop import Loop, sync_interval
from gdfit.errors import ConfigError
from gdfit.fitting.models import ExpressionFit, Identity, Model
from gdfit.fitting.optimizers import Setting, make_optimizer
from gdfit.engine.schedules import describe as describe_schedule
from gdfit.engine.schedules import rate
from gdfit.fitting.steppers import Autograd, ClosedForm, GdOnMse
from gdfit.curves.uncertainty import check_determined, withhold
from gdfit.engine.stopping import rule_text
from gdfit.files.tensors import build_init, build_target


def working_copies(config: FitConfig) -> float:
    """Target-sized tensors one run holds at its peak, the target included (tests/engine/test_memory.py
    measures them): the target and x (a run moves its start in place), then for gd on mse
    (`GdOnMse`) one cache-sized block (half a copy at most, on a problem of a few MiB), or else the
    gradient, the optimizer's state and the larger of the loss's and the optimizer's temporaries.
    The autograd engine holds two more: each update makes a new x beside the leaf it replaces,
    and the start stays behind it."""
    if _gd_on_mse(config) and config.engine != "autograd":
        return 2.5
    if isinstance(config.optimizer, LBFGS):  # its curvature pairs: two vectors per remembered step
        return 6 + 2 * config.optimizer.history_size
    if isinstance(config.optimizer, LM):
        return 8
    optimizer = make_optimizer(config.optimizer)
    loss = make_loss(config.loss, 1)
    extra = 2 if config.engine == "autograd" else 0
    return 3 + optimizer.state_copies() + max(loss.temporaries, optimizer.temporaries()) + extra


def _gd_on_mse(config: FitConfig) -> bool:
    return isinstance(config.optimizer, GD) and isinstance(config.loss, MSE)


@dataclass
class Problem:
    """A config made concrete: tensors on their device, the model, the loss, the engine. A Descent
    of the identity model moves x0 itself (one Problem, one Descent)."""

    resolved: Resolved
    device: torch.device
    dtype: torch.dtype
    target: torch.Tensor
    x0: torch.Tensor
    model: Model
    loss: Loss
    engine: str
    copies: float | None = None  # a run's working set in target-sized tensors, where `working_copies` does not know it

    @property
    def config(self) -> FitConfig:
        return self.resolved.config


HOST_DTYPES = ("float64", "float32")  # numpy's own, computed there as torch computes them


def computes_on_host(config: FitConfig) -> bool:
    """Whether a run can compute in numpy from data to report, never loading torch: a curve fit by
    lm, whose algebra and evaluations are on the host anyway (lm.py, hostcurve.py), on the CPU
    (`auto` included: such a fit gains nothing from a GPU), with its target a data column."""
    return (isinstance(config.model, ExpressionModel) and isinstance(config.optimizer, LM)
            and config.device in ("auto", "cpu") and config.dtype in HOST_DTYPES
            and isinstance(config.target, ColumnSource)
            and isinstance(config.loss, MSE)  # a robust loss's statistics work on tensors (curves/uncertainty.py)
            and not config.confidence  # profile refits work on tensors (engine/profile.py)
            and not any(p.expr is not None for p in config.model.params.values()))  # derived: curves/derived.py


def prepare(resolved: Resolved, on_host: bool = False) -> Problem:
    """Resolve device and dtype once, check memory, build the target, the model and the start.
    With `on_host` (where `computes_on_host` allows it), the problem's arrays are numpy's and
    torch is not imported."""
    config = resolved.config
    if on_host:
        from gdfit.curves.curvefit import build_expression_fit

        check_optimizer(resolved)
        dtype = np.dtype(config.dtype)
        model, target, x0 = build_expression_fit(resolved, dtype, HOST)
        check_determined(model.points, len(model.names), config.allow_underdetermined, resolved.source)
        engine = "fused" if config.engine == "auto" else config.engine
        return Problem(resolved, HOST, dtype, target, x0, model, make_loss(config.loss, target.size, for_lm=True), engine)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    check_optimizer(resolved)
    engine = "fused" if config.engine == "auto" else config.engine
    if config.datasets is not None:
        from gdfit.curves.datasets import build_global_fit

        model, target, x0 = build_global_fit(resolved, dtype, device)
        check_determined(model.points, len(model.names), config.allow_underdetermined, resolved.source)
        return Problem(resolved, device, dtype, target, x0, model, make_loss(config.loss, target.numel()), engine)
    if isinstance(config.model, CURVE_MODELS):
        from gdfit.curves.curvefit import build_expression_fit

        model, target, x0 = build_expression_fit(resolved, dtype, device)
        check_determined(model.points, len(model.names), config.allow_underdetermined, resolved.source)
        loss = make_loss(config.loss, target.numel(), for_lm=isinstance(config.optimizer, LM))
        return Problem(resolved, device, dtype, target, x0, model, loss, engine)
    if isinstance(config.model, (LowRankModel, LinearModel)):
        from gdfit.fitting.matrix import build_matrix_problem

        model, target, x0, loss, copies = build_matrix_problem(resolved, dtype, device)
        return Problem(resolved, device, dtype, target, x0, model, loss, engine, copies)
    if not isinstance(config.model, IdentityModel):
        raise ConfigError(f"model {config.model.name!r} is not available yet", source=resolved.source, key="model")
    target = build_target(resolved, dtype, device, working_copies(config))
    x0 = build_init(resolved, target)
    loss = make_loss(config.loss, target.numel())
    return Problem(resolved, device, dtype, target, x0, Identity(), loss, engine)


LM_LIMIT = 10_000_000  # Jacobian elements (residuals x parameters) lm may hold per run
# residuals x parameters^2: the work of the SVD of lm's Jacobian at every update. 60 x 40 at rank 5
# (2,400 x 500) is 6e8, and took 10 s an update on a shared 2-core machine.
LM_WORK_LIMIT = 100_000_000


def check_optimizer(resolved: Resolved) -> None:
    """lm solves least squares: it needs the mse loss (its Jacobian's size is checked in make_stepper);
    als solves lowrank's two halves exactly, which only lowrank on mse has."""
    config = resolved.config
    if isinstance(config.optimizer, ALS) and not (isinstance(config.model, LowRankModel) and isinstance(config.loss, MSE)):
        raise ConfigError("als alternates exact least-squares solves for U and V: it fits model: {name: lowrank} "
                          "with loss: mse; use lm, lbfgs or adam for this problem", source=resolved.source, key="optimizer")
    if isinstance(config.optimizer, LBFGS) and isinstance(config.model, CURVE_MODELS):
        bounded = [name for name, p in config.model.params.items() if p.vary and (p.min is not None or p.max is not None)]
        if bounded:  # projecting an L-BFGS step breaks its curvature pairs: refuse rather than mislead
            raise ConfigError(f"lbfgs does not keep bounds (parameter {bounded[0]!r} has min or max): use optimizer "
                              "lm, which keeps them, or leave out min and max", source=resolved.source,
                              key=f"model.params.{bounded[0]}")
    robust = config.loss.name in ROBUST_LOSSES
    if isinstance(config.optimizer, LM) and not (isinstance(config.loss, MSE) or robust):
        raise ConfigError(f"lm minimises squared residuals: use loss: mse or one of {', '.join(ROBUST_LOSSES)} "
                          f"(not {config.loss.name}), or another optimizer", source=resolved.source, key="optimizer")
    if robust and isinstance(config.optimizer, LM) and not isinstance(config.model, CURVE_MODELS):
        raise ConfigError(f"loss {config.loss.name} with lm is for curve fits (model: {{expr: ..}})",
                          source=resolved.source, key="loss")
    if config.loss.name in ("soft_l1", "cauchy", "arctan") and not isinstance(config.optimizer, LM):
        raise ConfigError(f"loss {config.loss.name} is one of lm's robust losses: use optimizer: lm",
                          source=resolved.source, key="loss")


def make_stepper(problem: Problem, starts: torch.Tensor, varying: dict[str, Setting] | None = None,
                 config: FitConfig | None = None, own: bool = False):
    """The stepper for `starts` ([K, *shape]) under the problem's engine and loss, with the
    optimizer of `config` (a sweep batch's; the problem's own by default). With `own`, the stepper
    updates `starts` itself instead of a copy."""
    config = config or problem.config
    params = problem.model.parameters(starts if own else _copy(starts))
    if isinstance(config.optimizer, LM):
        from gdfit.fitting.lm import LevenbergMarquardt

        count = sum(math.prod(p.shape[1:]) for p in params.values())
        elements = math.prod(problem.target.shape) * count
        instead = "als (alternating least squares), lbfgs or adam" if type(problem.model).__name__ == "LowRank" \
            else "lbfgs or adam"
        if elements > LM_LIMIT:
            raise ConfigError(f"lm needs a Jacobian of {elements:,} elements (residuals x parameters); at most "
                              f"{LM_LIMIT:,} fit: use {instead}", source=problem.resolved.source, key="optimizer")
        if elements * count > LM_WORK_LIMIT:
            raise ConfigError(f"lm solves for all {count:,} parameters together at every update (an SVD of a "
                              f"{elements // count:,} x {count:,} Jacobian): too slow for this problem; use {instead}",
                              source=problem.resolved.source, key="optimizer")
        return LevenbergMarquardt(problem.model, problem.loss, problem.target, params, config.optimizer.damping)
    if isinstance(config.optimizer, ALS):
        from gdfit.fitting.matrix import AlternatingLeastSquares

        return AlternatingLeastSquares(problem.model, problem.loss, problem.target, params, bool(config.xtol or config.gtol))
    if isinstance(config.optimizer, LBFGS):
        from gdfit.fitting.lbfgs import LBFGSStepper

        return LBFGSStepper(problem.model, problem.loss, problem.target, params, config.optimizer.history_size,
                            config.learning_rate, config.ftol)
    optimizer = make_optimizer(config.optimizer, varying)
    track = bool(config.xtol or config.gtol)
    if problem.engine == "autograd":
        return Autograd(problem.model, problem.loss, problem.target, params, optimizer, track)
    if _gd_on_mse(config) and isinstance(problem.model, Identity) and not track:
        return GdOnMse(problem.target, params)
    if type(problem.loss) is MeanSquared and type(problem.model).__name__ == "LowRank":
        from gdfit.fitting.matrix import LowRankOnMse

        return LowRankOnMse(problem.model, problem.loss, problem.target, params, optimizer, track)
    return ClosedForm(problem.model, problem.loss, problem.target, params, optimizer, track)


def _copy(array):
    """A copy of a tensor, or of a numpy array (a problem computed on the host)."""
    return array.copy() if isinstance(array, np.ndarray) else array.clone()


def _on(device, array):
    """A tensor moved to `device`; a numpy array (a problem computed on the host) as it is."""
    return array if isinstance(array, np.ndarray) else array.to(device)


def run_starts(problem: Problem, runs: list[Resolved]) -> torch.Tensor:
    """The starts [K, ...] of a batch of runs of the problem: each run's own init or a matrix
    model's parameters from its seed; for a curve fit, the parameters' start values (the same for
    every run of a batch)."""
    if isinstance(problem.model, ExpressionFit):
        return problem.x0.unsqueeze(0).expand(len(runs), -1).clone()
    return torch.stack([run_start(problem, run) for run in runs])


def reported_x(problem: Problem, params: dict[str, torch.Tensor], x_limit: int) -> list[Any]:
    """Each run's x as a sweep reports it: the prediction for a model, a summary when large.
    Copies: a view would keep (and pickle) the whole batch's tensor."""
    model = problem.model
    if isinstance(model, ExpressionFit):
        x = model.curve(params["theta"].to(problem.device)).cpu()
    else:
        x = model.predict({n: p.to(problem.device) for n, p in params.items()}).cpu()
    return [row.clone() if row.numel() <= x_limit else summarize(row, problem.target.cpu()) for row in x]


def summarize(x: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Shape, min, max and max |x - target|: what the table shows of a tensor too big to print."""
    low, high = torch.aminmax(x)  # one pass for both
    return {
        "shape": list(x.shape),
        "min": float(low),
        "max": float(high),
        "max_abs_error": max_abs_difference(x, target.to(x.device)),
    }


SUMMARY_SLICE = 1 << 20  # elements of x - target made at a time: a big x's summary costs no copy of it


def max_abs_difference(x: torch.Tensor, target: torch.Tensor) -> float:
    """max |x - target|, NaN when any difference is NaN (as torch's max), in slices through one
    buffer (a fresh slice each time would fault its pages in anew)."""
    flat_x, flat_t = x.reshape(-1), target.reshape(-1)
    buffer = torch.empty(min(SUMMARY_SLICE, flat_x.numel()), dtype=torch.promote_types(x.dtype, target.dtype),
                         device=x.device)
    slices = []
    for i in range(0, flat_x.numel(), SUMMARY_SLICE):
        part = buffer[: min(SUMMARY_SLICE, flat_x.numel() - i)]
        slices.append(torch.sub(flat_x[i:i + SUMMARY_SLICE], flat_t[i:i + SUMMARY_SLICE], out=part).abs_().max())
    return float(torch.stack(slices).max())


def every_n(n: int) -> Callable[[int], bool]:
    """Report every n-th update; 0 reports none (the last is always reported)."""
    return (lambda k: k % n == 0) if n > 0 else (lambda k: False)


def resolution_floor(problem: Problem) -> float:
    """The loss of an x one rounding step from the target in every element: the smallest loss
    the dtype can meaningfully tell apart from zero for this target."""
    eps = torch.finfo(problem.dtype).eps
    step = problem.target.abs().clamp_min(torch.finfo(problem.dtype).tiny) * eps
    return float(problem.loss.value(step.unsqueeze(0), torch.zeros_like(step))[0])


class Descent:
    """One run. Read `start`, iterate `steps()` for the reported updates, then read `result`."""

    def __init__(
        self,
        problem: Problem,
        report: Callable[[int], bool] | None = None,
        report_last: bool = True,
        x_limit: int = records.X_LIMIT,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        advice: bool = True,
        sync_every: int | None = None,
        resume: Checkpoint | None = None,
        checkpointer: Checkpointer | None = None,
        keep_history: bool = True,
        threads: dict[str, Any] | None = None,
    ) -> None:
        self.problem = problem
        self.report = report or every_n(1)
        self.report_last = report_last
        self.x_limit = x_limit
        self._plain_x = isinstance(problem.model, Identity)  # x is what a report shows (see _capture_first)
        self._seen_x: Any = None
        self.result: records.FitResult | None = None
        self.final_params: dict[str, torch.Tensor] | None = None  # run 0's parameters at the end (for --save)
        self.profiles: list = []  # with `confidence`: each parameter's profile (for --ci-plot)
        self.should_stop = should_stop
        config = problem.config
        if sync_every is None:
            sync_every = sync_interval(problem.device, 1, math.prod(problem.target.shape))
        self.checkpointer, self.resumed = checkpointer, resume
        self.keep_history = keep_history  # False: only an even sample of the losses is kept (flat memory)
        if (resume or checkpointer) and isinstance(config.optimizer, LBFGS):
            raise ConfigError("lbfgs keeps its curvature history inside torch.optim.LBFGS, which a checkpoint "
                              "cannot hold yet: leave out --checkpoint and --resume, or use lm or adam",
                              source=problem.resolved.source, key="optimizer")
        self.digest = target_digest(problem.target) if resume or checkpointer else ""
        self.loop = Loop(
            config, self._stepper(resume), config.learning_rate,
            sync_every=sync_every, should_stop=should_stop, clock=clock, watch=self.report,
            capture=self._capture_first, resume=resume.state if resume else None,
            chunk_every=1 if checkpointer is not None else None,  # every update's state can be saved
        )
        self.initial_loss = float(self.loop.initial[0])
        self.advice = (advise(problem.loss, problem.x0, problem.target, problem.model, config.optimizer.name)
                       if advice and shown(config.optimizer.name) else None)
        self.start = records.StartRecord(
            config=config.model_dump(mode="json"),
            device=describe(problem.device),
            dtype=str(problem.dtype).removeprefix("torch."),
            shape=list(problem.target.shape),
            loss=self.initial_loss,
            engine=problem.engine,
            schedule=describe_schedule(config.schedule),
            x=self._capture(problem.model.parameters(problem.x0))[0],
            matrix=self._entries(),
            guess=getattr(problem.model, "guess", None) or None,
            advice=self.advice,
            warnings=self._warnings(),
            resumed_from=resume.state.iters if resume else None,
            threads=threads,
        )

    def _stepper(self, resume: Checkpoint | None):
        """A fresh start, or the checkpoint's parameters and optimizer state, checked first."""
        problem = self.problem
        if resume is None:  # x itself is the problem's x0, updated in place: a copy would be a third
            own = isinstance(problem.model, Identity)  # target-sized tensor (a model's start is small)
            return make_stepper(problem, problem.x0[None], own=own)
        starts = problem.x0.unsqueeze(0)
        check_compatible(resume, problem.config.model_dump(mode="json"), self.digest,
                         problem.model.parameters(starts), problem.resolved.source)
        stepper = make_stepper(problem, _start_of(problem.model, resume.state.params).to(problem.device))
        optimizer = getattr(stepper, "optimizer", None)
        if optimizer is not None:
            # the saved state must be what this optimizer keeps: made at the start (lm), or at the
            # first update (momentum, adam, rmsprop), as a probe update of zero size shows
            check_optimizer_state(resume.state.optimizer, _fresh_state(optimizer, getattr(stepper, "params", {})),
                                  resume.state.iters, problem.resolved.source)
            optimizer.state = {n: {k: t.to(problem.device) for k, t in st.items()} for n, st in resume.state.optimizer.items()}
        return stepper

    def checkpoint(self, history: list[float]) -> Checkpoint:
        """The run's state now (between two looks of the loop)."""
        threads = self.start.threads["count"] if self.start.threads else None  # None: computed in numpy
        return Checkpoint(self.loop.state(), list(history), self.start.config, self.digest, versions(),
                          threads=threads)

    def _warnings(self) -> list[str]:
        config, problem = self.problem.config, self.problem
        notes = []
        stable = (self.advice or {}).get("max_stable_lr")
        if stable is not None and isinstance(config.optimizer, GD) and config.learning_rate >= stable:
            notes.append(
                f"learning_rate {config.learning_rate:g} is not below gd's stable limit {stable:.6g} "
                f"(2 / curvature): expect divergence, or a loss that never falls"
            )
        fits_x = isinstance(problem.model, Identity)  # a model's threshold is off by default: tolerances stop it
        if fits_x and config.threshold == 0:
            notes.append(
                "threshold 0 converges only when the fit is exact in every element; "
                f"in {config.dtype} that may never happen"
            )
        elif fits_x and config.threshold < (floor := resolution_floor(problem)):  # a pass over the target: once
            notes.append(
                f"threshold {config.threshold:g} is below what {config.dtype} can resolve for this target "
                f"(about {floor:.3g}); the run may never converge"
            )
        scale = scale_note(problem.target, config.dtype, config.gtol)
        if scale:
            notes.append(scale)
        return notes

    def _snapshot(self, x: torch.Tensor) -> Any:
        if x.numel() <= self.x_limit:  # a copy: the run goes on changing x
            return x.detach().clone() if x.is_cpu else x.detach().to("cpu")
        return summarize(x.detach(), self.problem.target)

    def _entries(self) -> dict[str, Any] | None:
        """A matrix model's split of the target's entries (observed, missing, held out, fitted)."""
        entries = getattr(self.problem.model, "entries", None)
        return entries.describe() if entries is not None else None

    def _tensor_param(self, tensor: torch.Tensor) -> dict[str, Any]:
        """A tensor parameter in the end event: its value as nested lists under the size rule of
        x, else its shape, min and max (SPEC: tensor parameters carry no stderr)."""
        tensor = tensor.detach().cpu()
        if tensor.numel() <= self.x_limit:
            return {"value": tensor.tolist()}
        return {"shape": list(tensor.shape), "min": float(tensor.min()), "max": float(tensor.max())}

    def _capture_first(self, params: dict[str, torch.Tensor]) -> tuple[Any, dict[str, float] | None, float | None]:
        """`_capture` of run 0 of the loop's parameters ([1, ...]), at every reported update. x fitted
        directly, small and on the CPU, is a copy of a view of run 0 that is made again only when the
        stepper hands over another tensor (gd on mse updates x in place): at `--every 1` on a small
        problem, indexing and checking x every update would cost as much as the update."""
        x = params.get("x") if self._plain_x else None
        if x is None:
            return self._capture({n: p[0] for n, p in params.items()})
        if x is not self._seen_x:  # held, so that a new tensor is never mistaken for it
            self._seen_x, self._first_x = x, x.detach()[0]
            self._small_x = x.is_cpu and self._first_x.numel() <= self.x_limit
        if not self._small_x:
            return self._capture({"x": self._first_x})
        return self._first_x.clone(), None, None

    def _capture(self, params: dict[str, torch.Tensor]) -> tuple[Any, dict[str, float] | None, float | None]:
        """One run's x (for a model, its prediction) as reported, its parameters by name, and
        (with held-out entries) the prediction's RMSE on them."""
        holdout = getattr(self.problem.model, "holdout_rmse", None)
        return (*self._shown(params), holdout(params) if holdout is not None else None)

    def _shown(self, params: dict[str, torch.Tensor]) -> tuple[Any, dict[str, float] | None]:
        model = self.problem.model
        if isinstance(model, ExpressionFit):
            theta = params["theta"]
            # on the host, where lm works (its numpy form is built once): a report needs no torch model
            host = model.host(theta.dtype)
            curve = host.curve(host.array(theta)[None])[0]
            if not isinstance(theta, np.ndarray):  # a problem in torch reports tensors
                curve = torch.tensor(curve).to(theta.dtype)
            if math.prod(curve.shape) > self.x_limit:
                shown = {"shape": list(curve.shape), "min": float(curve.min()), "max": float(curve.max())}
            else:
                shown = curve
            return shown, model.named(theta)
        if isinstance(model, Identity):  # x is its own prediction: no batch view to make per report
            return self._snapshot(params["x"]), None
        return self._snapshot(model.predict({n: p.unsqueeze(0) for n, p in params.items()})[0]), None

    def _lr(self, k: int) -> float:
        config = self.problem.config
        if config.schedule.name == "constant":  # read at every reported update: no call
            return config.learning_rate
        return rate(config.schedule, config.learning_rate, k, config.max_iters)

    def steps(self) -> Iterator[records.StepRecord]:
        """Run to the end, yielding a record for each reported update (and always the last)."""
        history = LossHistory(list(self.resumed.history) if self.resumed else [self.initial_loss],
                              keep=self.keep_history or self.checkpointer is not None)
        held: list[tuple[int, Any, float]] = []  # snapshots of the chunk in which the run stopped
        last_reported = 0
        for chunk in self.loop.chunks():
            history.extend(chunk.losses)
            if self.checkpointer is not None and self.checkpointer.due():
                self.checkpointer.save(self.checkpoint(history.losses))
            if chunk.done:  # the run stopped in this chunk: hold its snapshots until its update is known
                held.extend(chunk.snapshots)
                continue
            for k, shot, norm in chunk.snapshots:
                last_reported = k
                yield records.StepRecord(k, history[k], self._lr(k), norm, *shot)
            history.forget()
        outcome = self.loop.outcome
        if self.checkpointer is not None:  # at the end, and after an interrupt
            self.checkpointer.save(self.checkpoint(history.losses))
        iters, status = outcome.iters[0], outcome.statuses[0]
        final = {name: _on(self.problem.device, p[0]) for name, p in outcome.params.items()}
        self.final_params = final
        for k, shot, norm in held:
            if k <= iters:
                last_reported = k
                yield records.StepRecord(k, history[k], self._lr(k), norm, *shot)
        shown, named, holdout = self._capture(final)  # once: a summary of a large x costs a pass over it
        first = self.resumed.state.iters if self.resumed else 0
        if iters > first and self.report_last and last_reported != iters:  # a finished run resumed adds none
            yield records.StepRecord(iters, outcome.losses[0], self._lr(iters), outcome.last_grad_norm, shown, named,
                                     holdout)
        fitted = withhold(self._statistics(final), status)
        if self.problem.config.confidence and fitted.get("fit") is not None:
            from gdfit.engine.profile import confidence_intervals

            fitted["confidence"], self.profiles = confidence_intervals(
                self.problem, final["theta"], fitted, status, self.problem.config.confidence, self.should_stop)
        self.result = records.FitResult(
            status=status,
            iters=iters,
            loss=outcome.losses[0],
            x=shown,
            elapsed_s=outcome.elapsed_s,
            stop_rule=rule_text(status, self.problem.config, iters, outcome.fired[0] if outcome.fired else None,
                                outcome.runaways[0] if outcome.runaways else None),
            history=history.result(iters),
            seed=self.problem.config.seed,
            device=describe(self.problem.device),
            versions=versions(),
            resumed_from=self.resumed.state.iters if self.resumed else None,
            **fitted,
        )

    def _statistics(self, final: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A curve fit's parameters with standard errors, covariance and fit statistics."""
        model = self.problem.model
        if hasattr(model, "entries"):  # a matrix model
            from gdfit.fitting.matrix import summary

            named = model.named_tensors(final)
            named.pop("prediction", None)  # that is `x`
            return {"matrix": summary(model, final, self.problem.target),
                    "params": {name: self._tensor_param(t) for name, t in named.items()}}
        if not isinstance(model, ExpressionFit):
            return {}
        from gdfit.curves.curvefit import statistics

        config = self.problem.config
        found = statistics(model, final["theta"], self.problem.target, config.absolute_sigma)
        robust = getattr(self.problem.loss, "robust", None)
        if robust is None:
            return found
        from gdfit.curves.uncertainty import robust_covariance

        found = robust_covariance(found, model, final["theta"], self.problem.target, robust, config.absolute_sigma)
        return {**found, "fit": {**found["fit"], "loss": robust.describe()}}


class LossHistory:
    """The loss after each update k (k = 0 is the start), as the reports and the result need it.
    Kept whole when something will use it (--output, --plot, a checkpoint); otherwise only the
    losses of the current look (what its step records read) and an even sample of at most
    2 * SAMPLE points (for the closing panel's sparkline), so memory stays flat however long the run."""

    SAMPLE = 1024

    def __init__(self, start: list[float], keep: bool) -> None:
        self.losses, self.base, self.keep = list(start), 0, keep
        self.sample, self.stride = list(start[:1]), 1

    def extend(self, losses: list[float]) -> None:
        self.losses.extend(losses)

    def __getitem__(self, k: int) -> float:
        return self.losses[k - self.base]

    def forget(self) -> None:
        """The current look's reports are made: drop what no later report reads."""
        if self.keep or len(self.losses) <= 1:
            return
        for k in range(self.base + 1, self.base + len(self.losses)):
            if k % self.stride == 0:
                self.sample.append(self.losses[k - self.base])
        if len(self.sample) > 2 * self.SAMPLE:  # halve the sample: every other point, twice the stride
            self.sample, self.stride = self.sample[::2], self.stride * 2
        self.base += len(self.losses) - 1
        self.losses = self.losses[-1:]

    def result(self, iters: int) -> list[float]:
        """history[k] for k = 0..iters when kept; else the even sample, ending at the last loss."""
        if self.keep:
            return self.losses[: iters + 1]
        self.forget()
        return self.sample + ([self[iters]] if iters % self.stride and iters >= self.base else [])


def scale_note(target: torch.Tensor, dtype: str, gtol: float | None = None) -> str | None:
    """A warning for data whose scale defeats the stop rules: gtol is absolute (the loss's largest
    gradient element, as least_squares' trf reads it), and the mse's gradient is of the order of
    the target's squared size, so on data smaller than sqrt(gtol) gtol can stop a fit at its start;
    and data whose squares (the loss) approach the dtype's limits lose every rule's meaning."""
    if isinstance(target, np.ndarray):  # a fit computed on the host
        if target.dtype.kind != "f" or target.size == 0:
            return None
        magnitudes = np.abs(target[np.isfinite(target)])
        largest, info = (float(magnitudes.max()) if magnitudes.size else 0.0), np.finfo(target.dtype)
        return _scale_words(largest, info, dtype, gtol)
    if not target.is_floating_point():
        return None
    values = target.detach().reshape(-1)
    if values.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(values))  # one pass, no copy
    largest = max(abs(low), abs(high))
    if not math.isfinite(largest):  # missing entries (NaN): the finite ones, 64 Ki elements at a time
        largest = 0.0
        for chunk in values.split(1 << 16):
            magnitudes = chunk.abs()
            magnitudes = magnitudes[torch.isfinite(magnitudes)]
            if magnitudes.numel():
                largest = max(largest, float(magnitudes.max()))
    return _scale_words(largest, torch.finfo(target.dtype), dtype, gtol)


def _scale_words(largest: float, info, dtype: str, gtol: float | None) -> str | None:
    if largest == 0:
        return None
    low, high = info.tiny ** 0.25, info.max ** 0.25  # the loss is a square: a quarter of the range in each direction
    if gtol and low <= largest < math.sqrt(gtol):  # largest^2 < gtol, without squaring a huge number
        return (f"the target's largest magnitude is {largest:.3g}: the loss's gradient is of the order of its "
                f"square ({largest ** 2:.3g}), below gtol {gtol:g}, so gtol (an absolute tolerance) may stop the "
                f"fit at its start; rescale the data to magnitudes near 1, or set gtol: 0")
    if low <= largest <= high:
        return None
    return (f"the target's largest magnitude is {largest:.3g}, so far from 1 that its squares (the loss) are near the "
            f"limits of {dtype}: the stop rules (threshold, ftol, xtol, gtol) may stop the fit far from the optimum "
            f"and its figures mean little; rescale the data to magnitudes near 1 (and the parameters with it)")


def _fresh_state(optimizer, params: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The state a fresh optimizer keeps per parameter after one update (a zero step on copies)."""
    fresh = {name: dict(state) for name, state in optimizer.state.items() if state}
    update = getattr(optimizer, "update", None)
    for name, p in params.items():
        if name not in fresh and update is not None:
            probe: dict[str, torch.Tensor] = {}
            with torch.no_grad():
                copy = p.detach().clone()
                update(copy, torch.zeros_like(copy), 0.0, 1, probe)
            fresh[name] = probe
    return fresh


def _start_of(model: Model, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The starts tensor [K, ...] that `model.parameters` turns into these parameters."""
    if hasattr(model, "start_of"):
        return model.start_of(params)
    return params["theta"] if isinstance(model, ExpressionFit) else params["x"]


def run_start(problem: Problem, resolved: Resolved) -> torch.Tensor:
    """One run's start for `problem`'s model, from its own config (a sweep's run: its seed, its init)."""
    start = getattr(problem.model, "start", None)
    if start is not None:  # a matrix model draws its parameters from the seed
        return start(resolved.config.seed, problem.dtype, problem.device)
    return build_init(resolved, problem.target)


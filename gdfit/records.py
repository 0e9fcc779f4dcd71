"""What the engine yields and the renderers consume. No torch types leak past `x` (a CPU tensor)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

CONVERGED = "converged"
MAX_ITERS = "max_iters"
DIVERGED = "diverged"
INTERRUPTED = "interrupted"
TIMEOUT = "timeout"
STALLED = "stalled"
ERROR = "error"  # a sweep run whose batch raised (on a Dask worker, say); the others go on
STATUSES = (CONVERGED, MAX_ITERS, DIVERGED, STALLED, TIMEOUT, INTERRUPTED, ERROR)
X_LIMIT = 100  # elements: larger tensors are summarised in records, not copied (--x-limit)


@dataclass(frozen=True)
class StartRecord:
    """The problem as resolved: config, device, dtype, shape, initial loss, advice."""

    config: dict[str, Any]
    device: str
    dtype: str
    shape: list[int]
    loss: float
    engine: str
    schedule: str
    x: Any = None  # CPU tensor of the start, or a summary dict when too large to report
    advice: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    resumed_from: int | None = None  # the checkpoint's update count, when the run goes on from one
    matrix: dict[str, Any] | None = None  # a matrix model's entries: entries, observed, missing, held_out, fitted
    guess: dict[str, float] | None = None  # a built-in curve's starts guessed from the data
    threads: dict[str, Any] | None = None  # torch's intra-op threads, {count, why}; None where torch is not used


@dataclass(frozen=True)
class StepRecord:
    """One update: its number k, the loss at the new x, x itself when reported, and |grad|."""

    iter: int
    loss: float
    lr: float
    grad_norm: float | None = None
    x: Any = None  # CPU tensor, only on reported updates
    params: dict[str, float] | None = None  # a curve fit's parameters by name, on reported updates
    holdout_rmse: float | None = None  # the prediction's RMSE on the held-out entries (`holdout`)


@dataclass(frozen=True)
class FitResult:
    """How a run ended; `history[k]` is the loss after k updates (history[0] the start), or, for a
    run that nothing asked to keep it for (`Descent(keep_history=False)`), an even sample of it."""

    status: str
    iters: int
    loss: float
    x: Any
    elapsed_s: float
    stop_rule: str
    history: list[float]
    seed: int
    device: str
    versions: dict[str, str]
    resumed_from: int | None = None  # the update count of the checkpoint this run went on from
    # a curve fit's results: {NAME: {value, stderr[, fixed]}}, the covariance of the fitted
    # parameters, and n, p, dof, rss, residual_std, chi2, reduced_chi2, r2, aic, bic, missing
    params: dict[str, Any] | None = None
    covariance: list[list[float]] | None = None
    fit: dict[str, Any] | None = None
    # with `confidence`: the levels and their probabilities, the refits made, and why any interval is null
    confidence: dict[str, Any] | None = None
    # a matrix model's results: its entries (as StartRecord.matrix), holdout_rmse, and for lowrank
    # on a complete target singular_values {fitted, target, method}
    matrix: dict[str, Any] | None = None

    @property
    def updates_per_s(self) -> float | None:
        return self.iters / self.elapsed_s if self.elapsed_s > 0 else None


@dataclass(frozen=True)
class SweepPlan:
    """How a sweep's runs are split into batches that fit in memory, and where they run."""

    device: str
    dtype: str
    shape: list[int]
    runs: int
    batch_size: int
    batches: int
    advice: dict[str, Any]  # the step-size advisor at the first run's start
    why: str = ""  # why there is more than one batch


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a sweep: the grid values it set and how it ended."""

    params: dict[str, Any]
    status: str
    iters: int
    loss: float
    x: Any  # CPU tensor, or a summary dict when large
    error: str | None = None  # what went wrong, for status "error"
    holdout_rmse: float | None = None  # a matrix model's RMSE on its held-out entries


# a batch's results travel as columns, one list (or a stacked tensor) per field but the params
RUN_COLUMNS = [f.name for f in fields(RunRecord) if f.name != "params"]


def run_records(params: list[dict[str, Any]], columns: dict[str, Any]) -> list[RunRecord]:
    """The RunRecords of a batch's runs: each run's params, and the other fields as columns
    (RUN_COLUMNS, each a list or a tensor of one row per run)."""
    return list(map(RunRecord, params, *(columns[name] for name in RUN_COLUMNS)))


class Renderer(Protocol):
    """What `gdfit run` feeds a view: one start, the reported steps, one end (or an abort)."""

    def start(self, rec: StartRecord) -> None: ...

    def step(self, rec: StepRecord) -> None: ...

    def end(self, result: FitResult) -> None: ...

    def abort(self) -> None:
        """The run failed before its end record: leave the output tidy."""

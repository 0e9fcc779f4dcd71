"""What the Python API returns: a fit's `Result` and a sweep's `SweepResult`.

A Result is read from the same `FitResult` record the CLI renders, and `to_dict()` is the same
`--output` document (`gdfit.render.document`), so the API and the CLI cannot disagree.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gdfit import records
from gdfit.errors import GdfitError
from gdfit.words import plural

if TYPE_CHECKING:
    from gdfit.engine.descent import Descent


@dataclass(frozen=True)
class Param:
    """One fitted parameter: its value (a number, or nested lists for a matrix model's tensor) and
    standard error (None where there is none; inf or NaN where the data do not determine it).
    `fields` holds every field the result document gives it (`fixed`, and more as features add)."""

    name: str
    value: Any
    stderr: float | None = None
    fixed: bool = False
    fields: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        if isinstance(self.value, (int, float)):
            error = "" if self.stderr is None else f" ± {self.stderr:.3g}"
            return f"{self.name} = {self.value:.8g}{error}{' (fixed)' if self.fixed else ''}"
        return f"{self.name} = {_describe_tensor(self.fields)}"


def _describe_tensor(fields: dict[str, Any]) -> str:
    if "shape" in fields:
        return f"tensor of shape {fields['shape']}"
    shape = np.shape(fields.get("value"))
    return f"tensor of shape {list(shape)}"


def _array(value: Any) -> Any:
    """A CPU tensor as a numpy array (bfloat16, which numpy lacks, as float32, which holds it
    exactly); a summary dict (a tensor too large to report) as it is."""
    if value is None or isinstance(value, dict):
        return value
    if not hasattr(value, "numpy"):
        return np.asarray(value)
    if str(getattr(value, "dtype", "")) == "torch.bfloat16":
        value = value.float()
    return value.numpy()


class Result:
    """The outcome of `gdfit.fit`: the `end` event's fields as attributes, and more.

    - `status`, `iters`, `loss`, `stop_rule`, `elapsed_s`, `updates_per_s`, `seed`, `device`: as in
      the `end` event;
    - `x`: the fitted tensor (for a model, its prediction) as a numpy array, or a summary dict
      (`shape`, `min`, `max`) when it has more than 100 elements;
    - `params`: `{name: Param}` with `value` and `stderr` (curve fits; matrix models' tensors);
    - `covariance`: the fitted scalar parameters' covariance as a numpy array, in `params` order;
    - `fit`: the statistics (`n`, `p`, `dof`, `rss`, `chi2`, `reduced_chi2`, `r2`, `aic`, `bic`, ...);
    - `history`: the loss at the start and after every update, as a numpy array;
    - `config`: the resolved config; `warnings`: what the CLI would print as warnings.
    """

    def __init__(self, descent: Descent) -> None:
        record = descent.result
        assert record is not None, "a Result is read from a finished descent"  # internal invariant
        self._descent = descent
        self.record: records.FitResult = record
        self.config: dict[str, Any] = descent.start.config
        self.warnings: list[str] = list(descent.start.warnings)
        self.status: str = record.status
        self.iters: int = record.iters
        self.loss: float = record.loss
        self.stop_rule: str = record.stop_rule
        self.elapsed_s: float = record.elapsed_s
        self.updates_per_s: float | None = record.updates_per_s
        self.seed: int = record.seed
        self.device: str = record.device
        self.x: Any = _array(record.x)
        self.fit: dict[str, Any] | None = record.fit
        self.matrix: dict[str, Any] | None = record.matrix
        self.history: np.ndarray = np.asarray(record.history, dtype=float)
        self.params: dict[str, Param] = {
            name: Param(name, entry.get("value"), entry.get("stderr"), bool(entry.get("fixed", False)), dict(entry))
            for name, entry in (record.params or {}).items()
        }
        covariance = record.covariance
        self.covariance: np.ndarray | None = None if covariance is None else np.asarray(covariance, dtype=float)

    @property
    def converged(self) -> bool:
        return self.status == records.CONVERGED

    def to_dict(self) -> dict[str, Any]:
        """The `--output` document: the `end` event's fields, `config` and `history`, as strict JSON
        reads them back (non-finite numbers as None, tensors as nested lists)."""
        from gdfit.render.document import result_document
        from gdfit.render.jsonl import dumps

        return json.loads(dumps(result_document(self.record, self.config)))

    def report(self, width: int = 100) -> str:
        """The closing panel of `gdfit run` (a curve fit's fit report), as plain text."""
        from rich.console import Console

        from gdfit.render.human import result_panel

        out = io.StringIO()
        console = Console(file=out, width=width, color_system=None, force_terminal=False, no_color=True)
        console.print(result_panel(self.record, self.config))
        return out.getvalue()

    def predict(self, dataset: int | None = None, **data: Any) -> np.ndarray | list[np.ndarray]:
        """The fitted model's prediction (unweighted: the model's values, not divided by sigma).

        A curve fit takes new values of its data columns (`predict(t=[0.5, 1.0])`); `linear` takes
        new `inputs`; with no data, the prediction on the fitted data (the points with a target:
        a missing one's row is left out; for the identity model, x itself). A global fit
        (`datasets:`) gives a list, each dataset's prediction in the config's order: on its own
        fitted data, or with new columns (`predict(t=[0, 1])`) each dataset's
        expression at them; `dataset=I` gives dataset I's prediction alone, as an array (new data
        for one dataset: `predict(dataset=1, t=[0, 1])`)."""
        problem, final = self._descent.problem, self._descent.final_params
        model = problem.model
        parts = getattr(model, "parts", None)
        if parts is not None:  # a global fit: each dataset's expression
            if dataset is None:
                try:
                    return [_curve_at(part, final["theta"], data, f"dataset {i}: ") for i, part in enumerate(parts)]
                except GdfitError as err:
                    err.hint = "predict(dataset=I, COLUMN=[...]) predicts dataset I alone"
                    raise
            if not isinstance(dataset, int) or not 0 <= dataset < len(parts):
                raise GdfitError(f"dataset={dataset!r}: the fit has datasets 0 to {len(parts) - 1}", key="predict")
            return _curve_at(parts[dataset], final["theta"], data)
        if dataset is not None:
            raise GdfitError("dataset= is for global fits (datasets:); this fit has one", key="predict")
        if hasattr(model, "curve_on"):  # a curve fit: the expression at the given columns
            return _curve_at(model, final["theta"], data)
        named = model.named_tensors(final)
        if not data:
            return named["prediction"].detach().cpu().numpy()
        if set(data) == {"inputs"} and "W" in named:
            inputs = np.asarray(data["inputs"], dtype=float)
            inputs = inputs[:, None] if inputs.ndim == 1 else inputs
            weights = named["W"].detach().cpu().numpy()
            value = inputs @ weights
            return value + named["b"].detach().cpu().numpy() if "b" in named else value
        taken = "inputs" if "W" in named else "no data"
        raise GdfitError(f"this model takes {taken}, got {', '.join(sorted(data))}", key="predict")

    def __repr__(self) -> str:
        head = f"Result(status={self.status!r}, iters={self.iters}, loss={self.loss:.6g}, stop_rule={self.stop_rule!r}"
        if not self.params:
            return head + ")"
        shown = list(self.params.values())[:8]
        more = f", ... {len(self.params) - len(shown)} more" if len(self.params) > len(shown) else ""
        return head + ",\n       params: " + ", ".join(map(repr, shown)) + more + ")"


def _curve_at(model: Any, theta: Any, data: dict[str, Any], where: str = "") -> np.ndarray:
    """A curve fit's unweighted expression on its fitted data (no `data`), or at new values of
    the data columns it uses. `where` prefixes an error (a global fit's dataset)."""
    if not data:
        if isinstance(theta, np.ndarray):  # a fit computed on the host: its numpy form, no torch
            return np.array(model.host(theta.dtype).curve(theta[None])[0])
        return model.curve(theta.unsqueeze(0))[0].detach().cpu().numpy()
    needed = set(model.columns)
    unknown = sorted(set(data) - needed)
    missing = sorted(needed - set(data))
    if unknown or missing:
        wanted = ", ".join(sorted(needed)) or "no data columns"
        problem = f"unknown column {unknown[0]!r}" if unknown else f"column {missing[0]!r} is missing"
        raise GdfitError(f"{where}{problem}; the expression uses {wanted}", key="predict")
    columns = {name: np.atleast_1d(np.asarray(value, dtype=float)) for name, value in data.items()}
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1 or any(c.ndim != 1 for c in columns.values()):
        raise GdfitError(f"{where}the data columns must be 1-D and of one length", key="predict")
    if isinstance(theta, np.ndarray):
        return np.array(model.host(theta.dtype).curve_on(columns, theta[None])[0])
    import torch

    tensors = {name: torch.as_tensor(c, dtype=theta.dtype, device=theta.device) for name, c in columns.items()}
    return model.curve_on(tensors, theta.unsqueeze(0))[0].cpu().numpy()


@dataclass(frozen=True)
class SweepResult:
    """The outcome of `gdfit.sweep`: every run in grid order, the best, and the counts by status.

    `runs[i]` is a `RunRecord` (`params`: the grid values it set, `status`, `iters`, `loss`, `x`);
    `to_dict()` is the `--output` document of `gdfit sweep ... --output result.json`.
    """

    runs: list[records.RunRecord]
    grid: dict[str, list[Any]]
    config: dict[str, Any]
    plan: records.SweepPlan
    best: records.RunRecord | None
    elapsed_s: float
    document: dict[str, Any] = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Runs by status."""
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The sweep's `--output` document, as strict JSON reads it back."""
        from gdfit.render.jsonl import dumps

        return json.loads(dumps(self.document))

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        best = "none" if self.best is None else (
            ", ".join(f"{k}={v!r}" for k, v in self.best.params.items())
            + f": {self.best.status} after {plural(self.best.iters, 'update')}, loss {_short(self.best.loss)}")
        return f"SweepResult({len(self.runs)} runs: {counts}; best: {best})"


def _short(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)

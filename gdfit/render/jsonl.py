"""Strict JSON Lines (RFC 8259): non-finite numbers become null, tensors nested lists."""

from __future__ import annotations

import json
import math
import time
from typing import IO, Any

from gdfit import records


def strict(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities as None, tensors and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "tolist"):  # a tensor or numpy array, without importing either here
        return strict(value.tolist())
    return value


def _as_list(value: Any) -> Any:
    if hasattr(value, "tolist"):  # a tensor or numpy array
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """One strict JSON document on one line. The C encoder goes first; only a document holding
    NaN or an infinity takes the slower walk that writes them as null."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_as_list)
    except ValueError:
        return json.dumps(strict(value), allow_nan=False, separators=(",", ":"))


def tensor_field(x: Any) -> dict[str, Any]:
    """`x` for small tensors; a big one is left out, with its summary under `x_summary`."""
    if isinstance(x, dict):
        return {"x_summary": x}
    return {"x": x} if x is not None else {}


def start_event(rec: records.StartRecord) -> dict[str, Any]:
    event = {
        "event": "start",
        "config": rec.config,
        "device": rec.device,
        "dtype": rec.dtype,
        "shape": rec.shape,
        "loss": rec.loss,
        "engine": rec.engine,
        "schedule": rec.schedule,
        "advice": rec.advice,
        "warnings": rec.warnings,
    }
    if rec.matrix is not None:
        event["matrix"] = rec.matrix
    return {**event, **tensor_field(rec.x)}


def step_event(rec: records.StepRecord) -> dict[str, Any]:
    event = {"event": "step", "iter": rec.iter, "loss": rec.loss, "lr": rec.lr, "grad_norm": rec.grad_norm}
    if rec.holdout_rmse is not None:
        event["holdout_rmse"] = rec.holdout_rmse
    params = {"params": rec.params} if rec.params is not None else {}
    return {**event, **params, **tensor_field(rec.x)}


def fit_fields(result: records.FitResult) -> dict[str, Any]:
    """A curve fit's `params`, `covariance` and `fit`; nothing for x fitted directly, whose end
    event stays as it was. An infinite stderr or covariance (a parameter the data do not
    determine) is written as null by `dumps`."""
    if result.params is None:
        return {}
    if result.fit is None:  # a matrix model: tensor parameters, no covariance
        return {"params": result.params}
    return {"params": result.params, "covariance": result.covariance, "fit": result.fit}


def end_fields(result: records.FitResult) -> dict[str, Any]:
    """The `end` event's fields, which the --output document also carries at its top level."""
    return {
        "status": result.status,
        "iters": result.iters,
        "loss": result.loss,
        **tensor_field(result.x),
        "elapsed_s": result.elapsed_s,
        "updates_per_s": result.updates_per_s,
        "stop_rule": result.stop_rule,
        "seed": result.seed,
        "device": result.device,
        "versions": result.versions,
        **({"resumed_from": result.resumed_from} if result.resumed_from is not None else {}),
        **fit_fields(result),
        **_matrix_fields(result),
    }


def _matrix_fields(result: records.FitResult) -> dict[str, Any]:
    """A matrix model's end: `holdout_rmse` at the top (as in step events) and `matrix`."""
    if result.matrix is None:
        return {}
    fields: dict[str, Any] = {"matrix": result.matrix}
    if result.matrix.get("holdout_rmse") is not None:
        fields["holdout_rmse"] = result.matrix["holdout_rmse"]
    return fields


def error_event(kind: str, message: str) -> dict[str, Any]:
    return {"event": "error", "kind": kind, "message": message}


class JsonLinesRenderer:
    """Writes one event per line; flushes at most every `flush_s` so pipes still stream."""

    def __init__(self, out: IO[str], flush_s: float = 0.1) -> None:
        self.out = out
        self.flush_s = flush_s
        self.last_flush = time.monotonic()

    def emit(self, event: dict[str, Any], force: bool = False) -> None:
        self.out.write(dumps(event) + "\n")
        now = time.monotonic()
        if force or now - self.last_flush >= self.flush_s:
            self.out.flush()
            self.last_flush = now

    def start(self, rec: records.StartRecord) -> None:
        self.emit(start_event(rec), force=True)

    def step(self, rec: records.StepRecord) -> None:
        self.emit(step_event(rec))

    def end(self, result: records.FitResult) -> None:
        self.emit({"event": "end", **end_fields(result)}, force=True)

    def abort(self) -> None:
        """Nothing to tidy: every line written is whole."""
        self.out.flush()

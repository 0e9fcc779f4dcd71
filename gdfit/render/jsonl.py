"""Strict JSON Lines (RFC 8259): non-finite numbers become null, tensors nested lists."""

from __future__ import annotations

import json
import math
import time
from typing import IO, Any, Callable

import orjson

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
    if rec.guess is not None:
        event["guess"] = rec.guess
    if rec.threads is not None:
        event["threads"] = rec.threads
    return {**event, **tensor_field(rec.x)}


def step_event(rec: records.StepRecord) -> dict[str, Any]:
    event = {"event": "step", "iter": rec.iter, "loss": rec.loss, "lr": rec.lr, "grad_norm": rec.grad_norm}
    if rec.holdout_rmse is not None:
        event["holdout_rmse"] = rec.holdout_rmse
    params = {"params": rec.params} if rec.params is not None else {}
    return {**event, **params, **tensor_field(rec.x)}


def step_line(rec: records.StepRecord) -> str:
    """`dumps(step_event(rec))`, made by orjson for the usual record (x a tensor, an array or left
    out; no params or holdout): the same bytes at a fraction of the cost, where `repr` of each float
    was most of a step line's cost. orjson writes the shortest round-trip digits, as repr does, and
    NaN and infinities as null; it spells only numbers below 1e-4 differently (0.00001 and 1e-7,
    where Python writes 1e-05 and 1e-07), and those are handed to it as repr writes them. A value
    orjson does not take (a numpy scalar, a 0-dim tensor, an integer past 64 bits) sends the record
    down the general path."""
    x = rec.x
    if rec.params is None and rec.holdout_rmse is None and (x is None or hasattr(x, "tolist")):
        event = {"event": "step", "iter": rec.iter, "loss": _spelled(rec.loss), "lr": _spelled(rec.lr),
                 "grad_norm": _spelled(rec.grad_norm)}
        try:
            if x is not None:
                shown = orjson.dumps(x.tolist())
                if b"e-" in shown or b"0.0000" in shown:  # a number below 1e-4 in x
                    shown = orjson.dumps(_spelled_all(x.tolist()))
                event["x"] = orjson.Fragment(shown)
            return orjson.dumps(event).decode()
        except orjson.JSONEncodeError:
            pass
    return dumps(step_event(rec))


def _spelled(value: Any) -> Any:
    """A float below 1e-4 as repr writes it, for orjson to copy; any other value as it is."""
    if type(value) is float and abs(value) < 1e-4:  # NaN compares false: orjson writes null
        return orjson.Fragment(repr(value))
    return value


def _spelled_all(value: Any) -> Any:
    """`_spelled` of each number in nested lists."""
    return [_spelled_all(v) for v in value] if type(value) is list else _spelled(value)


def fit_fields(result: records.FitResult) -> dict[str, Any]:
    """A curve fit's `params`, `covariance` and `fit`; nothing for x fitted directly, whose end
    event stays as it was. An infinite stderr or covariance (a parameter the data do not
    determine) is written as null by `dumps`."""
    if result.params is None:
        return {}
    if result.fit is None:  # a matrix model: tensor parameters, no covariance
        return {"params": result.params}
    fields = {"params": result.params, "covariance": result.covariance, "fit": result.fit}
    return fields if result.confidence is None else {**fields, "confidence": result.confidence}


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


FLUSH_S = 0.05  # the longest a line is held while lines keep coming (README: Output, "When lines arrive")


class JsonLinesRenderer:
    """Writes one event per line. Lines are held and written out together, in one write call,
    when a line comes `flush_s` or more after the last write-out; the start and end events, and
    an abort (an error, a second Ctrl-C), write out at once. So a reader of a pipe sees lines
    that come further apart than `flush_s` at once, and steady faster ones at most `flush_s`
    plus one report interval late; all of them before the process exits. A failed write
    (EPIPE, ENOSPC) reaches stdout's guard at the write-out, which stops the run."""

    def __init__(self, out: IO[str], flush_s: float = FLUSH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.flush_s = flush_s
        self.clock = clock
        self.held: list[str] = []
        self.last_flush = -math.inf  # the first line goes out at once

    def emit(self, line: str, force: bool = False) -> None:
        self.held.append(line)
        now = self.clock()
        if force or now - self.last_flush >= self.flush_s:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write out the lines held, in one write call where stdout has a descriptor."""
        self.last_flush = self.clock() if now is None else now
        if not self.held:
            return
        text = "\n".join(self.held) + "\n"
        self.held.clear()
        write_all = getattr(self.out, "write_all", None)  # gdfit.files.stdout.GuardedStdout
        if write_all is not None:
            write_all(text)
        else:
            self.out.write(text)
            self.out.flush()

    def start(self, rec: records.StartRecord) -> None:
        self.emit(dumps(start_event(rec)), force=True)

    def step(self, rec: records.StepRecord) -> None:
        self.emit(step_line(rec))

    def end(self, result: records.FitResult) -> None:
        self.emit(dumps({"event": "end", **end_fields(result)}), force=True)

    def abort(self) -> None:
        """Write out what is held: every line written is whole."""
        self.flush()

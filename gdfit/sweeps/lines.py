"""A sweep journal's lines checked against its grid before they are trusted: each must be a run
event of a run of this grid (its index in range, its params that index's values), with a known
status, whole-number iters within max_iters, a loss >= 0 (a non-finite one as text, never on a
converged run) and an x that is an array of numbers. The first record of a run is kept; a repeat, or a
line that fails a check, is left out and reported, and a resume runs that run again."""

from __future__ import annotations

import math
from typing import Any

from gdfit import records
from gdfit.errors import InputFileError
from gdfit.sweeps.grid import MAX_RUNS
from gdfit.words import plural


class BadLine(ValueError):
    """Why a journal line is not a record of this sweep (plain words)."""


def check_grid(grid: Any, total: Any, source: str) -> None:
    """The saved grid is a mapping of value lists whose runs number `total`, within the run limit."""
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise InputFileError("config.json: grid is not a mapping of value lists", source=source)
    count = math.prod(len(v) for v in grid.values())
    if count > MAX_RUNS:
        raise InputFileError(f"config.json: the grid has {count:,} runs; at most {MAX_RUNS:,}", source=source)
    if not isinstance(total, int) or isinstance(total, bool) or total != count:
        raise InputFileError(f"config.json: runs is {total!r}, but its grid has {plural(count, 'run')}", source=source)


def params_at(grid: dict[str, list[Any]], index: int) -> dict[str, Any]:
    """The values run `index` takes, in the grid's order (the last key changes fastest)."""
    values = {}
    for key in reversed(list(grid)):
        index, position = divmod(index, len(grid[key]))
        values[key] = grid[key][position]
    return {key: values[key] for key in grid}


def read_line(event: Any, grid: dict[str, list[Any]], total: int, max_iters: Any = None) -> tuple[int, dict[str, Any]]:
    """(index, event) of a valid run line; BadLine says what is wrong with any other. `max_iters`
    is the sweep's (a run that sweeps it has its own), the most updates a run can have made."""
    if not isinstance(event, dict) or event.get("event") != "run":
        raise BadLine("not a run event")
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise BadLine(f"index {index!r} is not a whole number")
    if not 0 <= index < total:
        raise BadLine(f"run index {index} is outside the grid's {plural(total, 'run')}")
    if event.get("params") != params_at(grid, index):
        raise BadLine(f"params {event.get('params')!r} are not run {index}'s {params_at(grid, index)!r}")
    if event.get("status") not in records.STATUSES or event.get("status") == records.INTERRUPTED:
        raise BadLine(f"status {event.get('status')!r} is not one a finished run has")
    iters = event.get("iters")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 0:
        raise BadLine(f"iters {iters!r} is not a whole number >= 0")
    limit = event["params"].get("max_iters", max_iters)
    if isinstance(limit, int) and not isinstance(limit, bool) and iters > limit:
        raise BadLine(f"iters {iters} is more than the run's max_iters {limit}")
    _check_loss(event)
    if "x" in event and _shape(event["x"]) is None:
        raise BadLine("x is not an array of numbers")
    if "x_summary" in event and not isinstance(event["x_summary"], dict):
        raise BadLine("x_summary is not a mapping")
    return index, event


def _check_loss(event: dict[str, Any]) -> None:
    """A finite loss >= 0 as a number, or a non-finite one as text (JSON has neither) with loss null;
    a converged run has a finite loss."""
    loss = event.get("loss")
    if "loss_text" in event:
        text = event["loss_text"]
        try:
            value = float(text) if isinstance(text, str) else math.nan
        except ValueError:
            value = 0.0
        if not isinstance(text, str) or math.isfinite(value) or loss is not None:
            raise BadLine(f"loss_text {text!r} is not the text of an infinite or NaN loss (with loss null)")
        if value < 0:
            raise BadLine(f"loss_text {text!r} is a negative loss")
        if event.get("status") == records.CONVERGED:
            raise BadLine(f"a converged run has the loss {text}")
        return
    if loss is None:
        raise BadLine("loss is null, and there is no loss_text")
    if not isinstance(loss, (int, float)) or isinstance(loss, bool):
        raise BadLine(f"loss {loss!r} is not a number")
    if loss < 0:
        raise BadLine(f"loss {loss!r} is below 0")


def _shape(value: Any) -> tuple | None:
    """The shape of a nested list of numbers, None when it is ragged or holds anything else."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return ()
    if not isinstance(value, list):
        return None
    inner = {_shape(item) for item in value}
    if None in inner or len(inner) > 1:
        return None
    return (len(value), *(inner.pop() if inner else ()))


def left_out(problems: list[str], path: str, limit: int = 3) -> str:
    """One warning for the lines left out: how many, the first few, and what happens to their runs."""
    shown = "; ".join(problems[:limit]) + ("; ..." if len(problems) > limit else "")
    return (f"{path}: {plural(len(problems), 'line')} left out ({shown}); the first record of each run is kept, "
            "and runs without one run again on --resume")

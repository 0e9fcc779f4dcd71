"""Sweep results: a rich table (one row per run, the best highlighted) and JSON Lines events."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gdfit.records import CONVERGED, INTERRUPTED, RunRecord, SweepPlan
from gdfit.render.human import STATUS_STYLE
from gdfit.render.jsonl import dumps, tensor_field
from gdfit.words import plural


def _value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def results_table(results: list[RunRecord], best: RunRecord | None, sort_key: str) -> Table:
    keys = list(results[0].params) if results else []
    table = Table(title=f"{plural(len(results), 'run')}, sorted by {sort_key}; best in bold", header_style="bold")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("status")
    table.add_column("updates", justify="right")
    table.add_column("final loss", justify="right")
    for result in results:
        style = "bold reverse" if result is best else ""
        status = Text(result.status, style=STATUS_STYLE.get(result.status, ""))
        table.add_row(
            *[_value(result.params[k]) for k in keys], status, str(result.iters), f"{result.loss:.6g}",
            style=style,
        )
    return table


def plan_line(plan: SweepPlan) -> str:
    line = f"{plural(plan.runs, 'run')} on {plan.device} ({plan.dtype}), target shape {plan.shape}"
    if plan.batches > 1:
        line += f"; {plural(plan.batches, 'batch', 'batches')} of up to {plural(plan.batch_size, 'run')}: {plan.why}"
    else:
        line += ", one batch"
    return line


def start_event(plan: SweepPlan, config: dict[str, Any], grid: dict[str, list]) -> dict[str, Any]:
    return {
        "event": "start", "config": config, "grid": grid, "runs": plan.runs, "device": plan.device,
        "dtype": plan.dtype, "shape": plan.shape, "batches": plan.batches, "batch_size": plan.batch_size,
        "batching": plan.why, "advice": plan.advice,
    }


def announce(plan: SweepPlan, config: dict[str, Any], grid: dict[str, list], json_mode: bool) -> None:
    """The start event, or the plan line and the advisor's note, before the first run."""
    if json_mode:
        print(dumps(start_event(plan, config, grid)), flush=True)
        return
    console = Console()
    console.print(plan_line(plan))
    if (plan.advice or {}).get("max_stable_lr") is not None:
        console.print(f"advisor (at the first run's start): curvature {plan.advice['curvature']:.6g}; "
                      f"{plan.advice['note']}")


def run_event(result: RunRecord) -> dict[str, Any]:
    return {
        "event": "run", "params": result.params, "status": result.status, "iters": result.iters,
        "loss": result.loss, **tensor_field(result.x),
        **({"error": result.error} if result.error else {}),
        **({"holdout_rmse": result.holdout_rmse} if result.holdout_rmse is not None else {}),
    }


def end_event(results: list[RunRecord], best: RunRecord | None, elapsed_s: float | None) -> dict[str, Any]:
    return {
        "event": "end",
        "counts": dict(Counter(r.status for r in results)),
        "best": None if best is None else {"params": best.params, "status": best.status, "iters": best.iters,
                                           "loss": best.loss},
        "elapsed_s": elapsed_s,
    }


def show(ordered: list[RunRecord], results: list[RunRecord], best: RunRecord | None, elapsed_s: float | None,
         sort_key: str, json_mode: bool, missing: int = 0, total: int | None = None,
         interrupted: bool = False) -> None:
    """One run event per run and the end event, or the table and a summary. A saved sweep that is
    not finished (`--show`) says how many of its `total` runs are `missing`; an interrupted one's
    end event says so (`status: interrupted`)."""
    if json_mode:
        for result in ordered:
            print(dumps(run_event(result)))
        end = end_event(results, best, elapsed_s)
        if interrupted:
            end["status"] = INTERRUPTED
        if missing or interrupted:
            end.update(runs=total, missing=missing)
        print(dumps(end), flush=True)
        return
    console = Console()
    console.print(results_table(ordered, best, sort_key))
    print_summary(console, results, best, elapsed_s)
    if missing and not interrupted:  # an interrupted sweep's own warning says how to go on
        console.print(f"partial sweep: {missing} of {plural(total, 'run')} missing (continue it with gdfit sweep --resume)")
    sys.stdout.flush()


def document(plan: SweepPlan, config: dict[str, Any], grid: dict[str, list], results: list[RunRecord],
             best: RunRecord | None, elapsed_s: float) -> dict[str, Any]:
    """The --output document: config, grid, advice, the end event's fields and every run."""
    end = end_event(results, best, elapsed_s)
    end.pop("event")
    runs = [run_event(r) for r in results]
    for run in runs:
        run.pop("event")
    return {"config": config, "grid": grid, "advice": plan.advice, **end, "runs": runs}


def best_line(best: RunRecord | None) -> str:
    """The best run so far, in a few words, for the progress bar."""
    if best is None:
        return ""
    params = ", ".join(f"{k}={_value(v)}" for k, v in best.params.items())
    return f"best so far: {params}: {best.status} after {plural(best.iters, 'update')}, loss {best.loss:.3g}"


def print_summary(console: Console, results: list[RunRecord], best: RunRecord | None,
                  elapsed_s: float | None) -> None:
    counts = Counter(r.status for r in results)
    parts = ", ".join(f"{n} {status}" for status, n in counts.most_common())
    console.print(parts if elapsed_s is None else f"{parts}; {elapsed_s:.3f} s")
    if best is not None:
        params = ", ".join(f"{k}={_value(v)}" for k, v in best.params.items())
        console.print(Text(f"best: {params}: {best.status} after {plural(best.iters, 'update')}, loss {best.loss:.6g}",
                           style="bold green" if best.status == CONVERGED else "bold"))

"""`gdfit sweep`: a grid of runs as batched loops, a table or JSON Lines, a document and a plot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gdfit import records
from gdfit.commands import check_outputs, warn
from gdfit.errors import ExitCode, GdfitError


@dataclass(frozen=True)
class SweepOptions:
    config: str
    grid: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    flags: dict = field(default_factory=dict)  # --device, --max-iters
    json_mode: bool = False
    output: Path | None = None
    plot: Path | None = None
    sort: str = "iters"
    x_limit: int = records.X_LIMIT
    tensorboard: Path | None = None


def sweep(options: SweepOptions) -> int:
    """Run the grid; returns the exit status."""
    from gdfit.config import merge_config
    from gdfit.sweep import expand, parse_grid

    check_outputs(options.output, options.plot)
    if options.tensorboard is not None:
        from gdfit.render.tensorboard import check_log_dir, require_tensorboard

        require_tensorboard()
        check_log_dir(options.tensorboard)
    raw = merge_config(options.config, options.overrides, options.flags)
    grid = parse_grid(options.grid, raw.data.get("sweep"), raw.source)
    if options.sort not in ("iters", "loss") and options.sort not in grid:
        raise GdfitError(f"unknown sort key {options.sort!r}; use iters, loss or one of: {', '.join(grid)}",
                         key="--sort")
    runs = list(expand(raw.data, grid, raw.source, raw.base_dir))
    started = time.perf_counter()
    plan, results = _execute(runs, grid, options)
    elapsed = time.perf_counter() - started
    document = _report(plan, runs, grid, results, elapsed, options)
    if options.output is not None:
        from gdfit.render.document import write_atomic
        from gdfit.render.jsonl import dumps

        write_atomic(options.output, dumps(document) + "\n")
    if options.plot is not None:
        from gdfit.plotting import plot_sweep

        plot_sweep(options.plot, document)
    if options.tensorboard is not None:
        from gdfit.render.tensorboard import log_sweep

        log_sweep(options.tensorboard, document["config"], results)
    if len(results) < len(runs):
        warn(f"interrupted after {len(results)} of {len(runs)} runs")
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK if any(r.status == records.CONVERGED for r in results) else ExitCode.NOT_CONVERGED)


def _execute(runs, grid, options: SweepOptions) -> tuple[records.SweepPlan, list[records.RunRecord]]:
    """Run the batches with a progress bar on stderr; the plan goes out before the first run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gdfit.interrupts import StopRequest
    from gdfit.render import sweep_view
    from gdfit.sweep import execute

    config = runs[0].resolved.config.model_dump(mode="json")
    with StopRequest() as stop:
        steps = execute(runs, options.x_limit, stop)
        plan = next(steps)
        sweep_view.announce(plan, config, grid, options.json_mode)
        with Progress(TextColumn("runs done"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True, disable=options.json_mode) as bar:
            task = bar.add_task("sweep", total=len(runs))
            for item in steps:
                if isinstance(item, tuple):
                    bar.update(task, completed=item[0])
                else:
                    results = item
    return plan, results


def _report(plan, runs, grid, results, elapsed: float, options: SweepOptions) -> dict:
    """Print the results; return the --output document."""
    from gdfit.render import sweep_view
    from gdfit.sweep import best_run, sort_results

    best = best_run(results)
    sweep_view.show(sort_results(results, options.sort), results, best, elapsed, options.sort, options.json_mode)
    config = runs[0].resolved.config.model_dump(mode="json")
    return sweep_view.document(plan, config, grid, results, best, elapsed)

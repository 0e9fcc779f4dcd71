"""`gdfit sweep`: a grid of runs as batched loops, a table or JSON Lines, a document and a plot."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gdfit import records
from gdfit.cli.common import check_backend, check_outputs, stdout_gone, warn
from gdfit.errors import ExitCode, GdfitError
from gdfit.words import plural

if TYPE_CHECKING:
    from gdfit.sweeps.journal import Journal


@dataclass(frozen=True)
class SweepOptions:
    config: str | None
    grid: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    flags: dict = field(default_factory=dict)  # --device, --max-iters
    json_mode: bool = False
    output: Path | None = None  # ends in .json: one document; else a sweep folder (gdfit.sweeps.journal)
    plot: Path | None = None
    sort: str = "iters"
    x_limit: int = records.X_LIMIT
    tensorboard: Path | None = None
    resume: Path | None = None
    show: Path | None = None
    backend: str = "local"  # or "dask"
    address: str | None = None  # a Dask scheduler to join


@dataclass
class Prepared:
    """The runs of a sweep, built from flags or rebuilt from a journal, and where they go."""

    runs: list
    grid: dict[str, list]
    x_limit: int
    journal: Journal | None = None  # when resuming
    folder: Path | None = None  # the sweep folder the runs are journaled in


def sweep(options: SweepOptions) -> int:
    """Run the grid (or the rest of a journaled one); returns the exit status."""
    from gdfit.sweeps import journal as journals

    if options.show is not None:
        return show_folder(options)
    folder = options.output if options.output is not None and journals.is_folder(options.output) else None
    document_path = options.output if folder is None else None
    if options.resume is not None and folder is not None:
        raise GdfitError("--resume writes into its own folder; --output may only name a .json document",
                         key="--output")
    check_outputs(document_path, options.plot)
    check_backend(options.backend, options.address)
    if options.tensorboard is not None:
        from gdfit.render.tensorboard import check_log_dir, require_tensorboard

        require_tensorboard()
        check_log_dir(options.tensorboard, resuming=options.resume is not None)
    from gdfit.files.locks import hold_all

    # one writer per sweep folder and document: a second resume of a folder is refused, not run twice
    # (a new --output folder's lock is taken by journals.create, before it checks and writes the folder)
    with hold_all([(options.resume, "--resume", True), (document_path, "--output", False),
                   (options.plot, "--plot", False)]) as locks:
        prepared = _resumed(options) if options.resume is not None else _fresh(options, folder, locks)
        return _finish(prepared, options, document_path)


def _finish(prepared: Prepared, options: SweepOptions, document_path: Path | None) -> int:
    """Run what the sweep lacks, report, write the document, the plot and the summary."""
    from gdfit.sweeps import journal as journals

    runs, grid = prepared.runs, prepared.grid
    _check_sort(options.sort, grid)
    # a finished folder keeps its summary: resuming it runs nothing, so it reports the sweep's own time
    kept = prepared.journal.finished_summary() if prepared.journal is not None else None
    started = time.perf_counter()
    plan, results = _execute(prepared, options)
    elapsed = kept.get("elapsed_s") if kept else time.perf_counter() - started
    complete = len(results) == len(runs) and all(r.status != records.INTERRUPTED for r in results)
    document = _report(plan, runs, grid, results, elapsed, options, complete)
    if prepared.folder is not None and complete and not kept:
        journals.write_summary(prepared.folder, document)
    if document_path is not None:
        from gdfit.files.writing import write_atomic
        from gdfit.render.jsonl import dumps

        write_atomic(document_path, dumps(document) + "\n")
    if options.plot is not None:
        from gdfit.pictures.plotting import plot_sweep

        plot_sweep(options.plot, document)
    if options.tensorboard is not None:
        from gdfit.render.tensorboard import log_sweep

        log_sweep(options.tensorboard, document["config"], results)
    if not complete:
        finished = sum(r.status != records.INTERRUPTED for r in results)
        resume = f"; continue with `gdfit sweep --resume {prepared.folder}`" if prepared.folder else ""
        if not stdout_gone():
            warn(f"interrupted after {finished} of {plural(len(runs), 'run')}{resume}")
        return int(ExitCode.INTERRUPTED)
    return _status(results)


def _status(results: list[records.RunRecord]) -> int:
    return int(ExitCode.OK if any(r.status == records.CONVERGED for r in results) else ExitCode.NOT_CONVERGED)


def _check_sort(sort: str, grid: dict) -> None:
    if sort not in ("iters", "loss") and sort not in grid:
        raise GdfitError(f"unknown sort key {sort!r}; use iters, loss or one of: {', '.join(grid)}", key="--sort")


def _fresh(options: SweepOptions, folder: Path | None, locks: ExitStack) -> Prepared:
    """Runs from CONFIG, --set, flags and --grid; a new journal when --output names a folder."""
    from gdfit.sweeps import journal as journals
    from gdfit.config import merge_config
    from gdfit.sweeps.grid import expand, parse_grid

    if options.config is None:
        raise GdfitError("give CONFIG, or --resume DIR or --show DIR", key="CONFIG")
    raw = merge_config(options.config, options.overrides, options.flags)
    grid = parse_grid(options.grid, raw.data.get("sweep"), raw.source)
    _check_sort(options.sort, grid)
    runs = list(expand(raw.data, grid, raw.source, raw.base_dir))
    uses = check_paths(options, raw.data, raw.source, raw.base_dir, folder, grid)
    if folder is not None:
        journals.create(folder, raw.data, raw.source, raw.base_dir, grid,
                        runs[0].resolved.config.model_dump(mode="json"), options.x_limit, len(runs), locks)
        _save_inputs(folder, uses)
    return Prepared(runs, grid, options.x_limit, None, folder)


def _resumed(options: SweepOptions) -> Prepared:
    """Runs rebuilt from a journal; CONFIG, --set, --grid and flags, when given, must agree with it."""
    import json

    from gdfit.sweeps import journal as journals
    from gdfit.config import apply_override, merge_config, parse_assignment
    from gdfit.render.jsonl import dumps
    from gdfit.sweeps.grid import expand, parse_grid

    journal = journals.load(options.resume)
    _report_left_out(journal)
    grid = journal.grid
    uses = check_paths(options, journal.raw, journal.source, journal.base_dir, options.resume, grid)
    _check_inputs(options.resume, uses)
    if options.config is not None or options.overrides or any(v is not None for v in options.flags.values()) \
            or options.grid:
        if options.config is not None:
            raw = merge_config(options.config, options.overrides, options.flags)
            data, source = raw.data, raw.source
        else:
            data, source = json.loads(dumps(journal.raw)), journal.source
            for item in options.overrides:
                apply_override(data, *parse_assignment(item))
            data.update({k: v for k, v in options.flags.items() if v is not None})
        # without --grid, the grid is the config's sweep: section if it has one, else the journal's
        given = parse_grid(options.grid, data.get("sweep"), source) if options.grid or data.get("sweep") else grid
        journals.refuse_differences(journal, data, given)
    runs = list(expand(journal.raw, grid, journal.source, journal.base_dir))
    first = json.loads(dumps(runs[0].resolved.config.model_dump(mode="json")))
    if len(runs) != journal.total or first != journal.config:
        raise GdfitError("the saved config no longer builds the same runs (was it written by another gdfit?)",
                         source=str(options.resume), key="--resume")
    return Prepared(runs, grid, journal.x_limit, journal, options.resume)


def check_paths(options: SweepOptions, raw: dict, source: str, base_dir: Path, folder: Path | None,
                grid: dict) -> list:
    """No output may replace an input or another output (a sweep folder's own files included); the
    inputs are the config's files and those a grid sweeps over (`--grid target.file=a.csv,b.csv`)."""
    from gdfit.files.paths import SWEEP_FOLDER_FILES, config_inputs, reads, refuse_clashes, writes

    document = options.output if options.output != folder else None
    folder_key = "--resume" if options.resume is not None else "--output"
    if options.plot is not None:
        from gdfit.pictures.plotting import numeric_key

        if numeric_key(grid) is None:  # said before the sweep runs (or makes its folder), not after
            raise GdfitError("draws updates against a numeric swept key, and every key of this grid has other "
                             f"values ({', '.join(grid)}); sweep a number too, or leave out --plot", key="--plot")
    inputs = [*config_inputs(raw, base_dir),
              *[use for key, values in grid.items() if key.split(".")[-1] == "file"
                for value in values if isinstance(value, str)
                for use in config_inputs({"file": value}, base_dir, f"{key[:-4]}{value}.")]]
    refuse_clashes([*reads("CONFIG", options.config if options.config is not None else None), *inputs,
                    *writes(folder_key, folder, SWEEP_FOLDER_FILES), *writes("--output", document),
                    *writes("--plot", options.plot), *writes("--tensorboard", options.tensorboard)])
    return inputs


INPUTS_FILE = "inputs.json"  # the sweep's input files by SHA-256, beside the journal


def _save_inputs(folder: Path, uses: list) -> None:
    from gdfit.files.inputs import input_digests
    from gdfit.files.writing import write_atomic
    from gdfit.render.jsonl import dumps

    write_atomic(folder / INPUTS_FILE, dumps({"sha256": input_digests(uses)}) + "\n")


def _check_inputs(folder: Path, uses: list) -> None:
    """A resumed sweep reads the files it started with, or none of its runs would be comparable."""
    import json

    from gdfit.errors import InputFileError
    from gdfit.files.inputs import input_digests, refuse_changed

    path = folder / INPUTS_FILE
    if not path.is_file():
        raise InputFileError(f"the sweep folder has no {INPUTS_FILE} (the digests of its input files), so a "
                             "changed input could not be told", source=str(folder), key="--resume",
                             hint="it was started by an older gdfit: start the sweep again in a new folder")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["sha256"]
        if not isinstance(saved, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise InputFileError(f"{INPUTS_FILE} is not the digest list gdfit writes", source=str(folder),
                             key="--resume") from None
    refuse_changed(saved, input_digests(uses), uses, str(folder), "--resume")


def _report_left_out(journal: Journal) -> None:
    if journal.left_out:
        from gdfit.sweeps.journal import RUNS_FILE
        from gdfit.sweeps.lines import left_out

        warn("warning: " + left_out(journal.left_out, str(journal.folder / RUNS_FILE)))


def refuse_ignored(options: SweepOptions) -> None:
    """--show prints a folder and runs nothing: an option it would ignore is refused, by name."""
    from gdfit.errors import UsageError

    given = [name for name, value in (
        ("CONFIG", options.config), ("--grid", options.grid), ("--set", options.overrides),
        ("--device", options.flags.get("device")), ("--max-iters", options.flags.get("max_iters")),
        ("--output", options.output), ("--resume", options.resume), ("--plot", options.plot),
        ("--tensorboard", options.tensorboard), ("--address", options.address),
        ("--x-limit", options.x_limit if options.x_limit != records.X_LIMIT else None),
        ("--backend", options.backend if options.backend != "local" else None)) if value]
    if given:
        raise UsageError(f"prints a sweep folder and runs nothing, so it would ignore {', '.join(given)}",
                         key="--show", hint="leave them out (--show takes --sort and --json), or resume the "
                                             "folder with --resume")


def show_folder(options: SweepOptions) -> int:
    """Print a finished or partial sweep folder without running anything."""
    from gdfit.sweeps import journal as journals

    refuse_ignored(options)
    from gdfit.render import sweep_view
    from gdfit.sweeps.grid import best_run, fits_parameters, sort_results

    journal = journals.load(options.show)
    _report_left_out(journal)
    _check_sort(options.sort, journal.grid)
    results = [journal.done[i] for i in sorted(journal.done)]
    summary = journal.finished_summary()
    elapsed = summary.get("elapsed_s") if summary else None
    best = best_run(results, fits_parameters(journal.config))
    sweep_view.show(sort_results(results, options.sort), results, best, elapsed, options.sort,
                    options.json_mode, missing=journal.missing, total=journal.total)
    return _status(results)


def _execute(prepared: Prepared, options: SweepOptions) -> tuple[records.SweepPlan, list[records.RunRecord]]:
    """Run the batches with a progress bar on stderr; the plan goes out before the first run. Each
    batch's runs go to the journal as it ends; the result holds the journal's earlier runs too."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gdfit.engine.interrupts import StopRequest, pause_point
    from gdfit.sweeps.journal import Appender
    from gdfit.render import sweep_view
    from gdfit.sweeps.backends import execute

    from gdfit.sweeps.grid import best_run, fits_parameters

    runs, earlier = prepared.runs, dict(prepared.journal.done) if prepared.journal else {}
    config = runs[0].resolved.config.model_dump(mode="json")
    fits = fits_parameters(config)
    best_so_far = [sweep_view.best_line(best_run(list(earlier.values()), fits))]
    appender = Appender(prepared.folder) if prepared.folder is not None else nullcontext()
    done = dict(earlier)

    def on_batch(indices: list[int], results: list[records.RunRecord]) -> None:
        done.update(zip(indices, results))
        if prepared.folder is not None:
            appender.add(indices, results)
        best_so_far[0] = sweep_view.best_line(best_run(list(done.values()), fits))

    with StopRequest() as stop, appender:
        steps = execute(runs, prepared.x_limit, stop, frozenset(earlier), on_batch, options.backend, options.address)
        plan = next(steps)
        sweep_view.announce(plan, config, prepared.grid, options.json_mode)
        with Progress(TextColumn("runs done"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=Console(stderr=True), transient=True,
                      disable=options.json_mode) as bar:
            task = bar.add_task(best_so_far[0], total=len(runs), completed=len(earlier))
            for item in steps:
                if isinstance(item, tuple):
                    pause_point("sweep")  # inside a batch: its loop is suspended between looks
                    bar.update(task, completed=item[0], description=best_so_far[0])
    return plan, [done[i] for i in sorted(done)]


def _report(plan, runs, grid, results, elapsed: float, options: SweepOptions, complete: bool = True) -> dict:
    """Print the results; return the --output document (which says when the sweep was interrupted)."""
    from gdfit.render import sweep_view
    from gdfit.sweeps.grid import best_run, fits_parameters, sort_results

    config = runs[0].resolved.config.model_dump(mode="json")
    best = best_run(results, fits_parameters(config))
    finished = sum(r.status != records.INTERRUPTED for r in results)
    sweep_view.show(sort_results(results, options.sort), results, best, elapsed, options.sort, options.json_mode,
                    missing=len(runs) - finished, total=len(runs), interrupted=not complete)
    document = sweep_view.document(plan, config, grid, results, best, elapsed)
    if not complete:
        document.update(status=records.INTERRUPTED, runs_total=len(runs), missing=len(runs) - finished)
    return document

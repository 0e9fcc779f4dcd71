"""`gdfit run`: one descent, streamed to a table or JSON Lines, then saved and drawn."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gdfit import records
from gdfit.cli.common import check_outputs, stdout_gone, warn
from gdfit.config import CURVE_MODELS, Resolved
from gdfit.words import plural


@dataclass(frozen=True)
class RunOptions:
    json_mode: bool = False
    every: int | None = None  # None: 1 with --json; in the table, the first rows then ~10 a second
    output: Path | None = None
    plot: Path | None = None
    x_limit: int = records.X_LIMIT
    checkpoint: Path | None = None
    checkpoint_every: float | None = None  # seconds between checkpoints; None: 60 (only with --checkpoint)
    resume: Path | None = None
    tensorboard: Path | None = None
    save: Path | None = None  # the fitted parameters by name and the prediction (.npz or .pt)
    ci_plot: Path | None = None  # each parameter's profile, with its confidence intervals
    threads: int | None = None  # torch's intra-op threads; None: chosen for the problem (engine/threads.py)


def run(resolved: Resolved, options: RunOptions) -> str:
    """Run to the end; returns the status."""
    if options.checkpoint_every is not None and options.checkpoint is None:
        from gdfit.errors import UsageError

        raise UsageError("saves checkpoints only with --checkpoint PATH; add it, or leave out --checkpoint-every",
                         key="--checkpoint-every")
    check_paths(resolved, options)
    check_outputs(options.output, options.plot)
    if options.ci_plot is not None:
        from gdfit.pictures.profile_plot import check_ci_plot

        check_ci_plot(options.ci_plot)
    if options.save is not None:
        from gdfit.files.saving import check_save_path

        check_save_path(options.save)
    if options.checkpoint is not None:
        from gdfit.files.writing import check_writable

        check_writable(options.checkpoint, key="--checkpoint")
    if options.tensorboard is not None:
        from gdfit.render.tensorboard import check_log_dir, require_tensorboard

        require_tensorboard()
        check_log_dir(options.tensorboard, resuming=options.resume is not None)
    from gdfit.files.locks import hold_all

    with hold_all([(options.checkpoint, "--checkpoint", False), (options.output, "--output", False),
                   (options.save, "--save", False), (options.plot, "--plot", False)]):
        refuse_earlier_checkpoint(resolved, options)  # under the lock: no other run can write it meanwhile
        return _descend(resolved, options)


def refuse_earlier_checkpoint(resolved: Resolved, options: RunOptions) -> None:
    """--checkpoint never replaces a file that holds something (an earlier run's checkpoint, which a
    re-run without --resume would otherwise overwrite at its first save or Ctrl-C); only the --resume
    file itself may be saved over. An empty file (mktemp's) holds nothing to lose."""
    path = options.checkpoint
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    from gdfit.errors import OutputError
    from gdfit.files.paths import identity

    if options.resume is not None and identity(options.resume) == identity(path):
        return
    with open(path, "rb") as handle:
        archive = handle.read(4) == b"PK\x03\x04"  # torch.save writes a ZIP archive
    held = "already holds a checkpoint" if archive else "already exists (and is not empty)"
    if options.resume is None and archive:
        config = "-" if resolved.source in ("-", "<stdin>") else resolved.source
        remedy = (f"continue it with `gdfit run {config} --resume {path} --checkpoint {path}`, "
                  "or remove it / choose another path")
    else:
        remedy = "remove it or choose another path; a resumed run may save over its own --resume file"
    raise OutputError(f"{held}; {remedy}", source=str(path), key="--checkpoint")


def _descend(resolved: Resolved, options: RunOptions) -> str:
    """The run itself, once its paths are checked and its outputs are this process's to write."""
    from gdfit.api.run import descending  # the Python API's fit starts its runs here too
    from gdfit.engine.interrupts import StopRequest

    resume, checkpointer = _checkpoints(options, resolved)
    renderer, report = _view(resolved, options)
    stop = StopRequest()  # listens for Ctrl-C from the first update; before it, Ctrl-C ends at the edge
    with descending(resolved, report=report, report_last=options.every != 0, x_limit=options.x_limit,
                    should_stop=stop, resume=resume, checkpointer=checkpointer, torch_outputs=needs_torch(options),
                    keep_history=options.output is not None or options.plot is not None,
                    threads=options.threads) as descent, stop:
        problem = descent.problem
        for warning in descent.start.warnings:
            warn(f"warning: {warning}")
        renderer.start(descent.start)
        holdout: list[tuple[int, float]] = []  # the held-out RMSE at the reported updates, for --plot
        try:
            for record in descent.steps():
                renderer.step(record)
                if record.holdout_rmse is not None:
                    holdout.append((record.iter, record.holdout_rmse))
        finally:
            if descent.result is None:
                renderer.abort()
        result = descent.result
        renderer.end(result)
    if result.status == records.DIVERGED:
        warn(f"diverged after {plural(result.iters, 'update')} ({result.stop_rule}). {divergence_hint(descent)}")
    elif result.status == records.INTERRUPTED and not stdout_gone():
        warn(f"interrupted after {plural(result.iters, 'update')}")
    with stop:  # a first Ctrl-C while the files are written lets them finish; a second aborts them
        _save(result, descent.start.config, options, problem, holdout, descent.profiles)
        if options.save is not None:
            from gdfit.files.saving import save_parameters

            save_parameters(options.save, descent.problem.model, descent.final_params)
    if stop.requested and result.status != records.INTERRUPTED and not stdout_gone():
        # the run had ended with its own status (its end event said so): the edge says interrupted,
        # with an error event under --json, and exits 130
        raise KeyboardInterrupt
    return result.status


def needs_torch(options: RunOptions) -> bool:
    """Whether the outputs asked for are torch's (checkpoints, TensorBoard, a .pt file)."""
    pt = options.save is not None and options.save.suffix.lower() == ".pt"
    return pt or options.checkpoint is not None or options.resume is not None or options.tensorboard is not None


def check_paths(resolved: Resolved, options: RunOptions) -> None:
    """No output may replace an input or another output; --checkpoint may be the --resume file."""
    from gdfit.files.paths import config_inputs, reads, refuse_clashes, writes

    uses = [*reads("CONFIG", resolved.source),
            *config_inputs(resolved.config.model_dump(mode="json"), resolved.base_dir),
            *reads("--resume", options.resume),
            *writes("--output", options.output), *writes("--checkpoint", options.checkpoint),
            *writes("--save", options.save), *writes("--plot", options.plot),
            *writes("--tensorboard", options.tensorboard)]
    refuse_clashes(uses, allowed=[frozenset(("--resume", "--checkpoint"))])


def _checkpoints(options: RunOptions, resolved: Resolved):
    """The checkpoint to go on from (its input files unchanged), and the checkpointer that saves
    this run's (with the input files' digests), if asked for."""
    resume = checkpointer = None
    if options.resume is None and options.checkpoint is None:
        return resume, checkpointer
    from gdfit.files.inputs import input_digests, refuse_changed
    from gdfit.files.paths import config_inputs

    uses = config_inputs(resolved.config.model_dump(mode="json"), resolved.base_dir)
    digests = input_digests(uses)
    if options.resume is not None:
        from gdfit.engine.checkpoint import config_changes, load

        resume = load(options.resume)
        if not config_changes(resume.config, resolved.config.model_dump(mode="json")):
            # the same config, so the same files by name: one whose bytes changed is the difference.
            # Another config is refused once the problem is built, each differing key named.
            refuse_changed(resume.inputs, digests, uses, str(options.resume), "--resume")
    if options.checkpoint is not None:
        from gdfit.engine.checkpoint import Checkpointer

        every = 60.0 if options.checkpoint_every is None else options.checkpoint_every
        checkpointer = Checkpointer(options.checkpoint, every)
        checkpointer.inputs = digests
    return resume, checkpointer


def _view(resolved: Resolved, options: RunOptions) -> tuple[records.Renderer, object]:
    """The renderer (with TensorBoard beside it when asked) and the choice of updates to report."""
    renderer, report = _screen(resolved, options)
    if options.tensorboard is not None:
        from gdfit.render import Tee
        from gdfit.render.tensorboard import TensorBoardRenderer

        renderer = Tee([renderer, TensorBoardRenderer(options.tensorboard)])
    return renderer, report


def _screen(resolved: Resolved, options: RunOptions) -> tuple[records.Renderer, object]:
    from gdfit.engine.descent import every_n

    if options.json_mode:
        from gdfit.render.jsonl import JsonLinesRenderer

        return JsonLinesRenderer(sys.stdout), every_n(1 if options.every is None else options.every)
    import time

    from rich.console import Console

    from gdfit.render.human import HumanRenderer, throttled_reporter

    renderer = HumanRenderer(Console(), show_lr=resolved.config.schedule.name != "constant")
    report = throttled_reporter(time.perf_counter) if options.every is None else every_n(options.every)
    return renderer, report


def _save(result: records.FitResult, config: dict, options: RunOptions, problem, holdout: list | None = None,
          profiles: list | None = None) -> None:
    if options.output is not None:
        from gdfit.render.document import write_document

        write_document(options.output, result, config)
    if options.plot is not None:
        from gdfit.pictures.plotting import plot_run

        note = plot_run(options.plot, result, config, problem, holdout)  # a curve fit draws its data from the problem
        if note:
            warn(note)
    if options.ci_plot is not None:
        from gdfit.pictures.profile_plot import plot_profiles

        plot_profiles(options.ci_plot, profiles, result)


def divergence_hint(descent) -> str:
    config = descent.problem.config
    if descent.result.iters == 0:  # no update was made: the rate is not to blame
        wider = "use dtype: float64, or " if config.dtype != "float64" else ""
        if isinstance(config.model, CURVE_MODELS):  # a curve fit
            return (f"The loss at the start is not finite in {config.dtype}: the expression is NaN or infinite at "
                    f"the start values, or far from the data; {wider}choose start values where it is finite.")
        return (f"The loss at the start is beyond {config.dtype}'s range: the start and the target are too far "
                f"apart; {wider}rescale the data.")
    stable = (descent.advice or {}).get("max_stable_lr")
    if stable is not None and config.loss.name == "mse" and config.optimizer.name == "gd":
        n = descent.problem.loss.numel  # the entries the loss is over (a matrix model leaves some out)
        return (
            f"Use a smaller learning_rate: for mse on {plural(n, 'element')}, gd diverges above lr = {stable:.6g} "
            f"(learning_rate is {config.learning_rate:g})."
        )
    return f"Try a smaller learning_rate than {config.learning_rate:g}."

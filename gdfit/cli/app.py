"""The command line: parse flags, build the config, pick a renderer, map errors to exit codes.

Heavy modules (torch, and through the engine everything that needs it) are imported inside the
commands that use them, so `gdfit --help`, `--version` and `gdfit config --schema` start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from typer.core import TyperCommand

from gdfit import __version__, records
from gdfit.errors import ExitCode, GdfitError
from gdfit.records import X_LIMIT

from gdfit.engine.interrupts import pause_point  # noqa: E402 (light: no torch, no rich)

pause_point("import")  # tests: a Ctrl-C while Python loads the CLI

app = typer.Typer(
    name="gdfit",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

INTERNAL_ERROR = 70  # a bug in gdfit, not in the input (EX_SOFTWARE)
BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE
STATUS_EXIT = {
    records.CONVERGED: ExitCode.OK,
    records.MAX_ITERS: ExitCode.NOT_CONVERGED,
    records.TIMEOUT: ExitCode.NOT_CONVERGED,
    records.STALLED: ExitCode.NOT_CONVERGED,
    records.DIVERGED: ExitCode.DIVERGED,
    records.INTERRUPTED: ExitCode.INTERRUPTED,
}


def _debug() -> bool:
    return os.environ.get("GDFIT_DEBUG", "") not in ("", "0")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _json_error(kind: str, message: str, also: list[str] | None = None, hint: str | None = None) -> None:
    """The `error` event on stdout, for --json; a reader that went away is no news."""
    from gdfit.render.jsonl import dumps, error_event

    event = error_event(kind, message)
    if also:
        event["also"] = also
    if hint:  # what stderr's second line says to do
        event["hint"] = hint
    try:
        print(dumps(event), flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _report(err: GdfitError, json_mode: bool) -> int:
    """Say what went wrong, on stderr and (with --json) as an `error` event; returns the exit code."""
    _err(f"gdfit: error: {err}")
    if json_mode:
        _json_error(err.kind, err.located(), [other.located() for other in err.also], err.hint)
    return int(err.exit_code)


@contextmanager
def edge(json_mode: bool = False) -> Iterator[None]:
    """The one place where exceptions become messages and exit codes."""
    try:
        yield
    except GdfitError as err:
        if _debug():
            traceback.print_exc()
        raise typer.Exit(_report(err, json_mode))
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(BROKEN_PIPE)
    except KeyboardInterrupt:  # a Ctrl-C outside the descent loop: start-up, reading, plotting, saving
        _err("gdfit: interrupted")
        if json_mode:  # scripts read why there is no (or no further) output
            _json_error("interrupted", "interrupted by Ctrl-C (SIGINT)")
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    except typer.Exit:
        raise
    except Exception as err:  # a bug: say so plainly, keep the traceback for --debug (same exit code)
        if _debug():
            traceback.print_exc()
        from gdfit.cli.environment import as_input_error

        known = as_input_error(err)  # what the machine refused (memory, an encoding), not a bug
        if known is not None:
            raise typer.Exit(_report(known, json_mode))
        said = f"internal error: {type(err).__name__}: {err}"
        _err(f"gdfit: {said}")
        if not _debug():
            _err("  rerun with --debug (or GDFIT_DEBUG=1) for the traceback, and please report it")
        if json_mode:  # a script reading the stream learns that it ended, and why
            _json_error("internal", f"{said} (a bug in gdfit; --debug shows the traceback)")
        raise typer.Exit(INTERNAL_ERROR)


class _Command(TyperCommand):
    """A command whose usage line and help name arguments by their metavar alone: `CONFIG`, not
    `{CONFIG}` in the usage and `CONFIG <str>` in the list, as typer >= 0.2x writes them."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        _refuse_empty_paths(ctx, self.params, args)
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments = [(_argument_name(p), p.help or "") for p in self.get_params(ctx)
                     if p.param_type_name == "argument" and not p.hidden]
        options = [record for p in self.get_params(ctx)
                   if p.param_type_name == "option" and (record := p.get_help_record(ctx)) is not None]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _refuse_empty_paths(ctx, params, args: list[str]) -> None:
    """`--output ""` is a slip (an unset shell variable), not the current folder: typer reads ""
    as Path(""), which is ".", and the message would be ". is a directory". Refused as said."""
    from gdfit.cli.usage import click_exceptions

    paths = {opt: p for p in params if p.param_type_name == "option" and p.bare_type() == "Path" for opt in p.opts}
    for at, arg in enumerate(args):
        if arg == "--":
            return
        flag, equals, value = arg.partition("=")
        empty = (flag in paths and arg.startswith("--") and equals and not value) or (
            arg in paths and at + 1 < len(args) and args[at + 1] == "")
        if empty:
            raise click_exceptions().BadParameter("is empty; give a file or folder path", ctx=ctx,
                                                    param=paths[flag])


def _argument_name(param) -> str:
    name = param.metavar or param.name.upper()
    return name if param.nargs == 1 or name.endswith("...") else name + "..."


def _version(value: bool) -> None:
    if value:
        print(f"gdfit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    # main() takes --debug out of the arguments wherever it stands; it is declared here to be listed
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks; works with any command (also GDFIT_DEBUG=1)."),
) -> None:
    """Curve fits, matrix models, sweeps and many fits, by gradient descent and Levenberg-Marquardt,
    on CPU or CUDA, from YAML configs (also from Python: import gdfit; gdfit.fit(CONFIG)).

    \b
    Examples:
      gdfit run configs/seed.yaml
      gdfit run configs/decay.yaml
      gdfit sweep configs/seed.yaml --grid "learning_rate=logspace(1e-2,10,16)"
      gdfit run configs/seed.yaml --json --every 1 | jq -c '[.event, .iter, .loss]'
      gdfit config configs/seed.yaml --advise

    Add --debug (or set GDFIT_DEBUG=1) to any command to see Python tracebacks.
    """


SET_HELP = "Override a config key: KEY=VALUE, VALUE read as YAML; dotted keys reach nested ones (optimizer.momentum=0.5). Repeatable."


@app.command(cls=_Command)
def run(
    config: str = typer.Argument(..., metavar="CONFIG", help="YAML config file, or - to read it from standard input."),
    json_mode: bool = typer.Option(False, "--json", help="Write JSON Lines events (start, step, end, error) to stdout."),
    every: Optional[int] = typer.Option(
        None, "--every", min=0, metavar="N", help="Report every N-th update (and always the last); 0: start and end only. "
        "Default: 1 with --json; in the table, the first 20 and then about 10 a second.",
    ),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="PATH", help="Write the result document (JSON) here, atomically; also on divergence and interrupt."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (overrides the config)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", help="Random seed (overrides the config)."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", metavar="N", help="Most updates to make (overrides the config)."),
    x_limit: int = typer.Option(X_LIMIT, "--x-limit", min=0, metavar="N", help="Tensors with more elements are summarised, not printed in full."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH", help="Draw the loss curve to PATH (.png, .svg, .pdf); needs gdfit[plot]."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", metavar="PATH", help="Save the whole state of the run here, atomically: every --checkpoint-every seconds, on interrupt and at the end. A new file: one that holds something (an earlier checkpoint) is refused, unless it is the --resume file."),
    checkpoint_every: Optional[float] = typer.Option(None, "--checkpoint-every", min=0.0, metavar="SECONDS", help="Seconds between checkpoints (default 60)."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="PATH", help="Continue the run saved in this checkpoint; it ends exactly where the uninterrupted run would. Many fits: the job folder of --output-dir."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", metavar="DIR", help="Log loss, lr and gradient norm per reported update, and the config, for TensorBoard (needs gdfit[tensorboard]). A folder of its own: one that holds earlier logs is refused, unless this run resumes."),
    save: Optional[Path] = typer.Option(None, "--save", metavar="PATH", help="Write the fitted parameters by name (U, V; W, b; an expression's names) and the prediction to PATH (.npz or .pt), atomically."),
    holdout: Optional[float] = typer.Option(None, "--holdout", metavar="FRACTION", help="lowrank and linear: hide this share of the observed target entries (seeded by holdout.seed, default 0) and report the prediction's RMSE on them."),
    ci: bool = typer.Option(False, "--ci", help="Curve fits with lm: profile-likelihood confidence intervals of each fitted parameter, at the config's `confidence` levels (default 1 and 2 sigma), by lmfit's F-test."),
    ci_plot: Optional[Path] = typer.Option(None, "--ci-plot", metavar="PATH", help="Draw each parameter's profile (F-test probability against its value, intervals marked) to PATH (.png, .svg, .pdf); implies --ci."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", metavar="DIR", help="Many fits (data.group): journal each finished group in DIR, so that CONFIG --resume DIR finishes a killed job."),
    backend: str = typer.Option("local", "--backend", metavar="NAME", help="Many fits: local (batches in this process) or dask (batches as Dask tasks; needs gdfit[dask])."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", help="With --backend dask: join the scheduler at ADDR (also DASK_SCHEDULER_ADDRESS). Without: a local cluster on 127.0.0.1."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N", help="torch's threads per operation (default: chosen for the problem and the usable CPUs; OMP_NUM_THREADS also sets it; with --resume, the checkpoint's count, which N must match); the start event shows the choice."),
) -> None:
    """Run a config: fit x, a curve or a matrix model to its target, streaming each update.

    \b
    Examples:
      gdfit run configs/seed.yaml
      gdfit run configs/seed.yaml --set learning_rate=0.5 --every 5
      gdfit run configs/seed.yaml --json --every 1 | jq -c 'select(.event=="step") | [.iter, .loss]'
      cat configs/seed.yaml | gdfit run - --output result.json
      gdfit run configs/decay.yaml --plot decay.png   (a curve fit: parameters, stderr, fit report)
      gdfit run configs/decay.yaml --ci --ci-plot profiles.png   (profile-likelihood intervals)
      gdfit run big.yaml --checkpoint run.ckpt   (after a crash: gdfit run big.yaml --resume run.ckpt --checkpoint run.ckpt)
      gdfit run configs/dose-response.yaml --output results.csv   (data.group: one fit per group)
      gdfit run screen.yaml --output-dir job   (after a kill: gdfit run screen.yaml --resume job)

    Exit status: 0 converged, 1 stopped by a limit, 2 bad input, 3 diverged, 130 interrupted.
    Many fits (data.group): 0 when every group converged, 1 when some did not.
    """
    with edge(json_mode):
        from gdfit.cli.groups import GroupOptions, is_grouped, refuse_flags, run_groups
        from gdfit.cli.run import RunOptions
        from gdfit.cli.run import run as run_command
        from gdfit.errors import UsageError
        from gdfit.config import load_config
        from gdfit.engine.interrupts import pause_point

        pause_point("config")
        flags = {"device": device, "seed": seed, "max_iters": max_iters, "holdout.fraction": holdout}
        resolved = load_config(config, set_ or [], flags, confidence=ci or ci_plot is not None)
        with resolved.locating():
            if is_grouped(resolved) or output_dir is not None or (resume is not None and resume.is_dir()):
                refuse_flags({"--ci": ci or None, "--ci-plot": ci_plot, "--every": every, "--plot": plot,
                              "--checkpoint": checkpoint, "--tensorboard": tensorboard, "--save": save,
                              "--holdout": holdout})
                if not is_grouped(resolved):
                    raise UsageError("--output-dir and --resume DIR are for many fits: a config with data.group",
                                     key="--output-dir" if output_dir is not None else "--resume")
                raise typer.Exit(run_groups(resolved, GroupOptions(json_mode, output, output_dir, resume, backend,
                                                                   address)))
            options = RunOptions(json_mode, every, output, plot, x_limit, checkpoint, checkpoint_every, resume,
                                 tensorboard, save, ci_plot, threads)
            status = run_command(resolved, options)
    raise typer.Exit(int(STATUS_EXIT[status]))


@app.command("config", cls=_Command)
def config_cmd(
    config: Optional[str] = typer.Argument(None, metavar="CONFIG", help="YAML config file, or - for standard input."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print the resolved config as one JSON object."),
    schema: bool = typer.Option(False, "--schema", help="Print every config key with its default and valid values."),
    advise: bool = typer.Option(False, "--advise", help="Estimate the loss curvature at the start and suggest a learning rate (imports torch)."),
) -> None:
    """Validate CONFIG and print it resolved: defaults filled in, --set overrides applied.

    \b
    Examples:
      gdfit config configs/seed.yaml
      gdfit config configs/seed.yaml --set optimizer=adam --json
      gdfit config configs/seed.yaml --advise
      gdfit config --schema
    """
    with edge(json_mode):
        from gdfit.cli.config import show_config

        show_config(config, set_ or [], json_mode, schema, advise)


@app.command(cls=_Command)
def sweep(
    config: Optional[str] = typer.Argument(None, metavar="CONFIG", help="YAML config file, or - for standard input. Not needed with --resume or --show."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", metavar="KEY=VALUES", help="Values of one key: V1,V2,... (YAML each), a..b (integers), logspace(a,b,n) or linspace(a,b,n). Repeatable: the runs are the Cartesian product."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    json_mode: bool = typer.Option(False, "--json", help="JSON Lines: start, one run event per run, end."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="PATH", help="A path ending in .json: the whole result as one JSON document, written atomically. Any other path: a sweep folder (config.json, runs.jsonl with a line per finished run, summary.json at the end) that --resume continues and --show prints."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="DIR", help="Continue an interrupted or killed sweep folder: run only the runs it lacks. CONFIG, --grid and --set, if given, must match it."),
    show_dir: Optional[Path] = typer.Option(None, "--show", metavar="DIR", help="Print a finished or partial sweep folder without running anything."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH", help="Draw updates-to-converge against the swept value (needs gdfit[plot])."),
    sort: str = typer.Option("iters", "--sort", metavar="KEY", help="Sort rows by iters (updates to converge, the default), loss, or a grid key."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", metavar="N", help="Most updates per run."),
    x_limit: int = typer.Option(X_LIMIT, "--x-limit", min=0, metavar="N", help="Report x of runs with at most N elements."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", metavar="DIR", help="Log each run's settings and final metrics for TensorBoard's HParams view (needs gdfit[tensorboard]). A folder of its own: one that holds earlier logs is refused, unless this sweep resumes."),
    backend: str = typer.Option("local", "--backend", metavar="NAME", help="local (batches in this process) or dask (batches as Dask tasks; needs gdfit[dask])."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", help="With --backend dask: join the scheduler at ADDR (tcp://HOST:PORT; also DASK_SCHEDULER_ADDRESS). Without: a local cluster on 127.0.0.1."),
) -> None:
    """Many runs of a config over a grid of any keys, in batched tensors. Each run stops at its own
    update, exactly as `gdfit run` would.

    \b
    Examples:
      gdfit sweep configs/seed.yaml --grid "learning_rate=logspace(1e-2,10,16)"
      gdfit sweep configs/seed.yaml --grid learning_rate=0.5,1,4.5 --grid seed=0..3 --json
      gdfit sweep configs/momentum.yaml --grid optimizer.momentum=0,0.5,0.9 --sort loss
      gdfit sweep configs/seed.yaml --grid optimizer=gd,adam --output sweeps/demo
      gdfit sweep --resume sweeps/demo
      gdfit sweep --show sweeps/demo --sort loss
      gdfit sweep configs/seed.yaml --grid seed=0..999 --grid "learning_rate=logspace(1e-3,10,100)" --backend dask

    Exit status: 0 when at least one run converged, 1 when none did, 2 for bad input, 130 when
    interrupted (a sweep folder keeps the finished runs).
    """
    with edge(json_mode):
        from gdfit.cli.sweep import SweepOptions
        from gdfit.cli.sweep import sweep as sweep_command

        flags = {"device": device, "max_iters": max_iters}
        status = sweep_command(SweepOptions(config, grid or [], set_ or [], flags, json_mode, output, plot, sort, x_limit,
                                            tensorboard, resume, show_dir, backend, address))
    raise typer.Exit(status)


@app.command(cls=_Command)
def plot(
    files: List[Path] = typer.Argument(..., metavar="FILE...", help="--output documents (run or sweep) or captured --json output."),
    out: Path = typer.Option(..., "--output", "-o", metavar="PATH", help="The image to write: .png, .svg or .pdf."),
    group: Optional[str] = typer.Option(None, "--group", metavar="G", help="Many fits: draw group G's data and fitted curve (default: a histogram of each parameter)."),
) -> None:
    """Draw saved results: loss curves overlaid with a legend, a sweep's updates-to-converge, or a
    many-fits results table (histograms of the parameters, or one group's fit).

    \b
    Examples:
      gdfit run configs/seed.yaml --output a.json && gdfit plot a.json -o a.png
      gdfit run configs/seed.yaml --json > b.jsonl && gdfit plot a.json b.jsonl -o both.svg
      gdfit sweep configs/seed.yaml --grid "learning_rate=logspace(1e-2,10,16)" -o s.json && gdfit plot s.json -o s.png
      gdfit run configs/dose-response.yaml -o r.csv; gdfit plot r.csv -o hist.png; gdfit plot r.csv --group 7 -o g7.png
    """
    with edge():
        from gdfit.cli.plot import plot_files

        plot_files(files, out, group)


@app.command(cls=_Command)
def landscape(
    config: str = typer.Argument(..., metavar="CONFIG", help="YAML config file, or - for standard input."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="PATH", help="The picture: .png or .svg, or .gif for an animation (needs gdfit[plot]). Without it, a text picture in the terminal."),
    compare: Optional[List[str]] = typer.Option(None, "--compare", metavar="KEY=VALUES", help="Runs to draw together: V1,V2,... of one key, as sweep's --grid (optimizer=gd,momentum,adam,lm). Repeatable: every combination, or with --paired the lists element by element."),
    paired: bool = typer.Option(False, "--paired", help="Pair the --compare lists element by element (optimizer=gd,adam with learning_rate=1e-3,0.1) instead of taking every combination."),
    params: Optional[str] = typer.Option(None, "--params", metavar="A,B", help="Two fitted parameters of a curve fit to draw the loss over (the others held at the first run's fitted values). Default: the two parameters of a two-parameter fit, else a slice through the first run's start and end."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", help="Random seed (overrides the config); also picks the slice's random direction."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", metavar="N", help="Most updates per run."),
    size: int = typer.Option(200, "--size", min=10, max=1000, metavar="N", help="Grid points per side of an image (default 200)."),
    panels: bool = typer.Option(False, "--panels", help="One panel per run on the same surface, instead of every path on one."),
) -> None:
    """The loss surface on a plane with each run's path across it: filled contours on a log colour
    scale, the start, each end and the best point marked.

    \b
    Examples:
      gdfit landscape configs/seed.yaml
      gdfit landscape configs/seed.yaml --compare learning_rate=1,4.5,8.9,9.1 --panels -o lr.png
      gdfit landscape fit.yaml --compare optimizer=gd,adam,lm --compare learning_rate=1e-11,1e-4,1 --paired -o fit.gif
      gdfit landscape fit.yaml --params b1,b3 -o slice.svg

    Exit status: 0 when drawn, 2 for bad input, 130 when interrupted (the runs so far are drawn).
    """
    with edge():
        from gdfit.cli.landscape import LandscapeOptions
        from gdfit.cli.landscape import landscape as landscape_command

        flags = {"device": device, "seed": seed, "max_iters": max_iters}
        status = landscape_command(LandscapeOptions(config, compare or [], paired, set_ or [], flags, params, output,
                                                    size, panels))
    raise typer.Exit(status)


@app.command("grad-demo", cls=_Command)
def grad_demo(
    x: Optional[str] = typer.Option(None, "--x", metavar="MATRIX", help='The input x in YAML/JSON flow syntax, e.g. "[[0.5, -1], [2, 3]]". Default: [[1, 2], [3, 4]].'),
    expr: Optional[str] = typer.Option(None, "--expr", metavar="EXPR", help="A scalar expression of x: numbers, x, + - * / **, parentheses, comparisons (< <= > >=) and the functions of docs/curve-models.md (sum mean exp log sqrt erf where min max ...). Default: sum((x + 2) * (x - 2))."),
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON document (x, nodes, y, grad, check, graph)."),
    dot: Optional[Path] = typer.Option(None, "--dot", metavar="PATH", help="Write the backward graph as Graphviz DOT text (render: dot -Tsvg PATH)."),
) -> None:
    """The tutorial's autograd walkthrough, or the same for any expression.

    \b
    Examples:
      gdfit grad-demo
      gdfit grad-demo --expr "mean(x**3)" --x "[[1,2],[3,4]]"
      gdfit grad-demo --json | python -m json.tool
      gdfit grad-demo --dot graph.dot && dot -Tsvg graph.dot > graph.svg

    Exit status: 0 when the gradient check passes (or is skipped), 1 when it fails, 2 for bad input.
    """
    with edge(json_mode):
        from gdfit.cli.graddemo import grad_demo as demo

        passed = demo(x, expr, json_mode, dot)
    if not passed:  # the demo ran, but autograd and finite differences disagree: say so in the status
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ["GDFIT_DEBUG"] = "1"
    from gdfit.cli.environment import terminal_width_note
    from gdfit.files.stdout import guard

    note = terminal_width_note()
    if note:
        _err(f"gdfit: warning: {note}")
    saved = sys.stdout
    out = guard()
    try:
        code = _app(args)
        out.flush()
    finally:
        sys.stdout = saved
    if out.broken_pipe:  # the reader went away: quiet, as a process killed by SIGPIPE
        return BROKEN_PIPE
    if out.problem is not None:
        _err(f"gdfit: error: standard output: cannot write: {out.problem.strerror or out.problem}")
        return int(ExitCode.BAD_INPUT)
    return code


def _app(args: list[str]) -> int:
    from gdfit.cli.usage import click_exceptions, from_click

    exceptions = click_exceptions()
    no_args = getattr(exceptions, "NoArgsIsHelpError", ())  # Click >= 8.2; older ones print help and exit 0
    try:
        # not standalone: Click's usage errors come here, to be said in gdfit's format
        code = app(args=args, prog_name="gdfit", standalone_mode=False)
    except no_args as help_:
        help_.show()  # bare `gdfit`: the help, as a usage error (exit 2)
        return int(ExitCode.BAD_INPUT)
    except exceptions.UsageError as err:
        return _report(from_click(err), "--json" in args)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else int(ExitCode.BAD_INPUT))
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:  # between the edges: while Click parses, or while stdout is guarded
        _err("gdfit: interrupted")
        if "--json" in args:
            _json_error("interrupted", "interrupted by Ctrl-C (SIGINT)")
        return int(ExitCode.INTERRUPTED)
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

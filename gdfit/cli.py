"""The command line: parse flags, build the config, pick a renderer, map errors to exit codes.

Heavy modules (torch, and through the engine everything that needs it) are imported inside the
commands that use them, so `gdfit --help`, `--version` and `gdfit config` start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from gdfit import __version__
from gdfit.errors import ExitCode, GdfitError

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
    "converged": ExitCode.OK,
    "max_iters": ExitCode.NOT_CONVERGED,
    "timeout": ExitCode.NOT_CONVERGED,
    "stalled": ExitCode.NOT_CONVERGED,
    "diverged": ExitCode.DIVERGED,
    "interrupted": ExitCode.INTERRUPTED,
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


@contextmanager
def edge(json_mode: bool = False) -> Iterator[None]:
    """The one place where exceptions become messages and exit codes."""
    try:
        yield
    except GdfitError as err:
        if _debug():
            traceback.print_exc()
        _err(f"gdfit: error: {err}")
        if json_mode:
            from gdfit.render.jsonl import dumps, error_event

            try:
                print(dumps(error_event(err.kind, err.located())), flush=True)
            except BrokenPipeError:
                _silence_stdout()
        raise typer.Exit(int(err.exit_code))
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(BROKEN_PIPE)
    except KeyboardInterrupt:
        _err("gdfit: aborted")
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    except typer.Exit:
        raise
    except Exception as err:  # a bug: say so plainly, keep the traceback for --debug
        if _debug():
            raise
        _err(f"gdfit: internal error: {type(err).__name__}: {err}")
        _err("  rerun with --debug (or GDFIT_DEBUG=1) for the traceback, and please report it")
        raise typer.Exit(INTERNAL_ERROR)


def _version(value: bool) -> None:
    if value:
        print(f"gdfit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Fit a tensor to a target by gradient descent, as in the PyTorch tutorial, from YAML configs.

    \b
    Examples:
      gdfit run configs/seed.yaml
      gdfit run configs/seed.yaml --json --every 1 | jq -c '[.event, .iter, .loss]'
      gdfit config configs/seed.yaml --advise

    Add --debug (or set GDFIT_DEBUG=1) to any command to see Python tracebacks.
    """


SET_HELP = "Override a config key: KEY=VALUE, VALUE read as YAML; dotted keys reach nested ones (optimizer.momentum=0.5). Repeatable."


@app.command()
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
    x_limit: int = typer.Option(100, "--x-limit", min=0, metavar="N", help="Tensors with more elements are summarised, not printed in full."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH", help="Draw the loss curve to PATH (.png, .svg, .pdf); needs gdfit[plot]."),
) -> None:
    """Fit x to the config's target by gradient descent and stream each update.

    \b
    Examples:
      gdfit run configs/seed.yaml
      gdfit run configs/seed.yaml --set learning_rate=0.5 --every 5
      gdfit run configs/seed.yaml --json --every 1 | jq -c 'select(.event=="step") | [.iter, .loss]'
      cat configs/seed.yaml | gdfit run - --output result.json

    Exit status: 0 converged, 1 stopped by a limit, 2 bad input, 3 diverged, 130 interrupted.
    """
    with edge(json_mode):
        from gdfit.config import load_config

        flags = {"device": device, "seed": seed, "max_iters": max_iters}
        resolved = load_config(config, set_ or [], flags)
        status = _run(resolved, json_mode, every, output, x_limit, plot)
    raise typer.Exit(int(STATUS_EXIT[status]))


def _run(resolved, json_mode: bool, every: int | None, output: Path | None, x_limit: int, plot: Path | None) -> str:
    from gdfit.render.document import write_document

    _check_outputs(output, plot)

    import time

    from rich.console import Console

    from gdfit.engine import Descent, every_n, prepare
    from gdfit.interrupts import StopRequest
    from gdfit.render.human import HumanRenderer, throttled_reporter
    from gdfit.render.jsonl import JsonLinesRenderer

    problem = prepare(resolved)
    if json_mode:
        renderer = JsonLinesRenderer(sys.stdout)
        report = every_n(1 if every is None else every)
    else:
        show_lr = resolved.config.schedule.name != "constant"
        renderer = HumanRenderer(Console(), show_lr=show_lr)
        report = throttled_reporter(time.perf_counter) if every is None else every_n(every)
    with StopRequest() as stop:
        descent = Descent(problem, report=report, report_last=every != 0, x_limit=x_limit, should_stop=stop)
        for warning in descent.start.warnings:
            _err(f"gdfit: warning: {warning}")
        renderer.start(descent.start)
        try:
            for record in descent.steps():
                renderer.step(record)
        finally:
            if descent.result is None and hasattr(renderer, "abort"):
                renderer.abort()
        result = descent.result
        renderer.end(result)
    if result.status == "diverged":
        _err(f"gdfit: diverged after {result.iters} updates ({result.stop_rule}). {_divergence_hint(descent)}")
    elif result.status == "interrupted":
        _err(f"gdfit: interrupted after {result.iters} updates")
    config_doc = descent.start.config
    if output is not None:
        write_document(output, result, config_doc)
    if plot is not None:
        from gdfit.plotting import plot_run

        plot_run(plot, result, config_doc)
    return result.status


def _check_outputs(output: Path | None, plot: Path | None) -> None:
    """Fail before the run, not after it: folders must exist, the plot needs its extra."""
    from gdfit.render.document import check_writable

    for path in (output, plot):
        if path is not None:
            check_writable(path)
    if plot is not None:
        from gdfit.plotting import check_format, require_matplotlib

        check_format(plot)
        require_matplotlib()


def _divergence_hint(descent) -> str:
    config = descent.problem.config
    stable = (descent.advice or {}).get("max_stable_lr")
    if stable is not None and config.loss.name == "mse" and config.optimizer.name == "gd":
        n = descent.problem.target.numel()
        return (
            f"Use a smaller learning_rate: for mse on {n} elements, gd diverges above lr = {stable:.6g} "
            f"(learning_rate is {config.learning_rate:g})."
        )
    return f"Try a smaller learning_rate than {config.learning_rate:g}."


@app.command("config")
def config_cmd(
    config: Optional[str] = typer.Argument(None, metavar="[CONFIG]", help="YAML config file, or - for standard input."),
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
        if schema:
            from gdfit.schema import schema_rows

            _print_schema(schema_rows(), json_mode)
            return
        if config is None:
            raise GdfitError("give a CONFIG path (or - for standard input), or --schema", source="gdfit config")
        from gdfit.config import load_config

        resolved = load_config(config, set_ or [])
        document = resolved.config.model_dump(mode="json")
        if advise:
            document = {"config": document, "advice": _advice(resolved)}
        if json_mode:
            from gdfit.render.jsonl import dumps

            print(dumps(document))
        else:
            import yaml

            print(yaml.safe_dump(document, sort_keys=False, default_flow_style=None).rstrip())


def _advice(resolved) -> dict:
    from gdfit.advisor import advise
    from gdfit.engine import prepare

    problem = prepare(resolved)
    return advise(resolved.config, problem.loss.functional(), problem.x0, problem.target)


def _print_schema(rows: list[dict], json_mode: bool) -> None:
    if json_mode:
        from gdfit.render.jsonl import dumps

        print(dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "default", "valid values", title="gdfit config keys")
    for row in rows:
        table.add_row(row["key"], row["default"], row["values"])
    Console().print(table)


@app.command()
def sweep(
    config: str = typer.Argument(..., metavar="CONFIG", help="YAML config file, or - for standard input."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", metavar="KEY=VALUES", help="Values of one key: V1,V2,... (YAML each), a..b (integers), logspace(a,b,n) or linspace(a,b,n). Repeatable: the runs are the Cartesian product."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    json_mode: bool = typer.Option(False, "--json", help="JSON Lines: start, one run event per run, end."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="PATH", help="Write the whole result as one JSON document, atomically."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH", help="Draw updates-to-converge against the swept value (needs gdfit[plot])."),
    sort: str = typer.Option("iters", "--sort", metavar="KEY", help="Sort rows by iters (updates to converge, the default), loss, or a grid key."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", metavar="N", help="Most updates per run."),
    x_limit: int = typer.Option(100, "--x-limit", min=0, metavar="N", help="Report x of runs with at most N elements."),
) -> None:
    """Many runs of one config in one batched tensor: a grid over learning_rate, seed, init and
    optimizer settings. Each run stops at its own update, exactly as `gdfit run` would.

    \b
    Examples:
      gdfit sweep configs/seed.yaml --grid "learning_rate=logspace(1e-2,10,16)"
      gdfit sweep configs/seed.yaml --grid learning_rate=0.5,1,4.5 --grid seed=0..3 --json
      gdfit sweep configs/momentum.yaml --grid optimizer.momentum=0,0.5,0.9 --sort loss

    Exit status: 0 when at least one run converged, 1 when none did, 2 for bad input.
    """
    with edge(json_mode):
        status = _sweep(config, grid or [], set_ or [], json_mode, output, plot, sort, device, max_iters, x_limit)
    raise typer.Exit(status)


def _sweep(config, grid_items, overrides, json_mode, output, plot, sort, device, max_iters, x_limit) -> int:
    import time

    from gdfit.config import merge_config
    from gdfit.sweep import expand, parse_grid

    _check_outputs(output, plot)
    raw = merge_config(config, overrides, {"device": device, "max_iters": max_iters})
    grid = parse_grid(grid_items, raw.data.get("sweep"), raw.source)
    if sort not in ("iters", "loss") and sort not in grid:
        raise GdfitError(f"unknown sort key {sort!r}; use iters, loss or one of: {', '.join(grid)}", key="--sort")
    runs = list(expand(raw.data, grid, raw.source, raw.base_dir))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gdfit.interrupts import StopRequest
    from gdfit.render import sweep_view
    from gdfit.render.jsonl import dumps
    from gdfit.sweep import best_run, plan_and_execute, sort_results

    console = Console(stderr=json_mode)
    started = time.perf_counter()
    with StopRequest() as stop:
        steps = plan_and_execute(runs, x_limit, stop)
        plan = next(steps)
        resolved_config = runs[0].resolved.config.model_dump(mode="json")
        advice = plan.advice
        if json_mode:
            print(dumps({**sweep_view.start_event(plan, resolved_config, grid), "advice": advice}), flush=True)
        else:
            console.print(sweep_view.plan_line(plan))
            if advice.get("max_stable_lr") is not None:
                console.print(f"advisor (at the first run's start): curvature {advice['curvature']:.6g}; "
                              f"{advice['note']}")
        with Progress(TextColumn("runs done"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True, disable=json_mode) as bar:
            task = bar.add_task("sweep", total=len(runs))
            for item in steps:
                if isinstance(item, tuple):
                    bar.update(task, completed=item[0])
                else:
                    results = item
    elapsed = time.perf_counter() - started
    best = best_run(results)
    ordered = sort_results(results, sort)
    if json_mode:
        for result in ordered:
            print(dumps(sweep_view.run_event(result)))
        print(dumps(sweep_view.end_event(results, best, elapsed)), flush=True)
    else:
        console.print(sweep_view.results_table(ordered, best, sort))
        sweep_view.print_summary(console, results, best, elapsed)
    if len(results) < len(runs):
        _err(f"gdfit: interrupted after {len(results)} of {len(runs)} runs")
    document = {
        "config": resolved_config, "grid": grid, "advice": advice, **sweep_view.end_event(results, best, elapsed),
        "runs": [sweep_view.run_event(r) for r in results],
    }
    document.pop("event")
    for run in document["runs"]:
        run.pop("event")
    if output is not None:
        from gdfit.render.document import write_atomic

        write_atomic(output, dumps(document) + "\n")
    if plot is not None:
        from gdfit.plotting import plot_sweep

        plot_sweep(plot, document)
    if len(results) < len(runs):
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK if any(r.status == "converged" for r in results) else ExitCode.NOT_CONVERGED)


@app.command()
def plot(
    files: List[Path] = typer.Argument(..., metavar="FILE...", help="--output documents (run or sweep) or captured --json output."),
    out: Path = typer.Option(..., "--output", "-o", metavar="PATH", help="The image to write: .png, .svg or .pdf."),
) -> None:
    """Draw saved results: loss curves overlaid with a legend, or a sweep's updates-to-converge.

    \b
    Examples:
      gdfit run configs/seed.yaml --output a.json && gdfit plot a.json -o a.png
      gdfit run configs/seed.yaml --json > b.jsonl && gdfit plot a.json b.jsonl -o both.svg
      gdfit sweep configs/seed.yaml --grid "learning_rate=logspace(1e-2,10,16)" -o s.json && gdfit plot s.json -o s.png
    """
    with edge():
        from gdfit.plotting import check_format, plot_saved, require_matplotlib
        from gdfit.render.document import check_writable

        check_writable(out)
        check_format(out)
        require_matplotlib()
        plot_saved(files, out)
        _err(f"gdfit: wrote {out}")


@app.command("grad-demo")
def grad_demo(
    x: Optional[str] = typer.Option(None, "--x", metavar="MATRIX", help='The input x in YAML/JSON flow syntax, e.g. "[[0.5, -1], [2, 3]]". Default: [[1, 2], [3, 4]].'),
    expr: Optional[str] = typer.Option(None, "--expr", metavar="EXPR", help="A scalar expression of x: numbers, x, + - * / **, parentheses and sum mean exp log sqrt abs sin cos tanh sigmoid relu square. Default: sum((x + 2) * (x - 2))."),
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
    """
    with edge(json_mode):
        from gdfit.render.document import check_writable

        if dot is not None:
            check_writable(dot)
        x_values = _parse_matrix(x) if x is not None else None
        from gdfit.graddemo import to_dot, walkthrough

        result = walkthrough(x_values, expr)
        if json_mode:
            from gdfit.render.graddemo_view import document
            from gdfit.render.jsonl import dumps

            print(dumps(document(result)))
        else:
            from rich.console import Console

            from gdfit.render.graddemo_view import render

            render(result, Console())
        if dot is not None:
            from gdfit.render.document import write_atomic

            write_atomic(dot, to_dot(result.graph))


def _parse_matrix(text: str):
    from gdfit.yamlsource import load_yaml

    return load_yaml(text, "--x", require_mapping=False).data


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ["GDFIT_DEBUG"] = "1"
    try:
        app(args=args, prog_name="gdfit")  # standalone: usage errors print and exit 2
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else int(ExitCode.BAD_INPUT))
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

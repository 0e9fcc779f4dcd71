"""Rich tables for people: a live table of reported updates, then a closing panel.

The live view repaints at most `refresh_per_second` times, on rich's own timer, so a fast loop
never waits for the terminal. Rows are kept as records and formatted only when drawn.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gdfit import records
from gdfit.config.curves import CURVES, curve_text
from gdfit.render.fit_report import fit_report
from gdfit.files.stdout import check_reader
from gdfit.words import plural

STATUS_STYLE = {
    records.CONVERGED: "bold green",
    records.MAX_ITERS: "bold yellow",
    records.STALLED: "bold yellow",
    records.TIMEOUT: "bold yellow",
    records.INTERRUPTED: "bold magenta",
    records.DIVERGED: "bold red",
    records.ERROR: "bold red",
}
HEAD_ROWS = 20
TAIL_ROWS = 20
SINGULAR_VALUES_SHOWN = 8
SPARK = "▁▂▃▄▅▆▇█"
READER_CHECK_S = 0.1  # how often a quiet renderer looks whether its pipe's reader is still there
PARAM_COLUMNS = 6  # at most this many of a curve fit's parameters get a column; all are in --json
PARAM_WIDTH = 14  # a parameter column with its borders, for a typical value at 8 digits
FIXED_WIDTH = 33  # iter and a full-precision loss, with borders
WIDE_LOSS_SCREEN = 60  # narrower screens show a loss to 6 digits, leaving room for x


def format_tensor(x: Any) -> str:
    """A tensor as the tutorial prints it (4 decimals), or the summary of a big one."""
    if x is None:
        return ""
    if isinstance(x, dict):
        text = f"shape {x['shape']}  min {x['min']:.4g}  max {x['max']:.4g}"
        if "max_abs_error" in x:  # a curve fit's prediction is summarised without it
            text += f"  max|x - target| {x['max_abs_error']:.3g}"
        return text
    text = repr(x)
    return text.removeprefix("tensor(").removesuffix(")").replace("\n       ", "\n")


def sparkline(values: list[float], width: int = 40) -> str:
    """The loss on a log scale in `width` block characters (non-finite and <= 0 values skipped)."""
    logs = [math.log10(v) for v in values if isinstance(v, float) and math.isfinite(v) and v > 0]
    if not logs:
        return ""
    if len(logs) > width:
        logs = [logs[round(i * (len(logs) - 1) / (width - 1))] for i in range(width)]
    low, high = min(logs), max(logs)
    span = high - low or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in logs)


class HumanRenderer:
    """Consumes the engine's records and draws them on `console`."""

    def __init__(self, console: Console, refresh_per_second: float = 10.0, show_lr: bool = False) -> None:
        self.console = console
        self.refresh_per_second = refresh_per_second
        self.show_lr = show_lr
        self.head: list[records.StepRecord] = []
        self.tail: deque[records.StepRecord] = deque(maxlen=TAIL_ROWS)
        self.rows_seen = 0
        self.live: Live | None = None
        self.config: dict[str, Any] = {}
        self.param_columns: list[str] = []  # a curve fit's fitted parameters, shown instead of x
        self.hidden_params = 0
        self.holdout = False  # a column for the held-out RMSE
        self.guess: dict[str, float] = {}  # a built-in curve's guessed starts, for the report's start column
        self.reader_checked = -math.inf

    def start(self, rec: records.StartRecord) -> None:
        cfg = self.config = rec.config
        opt = cfg["optimizer"]["name"]
        fitted = curve_fit_parameters(cfg)
        shown = min(len(fitted), param_columns_that_fit(self.console.width))
        self.param_columns, self.hidden_params = fitted[:shown], len(fitted) - shown
        lines = [
            f"target shape {rec.shape}  on {rec.device} ({rec.dtype}), engine {rec.engine}",
            f"loss {cfg['loss']['name']}, optimizer {opt}, learning_rate {cfg['learning_rate']:g}, "
            f"schedule {rec.schedule}",
            f"threshold {cfg['threshold']:g}, max_iters {cfg['max_iters']}, initial loss {rec.loss!r}",
        ]
        advice = rec.advice or {}
        if advice.get("max_stable_lr") is not None:
            lines.append(f"advisor: curvature {advice['curvature']:.6g}; {advice['note']}")
        if fitted:
            lines.extend(model_lines(cfg, fitted))
        if rec.guess:
            self.guess = rec.guess
            lines.append("guessed from the data: " + ", ".join(f"{n} = {v:.6g}" for n, v in rec.guess.items()))
        if rec.matrix is not None:
            lines.append(entries_line(rec.matrix))
            self.holdout = rec.matrix["held_out"] > 0
        self.console.print(Panel("\n".join(lines), title="gdfit run", expand=False))
        if rec.x is not None and not isinstance(rec.x, dict) and not fitted:  # a fit's x is its prediction
            self.console.print(Text("start x\n" + format_tensor(rec.x)))
        self.live = Live(
            console=self.console, refresh_per_second=self.refresh_per_second, transient=True,
            get_renderable=self._live_table,
        )
        self.live.start()

    def step(self, rec: records.StepRecord) -> None:
        now = time.monotonic()
        if now - self.reader_checked >= READER_CHECK_S:  # a pipe shows nothing until the end: a reader
            self.reader_checked = now  # that left (`| head`) must still stop the run
            check_reader()
        self.rows_seen += 1
        if len(self.head) < HEAD_ROWS:
            self.head.append(rec)
        else:
            self.tail.append(rec)

    def end(self, result: records.FitResult) -> None:
        if self.live is not None:
            self.live.stop()
        if self.rows_seen:
            self.console.print(self._table())
        self.console.print(self._panel(result))

    def abort(self) -> None:
        """Leave the screen usable when the run ends in an error."""
        if self.live is not None:
            self.live.stop()

    def _live_table(self) -> Table:
        """While running: the newest rows that fit on the screen (the full table comes at the end)."""
        rows = (self.head + list(self.tail))[-self._rows_that_fit():]
        return self._table(rows, skipped=0)

    def _rows_that_fit(self) -> int:
        latest = self.tail[-1] if self.tail else (self.head[-1] if self.head else None)
        if self.param_columns:
            return max(1, self.console.height - 6)
        lines_per_row = format_tensor(latest.x).count("\n") + 1 if latest is not None else 1
        return max(1, (self.console.height - 6) // lines_per_row)

    def _table(self, rows: list[records.StepRecord] | None = None, skipped: int | None = None) -> Table:
        if rows is None:
            rows = self.head + list(self.tail)
            skipped = self.rows_seen - len(rows)
        # rich shortens a crowded column with "…", which would eat a loss's exponent (1.23e-05 ->
        # 1.23e…): the iter and loss columns never shrink; the x column wraps instead
        loss_width = max([len(self._loss_text(rec.loss)) for rec in rows] + [len("loss")])
        table = Table(title=None, show_lines=False, header_style="bold")
        table.add_column("iter", justify="right", no_wrap=True,
                         min_width=max([len(str(rec.iter)) for rec in rows] + [len("iter")]))
        table.add_column("loss", justify="right", no_wrap=True, min_width=loss_width)
        if self.show_lr:
            table.add_column("lr", justify="right")
        for name in self.param_columns:
            table.add_column(name, justify="right")
        if self.holdout:
            table.add_column("held-out RMSE", justify="right")
        if not self.param_columns:
            table.add_column("x")
        if self.hidden_params:
            more = f"{self.hidden_params} more parameter{'s' if self.hidden_params > 1 else ''}"
            table.caption = f"{more} in the report below and in --json"
        for i, rec in enumerate(rows):
            if skipped and i == len(self.head):
                table.add_row("⋮", f"({plural(skipped, 'row')})", *([""] * (len(table.columns) - 2)))
            self._row(table, rec)
        return table

    def _loss_text(self, loss: float) -> str:
        """Every digit (repr) on a screen wide enough; 6 significant digits on a narrow one."""
        return repr(loss) if self.console.width >= WIDE_LOSS_SCREEN else f"{loss:.6g}"

    def _row(self, table: Table, rec: records.StepRecord) -> None:
        cells = [str(rec.iter), self._loss_text(rec.loss)]
        if self.show_lr:
            cells.append(f"{rec.lr:.4g}")
        if self.param_columns:
            values = rec.params or {}
            cells += [f"{values[name]:.8g}" if values.get(name) is not None else "" for name in self.param_columns]
        if self.holdout:
            cells.append("" if rec.holdout_rmse is None else f"{rec.holdout_rmse:.6g}")
        if not self.param_columns:
            cells.append(format_tensor(rec.x))
        table.add_row(*cells)

    def _panel(self, result: records.FitResult) -> Panel:
        return result_panel(result, self.config, self.guess)


def result_panel(result: records.FitResult, config: dict[str, Any], guess: dict[str, float] | None = None) -> Panel:
    """The closing panel: status, why, updates, loss, time, the loss's sparkline, and a curve fit's
    report or a matrix model's entries (also `gdfit.Result.report()`); `guess`: a built-in
    curve's starts guessed from the data."""
    style = STATUS_STYLE.get(result.status, "bold")
    rate = result.updates_per_s
    body = Table.grid(padding=(0, 2))
    body.add_column(style="dim")
    body.add_column()
    body.add_row("status", Text(result.status, style=style))
    body.add_row("why", result.stop_rule)
    body.add_row("updates", str(result.iters))
    body.add_row("final loss", repr(result.loss))
    body.add_row("time", f"{result.elapsed_s:.4f} s")
    body.add_row("updates/s", f"{rate:,.0f}" if rate else "-")
    spark = sparkline(result.history)
    if spark:
        body.add_row("loss (log)", spark)
    if result.fit is None:  # not a curve fit: no fit report
        if result.matrix is not None:
            matrix_rows(body, result.matrix)
        body.add_row("x", format_tensor(result.x))
        return Panel(Group(body), title="result", expand=False, border_style=style.split()[-1])
    report = Group(body, Text(""), fit_report(result, config, guess))
    return Panel(report, title="fit report", expand=False, border_style=style.split()[-1])


def param_columns_that_fit(width: int) -> int:
    """How many parameter columns fit beside iter and loss without squeezing the loss (at least one)."""
    return max(1, min(PARAM_COLUMNS, (width - FIXED_WIDTH) // PARAM_WIDTH))


def curve_fit_parameters(config: dict[str, Any]) -> list[str]:
    """The parameters a curve fit varies, in the config's order (a built-in curve's in its own, a
    global fit's at the top level); none for other models."""
    params = parameter_specs(config)
    model = config.get("model") or {}
    if config.get("datasets") or "expr" in model:
        names = list(params)
    elif model.get("name") in CURVES and "x" in model:
        names = list(CURVES[model["name"]][1])
    else:
        return []
    return [n for n in names if params.get(n, {}).get("vary", True) and params.get(n, {}).get("expr") is None]


def parameter_specs(config: dict[str, Any]) -> dict[str, Any]:
    """A curve fit's parameters as the config gives them (a global fit's at the top level)."""
    if config.get("datasets"):
        return config.get("params") or {}
    return (config.get("model") or {}).get("params") or {}


def model_lines(config: dict[str, Any], fitted: list[str]) -> list[str]:
    """What a curve fit fits: its expression (or built-in curve), or each dataset's of a global fit."""
    fitting = f"fitting {', '.join(fitted)}"
    if not config.get("datasets"):
        return [f"model {curve_text(config['model'])}, {fitting}"]
    return [f"dataset {i} ({d['data']['file']}): {d['model']['expr']}" for i, d in enumerate(config["datasets"])] + \
        [f"shared parameters: {fitting}"]


def entries_line(matrix: dict[str, Any]) -> str:
    """The split of a matrix model's target entries, in one line."""
    total, observed = matrix["entries"], matrix["observed"]
    line = f"entries: {observed:,} of {total:,} observed ({100 * observed / total:.1f}%)"
    if matrix["held_out"]:
        line += f", {matrix['held_out']:,} held out"
    return line + f", {matrix['fitted']:,} fitted"


def matrix_rows(body: Table, matrix: dict[str, Any]) -> None:
    """A matrix model's result: entries, held-out RMSE, and lowrank's singular values against the target's."""
    body.add_row("entries", entries_line(matrix).removeprefix("entries: "))
    if matrix.get("holdout_rmse") is not None:
        body.add_row("held-out RMSE", f"{matrix['holdout_rmse']:.6g}")
    values = matrix.get("singular_values")
    if values:
        shown = SINGULAR_VALUES_SHOWN
        more = " ..." if len(values["fitted"]) > shown else ""
        body.add_row("σ fitted", "  ".join(f"{v:.6g}" for v in values["fitted"][:shown]) + more)
        body.add_row(f"σ target ({values['method'].split()[0]})",
                     "  ".join(f"{v:.6g}" for v in values["target"][:shown]) + more)


def throttled_reporter(clock: Callable[[], float], first: int = HEAD_ROWS, interval: float = 0.1):
    """Report the first `first` updates, then at most one every `interval` seconds."""
    last = [-math.inf]

    def report(k: int) -> bool:
        if k <= first:
            return True
        now = clock()
        if now - last[0] >= interval:
            last[0] = now
            return True
        return False

    return report

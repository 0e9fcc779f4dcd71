"""A curve fit's report for people, in the spirit of lmfit's `fit_report`: the parameters with
value ± stderr, relative error, start and bounds; the fit statistics; the strongest correlations.

The numbers come from the `FitResult` (the same ones the end event carries) and the bounds and
starts from the resolved config, so the report and `--json` cannot disagree.
"""

from __future__ import annotations

import math
from typing import Any

from typing import Callable

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from gdfit import records

MIN_CORRELATION = 0.1  # as lmfit: weaker correlations are left out of the report
MAX_CORRELATIONS = 10
STATISTICS = (  # (fit key, label, format)
    ("n", "data points (n)", "d"),
    ("p", "fitted parameters (p)", "d"),
    ("dof", "degrees of freedom", "d"),
    ("missing", "missing (NaN) points", "d"),
    ("rss", "RSS", ".6g"),
    ("residual_std", "residual std", ".6g"),
    ("chi2", "chi-square", ".6g"),
    ("reduced_chi2", "reduced chi-square", ".6g"),
    ("r2", "R²", ".8f"),
    ("aic", "AIC", ".6g"),
    ("bic", "BIC", ".6g"),
)


def fitted_names(params: dict[str, Any]) -> list[str]:
    """The parameters the covariance is over: all but the fixed and derived ones, in the config's order."""
    return [name for name, entry in params.items() if not entry.get("fixed") and not entry.get("derived")]


def correlations(names: list[str], covariance: list[list[float]] | None,
                 least: float = MIN_CORRELATION) -> list[tuple[str, str, float]]:
    """(name_i, name_j, corr_ij) for pairs with |corr| > least, strongest first, where
    corr_ij = cov_ij / sqrt(cov_ii cov_jj). Pairs with an undetermined variance are skipped."""
    if covariance is None:
        return []
    pairs = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            scale = covariance[i][i] * covariance[j][j]
            if not (math.isfinite(scale) and scale > 0 and math.isfinite(covariance[i][j])):
                continue
            corr = covariance[i][j] / math.sqrt(scale)
            if abs(corr) > least:
                pairs.append((a, names[j], corr))
    return sorted(pairs, key=lambda pair: -abs(pair[2]))


def relative_error(value: float | None, stderr: float | None) -> float | None:
    """stderr / |value| as a percentage; None when either is missing or the value is 0."""
    if value is None or stderr is None or not math.isfinite(stderr) or value == 0:
        return None
    return 100.0 * stderr / abs(value)


def _number(value: Any, spec: str = ".8g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # inf or nan: say so, never a made-up digit
    return format(value, spec)


def _bound(value: float | None, default: str) -> str:
    return default if value is None else f"{value:g}"


def _note(entry: dict[str, Any], spec: dict[str, Any]) -> str:
    """Why a stderr deserves a second look: a fixed parameter, or one sitting on its bound; and
    which are derived (their stderr is propagated) or started from a guess."""
    if entry.get("fixed"):
        return "fixed"
    if entry.get("derived"):
        return "derived"
    value = entry["value"]
    if spec.get("min") is not None and value <= spec["min"]:  # a bound says more than where it started
        return "at min"
    if spec.get("max") is not None and value >= spec["max"]:
        return "at max"
    return "guessed" if spec.get("guessed") else ""


UNBOUNDED = 10_000  # columns: wider than any table here


class Narrowing:
    """The first of `layouts` (widest first) that fits the width it is drawn in, else the last:
    a table drops its less important columns rather than cut a number short."""

    def __init__(self, layouts: list[Callable[[], RenderableType]]) -> None:
        self.layouts = layouts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        unbounded = options.update(max_width=UNBOUNDED)  # Measurement.get clamps to the width it is given
        for layout in self.layouts[:-1]:
            renderable = layout()
            if Measurement.get(console, unbounded, renderable).maximum <= options.max_width:
                yield renderable
                return
        yield self.layouts[-1]()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.layouts[0]())


# the parameter table's columns, most important first: the narrower layouts keep a prefix
PARAMETER_COLUMNS = (("parameter", "left"), ("value", "right"), ("± stderr", "right"), ("start", "right"),
                     ("min", "right"), ("max", "right"), ("", "left"), ("rel. err", "right"))
SHOWN = ("parameter", "value", "± stderr", "rel. err", "start", "min", "max", "")  # the widest layout's order


def parameter_table(params: dict[str, Any], specs: dict[str, Any]) -> Narrowing:
    """Name, value ± stderr, relative error, start, bounds, and a note (fixed, at a bound): at a
    narrow width without the relative error (value and stderr give it), then the note, then the
    bounds; narrower still, one parameter to two lines. A value or start is never cut short."""
    rows = [_parameter_cells(name, entry, specs.get(name, {})) for name, entry in params.items()]
    layouts = [lambda keep=keep: _parameter_grid(rows, keep) for keep in (8, 7, 6, 4)]
    return Narrowing([*layouts, lambda: _parameter_lines(rows)])


def _parameter_cells(name: str, entry: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
    rel = relative_error(entry.get("value"), entry.get("stderr"))
    derived = entry.get("derived")
    return {
        "parameter": name, "value": _number(entry.get("value")),
        "± stderr": "" if entry.get("fixed") else "± " + _number(entry.get("stderr"), ".3g"),
        "rel. err": "" if rel is None else f"{rel:.2f}%",
        "start": "-" if derived else _number(spec.get("value"), "g"),
        "min": "" if derived else _bound(spec.get("min"), "-inf"),
        "max": "" if derived else _bound(spec.get("max"), "inf"),
        "": _note(entry, spec),
    }


def _parameter_grid(rows: list[dict[str, str]], keep: int) -> Table:
    """The table with the `keep` most important columns, in the widest layout's order."""
    kept = {heading: justify for heading, justify in PARAMETER_COLUMNS[:keep]}
    table = Table(title=None, header_style="bold", box=None, padding=(0, 1))
    for heading in SHOWN:
        if heading in kept:
            table.add_column(heading, justify=kept[heading], overflow="fold")
    for cells in rows:
        table.add_row(*(cells[heading] for heading in SHOWN if heading in kept))
    return table


def _parameter_lines(rows: list[dict[str, str]]) -> Text:
    """`name = value ± stderr (rel)` and, indented, `start S, [min, max], note`: each part wraps
    as a word, so a number is folded onto a line of its own, never cut."""
    lines = []
    for cells in rows:
        rel = f" ({cells['rel. err']})" if cells["rel. err"] else ""
        lines.append(f"{cells['parameter']} = {cells['value']} {cells['± stderr']}".rstrip() + rel)
        more = [f"start {cells['start']}"] if cells["start"] != "-" else []
        more += [f"[{cells['min']}, {cells['max']}]"] if cells["min"] else []
        more += [cells[""]] if cells[""] else []
        if more:
            lines.append("  " + ", ".join(more))
    return Text("\n".join(lines), overflow="fold")


def derived_lines(params: dict[str, Any], specs: dict[str, Any]) -> list[Text]:
    """`NAME = EXPR` for each derived parameter (its stderr is propagated from the covariance)."""
    return [Text(f"{name} = {specs.get(name, {}).get('expr')}", style="dim")
            for name, entry in params.items() if entry.get("derived")]


def interval_cell(entry: dict[str, Any], level: str) -> str:
    """A profile interval beside value ± stderr, as offsets from the value: `-0.174 / +0.203`;
    `none` where the bound is unreachable, `-` where the parameter has no interval."""
    bounds = (entry.get("ci") or {}).get(level)
    if bounds is None:
        return "" if entry.get("fixed") else "-"
    value = entry["value"]
    low, high = (None if b is None else b - value for b in bounds)
    return f"{'none' if low is None else format(low, '+.3g')} / {'none' if high is None else format(high, '+.3g')}"


def interval_table(params: dict[str, Any], confidence: dict[str, Any] | None) -> list[RenderableType]:
    """The profile intervals beside ± stderr, as offsets from the value, under their heading, with
    how they were found and why any is missing; nothing without --ci."""
    if confidence is None:
        return []
    levels = list(confidence["probabilities"])
    table = Table(title=None, header_style="bold", box=None, padding=(0, 1))
    for heading in ("parameter", "± stderr", *(f"{level}σ ({confidence['probabilities'][level]:.2%})" for level in levels)):
        table.add_column(heading, justify="left" if heading == "parameter" else "right", overflow="fold")
    for name, entry in params.items():
        if not entry.get("fixed"):
            table.add_row(name, "± " + _number(entry.get("stderr"), ".3g"), *(interval_cell(entry, l) for l in levels))
    notes = [f"profile likelihood, F-test, {confidence['refits']} refits with lm; none: not reached within the "
             "parameter's range"] + confidence["notes"]
    return [Text("confidence intervals", style="bold"), table, Text("\n".join(notes), style="dim"), Text("")]


def statistics_table(fit: dict[str, Any]) -> Narrowing:
    """The fit statistics in two label/value column pairs, to keep the panel short; at a narrow
    width in one pair, narrower still one `label: value` to a line (a value is never cut short)."""
    cells = [(label, _number(fit.get(key), spec)) for key, label, spec in STATISTICS if key in fit]
    return Narrowing([lambda: _statistics_grid(cells, 2), lambda: _statistics_grid(cells, 1),
                      lambda: Text("\n".join(f"{label}: {value}" for label, value in cells), overflow="fold")])


def _statistics_grid(cells: list[tuple[str, str]], pairs: int) -> Table:
    table = Table.grid(padding=(0, 2))
    for _ in range(pairs):
        table.add_column(style="dim")
        table.add_column(justify="right", overflow="fold")
    rows = (len(cells) + pairs - 1) // pairs
    columns = [cells[i * rows:(i + 1) * rows] for i in range(pairs)]
    for i in range(rows):
        table.add_row(*(cell for column in columns for cell in (column[i] if i < len(column) else ("", ""))))
    return table


def dataset_lines(datasets: list[dict[str, Any]] | None) -> list[RenderableType]:
    """A global fit's points, RSS and chi-square per dataset, under their heading; none otherwise."""
    if not datasets:
        return []
    table = Table(title=None, header_style="bold", box=None, padding=(0, 1))
    for heading, justify in (("dataset", "left"), ("data", "left"), ("n", "right"), ("RSS", "right"),
                             ("chi-square", "right")):
        table.add_column(heading, justify=justify, overflow="fold")
    for i, entry in enumerate(datasets):
        table.add_row(str(i), entry["data"], str(entry["n"]), _number(entry["rss"], ".6g"), _number(entry["chi2"], ".6g"))
    return [Text("datasets", style="bold"), table, Text("")]


def correlation_lines(params: dict[str, Any], covariance: list[list[float]] | None) -> Text:
    """C(a, b) = +0.9876 for the strongest pairs, or why there are none."""
    names = fitted_names(params)
    if covariance is None or not all(math.isfinite(v) for row in covariance for v in row):
        return Text("the data do not determine every parameter (singular Jacobian): no covariance", style="yellow")
    pairs = correlations(names, covariance)
    if not pairs:
        return Text(f"every |correlation| is <= {MIN_CORRELATION:g}", style="dim")
    lines = [f"C({a}, {b}) = {corr:+.4f}" for a, b, corr in pairs[:MAX_CORRELATIONS]]
    if len(pairs) > MAX_CORRELATIONS:
        lines.append(f"(and {len(pairs) - MAX_CORRELATIONS} more with |correlation| > {MIN_CORRELATION:g})")
    return Text("\n".join(lines))


def fit_report(result: records.FitResult, config: dict[str, Any], guess: dict[str, float] | None = None
               ) -> RenderableType:
    """The parameter table, the statistics and the correlations, under their headings. `guess`:
    a built-in curve's starts guessed from the data (the start column shows them)."""
    specs = dict((config.get("model") or {}).get("params") or config.get("params") or {})
    for name, value in (guess or {}).items():
        specs[name] = {**specs.get(name, {}), "value": value, "guessed": True}
    fit = result.fit or {}
    reason = fit.get("stderr_reason")
    return Group(
        Text("parameters", style="bold"),
        parameter_table(result.params or {}, specs),
        *derived_lines(result.params or {}, specs),
        *([Text(f"no standard errors: {reason}", style="yellow")] if reason else []),
        Text(""),
        *interval_table(result.params or {}, result.confidence),
        Text("statistics", style="bold"),
        statistics_table(fit),
        *([Text(f"loss: {fit['loss']['name']} (f_scale {fit['loss']['f_scale']:g}), as least_squares; "
                "stderr from its scaled Jacobian, as curve_fit")]
          if fit.get("loss") else []),
        Text(""),
        *dataset_lines((result.fit or {}).get("datasets")),
        Text(f"correlations (|C| > {MIN_CORRELATION:g})", style="bold"),
        Text("none: no covariance without standard errors", style="dim") if reason
        else correlation_lines(result.params or {}, result.covariance),
    )

"""`gdfit plot`: draw saved results."""

from __future__ import annotations

from pathlib import Path

from gdfit.cli.common import warn
from gdfit.errors import OutputError, UsageError


def plot_files(files: list[Path], out: Path, group: str | None = None) -> None:
    from gdfit.pictures.groups_plot import is_results_table
    from gdfit.pictures.plotting import check_format, plot_saved, require_matplotlib
    from gdfit.files.paths import reads, refuse_clashes, writes
    from gdfit.files.writing import check_writable

    refuse_clashes([use for path in files for use in reads("FILE", path)] + writes("--output", out))
    from gdfit.files.locks import hold_all

    try:
        check_writable(out)
        check_format(out)
        require_matplotlib()
        if len(files) == 1 and is_results_table(files[0]):
            with hold_all([(out, "--output", False)]):
                _plot_results(files[0], out, group)
        elif group is not None:
            raise UsageError("--group draws one group of a many-fits results table (.csv, .parquet, .json)",
                             key="--group")
        else:
            with hold_all([(out, "--output", False)]):
                plot_saved(files, out)
    except OutputError as err:  # the drawing code speaks of run's --plot; here the flag is --output
        err.key = "--output"
        raise
    warn(f"wrote {out}")


def _plot_results(path: Path, out: Path, group: str | None) -> None:
    """A many-fits results table: each parameter's histogram, or one group's data and curve."""
    from gdfit.pictures.groups_plot import plot_group, plot_histograms, read_results

    rows, document = read_results(path)
    if group is None:
        plot_histograms(out, rows, str(path))
    else:
        plot_group(out, rows, document, group, str(path))

"""`gdfit landscape`: run the config (and its --compare variants), then draw the loss surface on
a plane with each run's path: to an image, an animation, or as characters in the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gdfit import records
from gdfit.cli.common import warn
from gdfit.errors import ConfigError, ExitCode

MAX_VARIANTS = 12  # paths in one picture; more are unreadable
SIZE = 200  # grid points per side of an image


@dataclass(frozen=True)
class LandscapeOptions:
    config: str
    compare: list[str] = field(default_factory=list)
    paired: bool = False
    overrides: list[str] = field(default_factory=list)
    flags: dict = field(default_factory=dict)  # --device, --seed, --max-iters
    params: str | None = None  # "b1,b2"
    output: Path | None = None
    size: int = SIZE
    panels: bool = False


def landscape(options: LandscapeOptions) -> int:
    """Run, draw, and return the exit status: 0, or 130 when interrupted (what ran is drawn)."""
    from gdfit.pictures import landscape_view as view

    if options.output is not None:
        from gdfit.files.writing import check_writable

        check_writable(options.output)
        view.check_format(options.output)
        view._pyplot()  # the extra is there, before anything runs
        if options.output.suffix.lower() == ".gif":
            view.require_pillow()
    runs = variants(options)
    _check_paths(options, runs)
    names = _param_names(options.params)
    from rich.console import Console

    from gdfit.engine.interrupts import StopRequest
    from gdfit.sweeps.landscape import build

    console = Console()
    if options.output is None:
        width = max(30, min(console.width, 64))
        size = (width, max(11, min(25, width // 2)) | 1)  # odd: the slice's axis b = 0 is a row
    else:
        size = (options.size, options.size)
    with StopRequest() as stop:
        picture = build(runs, names, size, stop)
    if options.output is None:
        view.show_text(picture, console)
    else:
        from gdfit.files.locks import hold_all

        with hold_all([(options.output, "--output", False)]):  # one writer per picture
            view.draw(options.output, picture, options.panels)
        view.legend(picture, console)
        warn(view.describe_written(options.output, picture))
    if any(t.status == records.INTERRUPTED for t in picture.traces) or len(picture.traces) < len(runs):
        warn("interrupted: the picture shows the runs as far as they went")
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK)


def _param_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_paths(options: LandscapeOptions, runs: list) -> None:
    """The picture may not replace the config or a file it reads."""
    from gdfit.files.paths import config_inputs, reads, refuse_clashes, writes

    inputs = [use for run in runs
              for use in config_inputs(run.resolved.config.model_dump(mode="json"), run.resolved.base_dir)]
    refuse_clashes([*reads("CONFIG", options.config), *inputs, *writes("--output", options.output)])


def variants(options: LandscapeOptions) -> list:
    """The config itself, or one run per --compare value (every combination, or with --paired the
    lists taken element by element), each validated as a config of its own."""
    from gdfit.config import build_config, merge_config
    from gdfit.sweeps.grid import Run, expand, parse_grid

    raw = merge_config(options.config, options.overrides, options.flags)
    if not options.compare:
        if options.paired:
            raise ConfigError("--paired pairs the values of several --compare lists; give --compare", key="--paired")
        return [Run({}, build_config(raw.data, source=raw.source, base_dir=raw.base_dir, doc=raw.doc,
                                     origins=raw.origins))]
    try:
        grid = parse_grid(options.compare, None, raw.source)
    except ConfigError as err:
        if err.source == "--grid":
            err.source = "--compare"
        raise
    if options.paired:
        lengths = {key: len(values) for key, values in grid.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError("--paired needs lists of one length: " + ", ".join(f"{k} has {n}" for k, n in lengths.items()),
                              source="--compare")
        runs = [next(expand(raw.data, {k: [v] for k, v in zip(grid, combo)}, raw.source, raw.base_dir))
                for combo in zip(*grid.values())]
    else:
        count = 1
        for values in grid.values():
            count *= len(values)
        if count > MAX_VARIANTS:
            raise ConfigError(f"{count} runs in one picture; at most {MAX_VARIANTS}", source="--compare")
        runs = list(expand(raw.data, grid, raw.source, raw.base_dir))
    if len(runs) > MAX_VARIANTS:
        raise ConfigError(f"{len(runs)} runs in one picture; at most {MAX_VARIANTS}", source="--compare")
    return runs

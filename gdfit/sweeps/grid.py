"""`gdfit sweep`: a grid of runs built from one config, run as batches of one tensor each.

Grid values: `KEY=V1,V2,...` (each V read as YAML), `seed=0..15` (inclusive integer range),
`learning_rate=logspace(1e-3,10,32)` and `linspace(a,b,n)`. A `sweep:` mapping in the YAML does the
same (`sweep: {learning_rate: "logspace(1e-2,10,16)", seed: [0, 1, 2]}`).
"""

from __future__ import annotations

import difflib
import gc
import itertools
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from gdfit import records
from gdfit.config import Resolved, apply_override, build_config
from gdfit.config.yamlsource import load_yaml
from gdfit.errors import ConfigError
MAX_RUNS = 100_000
OPTIMIZER_TENSORS = {"momentum", "dampening", "eps", "alpha"}
PER_RUN = {"seed", "init"}  # each run of a batch has its own start
UNSWEEPABLE = {"sweep": "the grid cannot sweep itself"}
_RANGE = re.compile(r"^\s*(-?\d{1,30})\s*\.\.\s*(-?\d{1,30})\s*$")
_SPACE = re.compile(r"^\s*(logspace|linspace)\s*\((.*)\)\s*$")


def parse_values(key: str, text: Any, source: str) -> list[Any]:
    """The list of values for one grid key."""
    if isinstance(text, list):
        values = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        values = [text]
    elif isinstance(text, str) and _RANGE.match(text):
        low, high = (int(v) for v in _RANGE.match(text).groups())
        if high < low:
            raise ConfigError(f"range {text!r} is empty (the end is before the start)", source=source, key=key)
        if high - low + 1 > MAX_RUNS:  # refused before a value is built
            raise ConfigError(f"range {text.strip()!r} has {high - low + 1:,} values; at most {MAX_RUNS:,} runs",
                              source=source, key=key)
        values = list(range(low, high + 1))
    elif isinstance(text, str) and _SPACE.match(text):
        values = _spaced(key, *_SPACE.match(text).groups(), source=source)
    elif isinstance(text, str):
        values = [load_yaml(part, f"{source} {key}", require_mapping=False).data for part in _split_top(text)]
    else:
        raise ConfigError(f"expected a list of values, a..b or logspace(a,b,n), got {text!r}", source=source, key=key)
    if not values:
        raise ConfigError("no values", source=source, key=key)
    return values


def _spaced(key: str, kind: str, args: str, source: str) -> list[float]:
    parts = [p.strip() for p in args.split(",")]
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or count < 1:
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(f"{kind}(start, stop, count) needs two numbers and a count >= 1, got ({args})",
                          source=source, key=key) from None
    if count > MAX_RUNS:
        raise ConfigError(f"{kind} asks for {count} values; at most {MAX_RUNS:,} runs", source=source, key=key)
    if kind == "logspace":
        if start <= 0 or stop <= 0:
            raise ConfigError("logspace needs start and stop > 0", source=source, key=key)
        a, b = math.log10(start), math.log10(stop)
        return [10 ** (a + (b - a) * i / (count - 1)) if count > 1 else start for i in range(count)]
    return [start + (stop - start) * i / (count - 1) if count > 1 else start for i in range(count)]


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: `[0.9,0.99],[0.8,0.9]` -> two values."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_grid(items: list[str], section: dict[str, Any] | None, source: str,
               values: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """`--grid` items and the YAML `sweep:` section (or the Python API's `grid=` mapping, whose
    values are a list or the same text as --grid's), checked against the sweepable keys."""
    grid: dict[str, list[Any]] = {}
    for key, value in (section or {}).items():
        grid[key] = parse_values(key, value, f"{source} sweep")
    given: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=V1,V2,..., got {item!r}", source="--grid")
        if key.strip() in given:  # a second list would silently replace the first
            raise ConfigError(f"{key.strip()} is given twice; give all its values in one list "
                              f"({key.strip()}=V1,V2,...)", source="--grid", key=key.strip())
        given.add(key.strip())
        grid[key.strip()] = parse_values(key.strip(), text, "--grid")
    for key, value in (values or {}).items():
        grid[str(key)] = parse_values(str(key), value, "grid=")
    from gdfit.config import KEYS

    for key in grid:
        top = key.split(".")[0]
        if top in UNSWEEPABLE:
            raise ConfigError(f"cannot sweep {key!r}: {UNSWEEPABLE[top]}", source="--grid", key=key)
        if top not in KEYS:
            close = difflib.get_close_matches(top, KEYS, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {top!r}{guess}; any config key can be swept: {', '.join(KEYS[:-1])}",
                              source="--grid", key=key)
    if not grid:
        raise ConfigError("nothing to sweep: give --grid KEY=V1,V2,... or a `sweep:` section", source=source)
    total = math.prod(len(v) for v in grid.values())
    if total > MAX_RUNS:
        raise ConfigError(f"the grid has {total:,} runs; at most {MAX_RUNS:,}", source="--grid")
    return grid


@dataclass
class Run:
    """One combination: the values it sets and its own validated config."""

    params: dict[str, Any]
    resolved: Resolved


# Top-level keys that a validator reads together with another key (FitConfig's cross-field checks,
# and `_fit_defaults`, which picks tolerances by model and optimizer). Any other key validates the
# same whatever the rest of the config is.
COUPLED = {"target", "init", "model", "data", "sigma", "mask", "holdout", "optimizer", "sweep"}


def expand(base: dict[str, Any], grid: dict[str, list[Any]], source: str, base_dir) -> Iterator[Run]:
    """Every combination of the grid, each with its own validated config, in grid order.

    Validating 100,000 whole configs takes ~10 s, so each value of a key that nothing else reads
    (`_alone`) is validated once, in the first combination, and set into the configs of the
    combinations that take it; the other keys' combinations are validated whole. The configs are
    the same as validating each combination, and so is the error: that of the first bad one."""
    keys = list(grid)
    alone = _alone(keys)
    together = [k for k in keys if k not in alone]
    first = {k: 0 for k in keys}
    bad: list[tuple[int, ...]] = []  # index tuples of combinations known to fail

    def validated(indices: dict[str, int]) -> Run | None:
        try:
            return _combination(base, grid, indices, source, base_dir)
        except ConfigError:
            bad.append(tuple(indices[k] for k in keys))
            return None

    wholes = {combo: validated({**first, **dict(zip(together, combo))})
              for combo in itertools.product(*(range(len(grid[k])) for k in together))}
    fields = {}
    for key in alone:
        alone_values = [validated({**first, key: j}) for j in range(len(grid[key]))]
        fields[key] = [getattr(run.resolved.config, _top(key)) if run else None for run in alone_values]
    if bad:  # independent failures: the first bad combination in grid order is the earliest one found
        _combination(base, grid, dict(zip(keys, min(bad))), source, base_dir)  # raises its own error
    runs = []
    with collector_paused():
        for combo in itertools.product(*(range(len(grid[k])) for k in keys)):
            at = dict(zip(keys, combo))
            whole = wholes[tuple(at[k] for k in together)]
            config = whole.resolved.config.model_copy(update={_top(k): fields[k][at[k]] for k in alone})
            runs.append(Run({k: grid[k][at[k]] for k in keys}, whole.resolved.model_copy(update={"config": config})))
    yield from runs



@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a sweep makes its runs or their records: it would walk
    the growing heap of configs over and over (40% of `expand`'s time at 65,536 runs), and none of
    them is garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _alone(keys: list[str]) -> list[str]:
    """Grid keys whose values validate the same whatever the other keys are: not COUPLED, and the
    only grid key under their top-level key (`schedule.gamma` and `schedule` together are not)."""
    tops = [_top(k) for k in keys]
    return [k for k, top in zip(keys, tops) if top not in COUPLED and tops.count(top) == 1]


def _top(key: str) -> str:
    return key.split(".")[0]


def _combination(base: dict[str, Any], grid: dict[str, list[Any]], indices: dict[str, int], source: str,
                 base_dir) -> Run:
    """One combination (each key's value by its index), validated as a config of its own."""
    data = _deep_copy(base)
    params = {key: grid[key][j] for key, j in indices.items()}
    for key, value in params.items():
        apply_override(data, key.split("."), value)
    origins = {_top(k): f"--grid {k}={_short(v)}" for k, v in params.items()}
    return Run(params, build_config(data, source=source, base_dir=base_dir, origins=origins))


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def sort_results(results: list[records.RunRecord], key: str) -> list[records.RunRecord]:
    """`iters`: converged runs by updates, then the rest by final loss; `loss`; or a grid key."""
    def by_iters(r: records.RunRecord):
        return (r.status != "converged", r.iters if r.status == "converged" else 0, _finite_or_inf(r.loss))

    if key == "iters":
        return sorted(results, key=by_iters)
    if key == "loss":
        return sorted(results, key=lambda r: _finite_or_inf(r.loss))
    return sorted(results, key=lambda r: _grid_order(r.params.get(key)))


def _grid_order(value: Any) -> tuple:
    """Numbers by value (ints and floats together), then everything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def best_run(results: list[records.RunRecord], fits: bool = False) -> records.RunRecord | None:
    """The converged run with the fewest updates; else the lowest final loss. For model fits
    (`fits`), which converge by their tolerances at any loss, the converged run of lowest loss."""
    if not results:
        return None
    if fits:
        return min(results, key=lambda r: (r.status != records.CONVERGED, _finite_or_inf(r.loss), r.iters))
    return sort_results(results, "iters")[0]


def fits_parameters(config: dict[str, Any]) -> bool:
    """Whether a resolved config (as JSON) fits a model's parameters rather than x itself."""
    model = config.get("model") or {}
    return isinstance(model, dict) and model.get("name", "expr") != "identity"


def _finite_or_inf(value: float) -> float:
    return value if isinstance(value, float) and math.isfinite(value) else math.inf

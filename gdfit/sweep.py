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
from typing import Any, Callable, Iterator

from gdfit import records
from gdfit.config import Resolved, apply_override, build_config
from gdfit.errors import ConfigError
from gdfit.yamlsource import load_yaml

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


def parse_grid(items: list[str], section: dict[str, Any] | None, source: str) -> dict[str, list[Any]]:
    """`--grid` items and the YAML `sweep:` section, checked against the sweepable keys."""
    grid: dict[str, list[Any]] = {}
    for key, value in (section or {}).items():
        grid[key] = parse_values(key, value, f"{source} sweep")
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=V1,V2,..., got {item!r}", source="--grid")
        grid[key.strip()] = parse_values(key.strip(), text, "--grid")
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


@contextmanager
def runs_left_out() -> Iterator[None]:
    """The objects that exist now, a sweep's runs among them (~10 objects a run), left out of the
    cycle collector's walks until the sweep ends (`gc.freeze`): none of them is garbage, and each
    full collection walked them all, ~0.3 s at 100,000 runs, one every 200,000 or so new objects
    (records, say). Objects made later are collected as before. Inside another, it leaves the outer
    one in charge."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def execute(runs: list[Run], x_limit: int, should_stop, done: frozenset[int] = frozenset(),
            on_batch=None, backend: str = "local", address: str | None = None) -> Iterator[Any]:
    """Run every combination in as few batches as exactness and memory allow, each one `Loop`.

    Yields the SweepPlan first, then (done, total) progress tuples, and finally the list of
    RunRecords in grid order. Runs whose index is in `done` (a resumed journal) are skipped;
    `on_batch(indices, records)` is called as each batch ends.
    """
    with runs_left_out():
        yield from _execute(runs, x_limit, should_stop, done, on_batch, backend, address)


def _execute(runs: list[Run], x_limit: int, should_stop, done: frozenset[int], on_batch, backend: str,
             address: str | None) -> Iterator[Any]:
    from gdfit.advisor import advise
    from gdfit.devices import describe
    from gdfit.engine import prepare, working_copies
    from gdfit.tensors import MEMORY_HEADROOM, available_bytes, guard_memory

    first = prepare(runs[0].resolved)
    target, device, dtype = first.target, first.device, first.dtype

    def fit(run: Run) -> int:
        """Runs like this one that fit in memory at once (each group has its own target and dtype)."""
        problem = first if _shared(run.resolved.config) == _shared(runs[0].resolved.config) else prepare(run.resolved)
        numel, size = problem.target.numel(), problem.target.element_size()
        # per run: the x kept to hold it still replaces the target; a matrix model knows its own
        copies = problem.copies or working_copies(run.resolved.config)
        guard_memory(numel, problem.dtype, problem.device, copies, "one run of the sweep")
        return max(1, int(available_bytes(problem.device) * MEMORY_HEADROOM // max(numel * size * copies, 1)))

    batches, why = plan_batches(runs, fit)
    advice = advise(first.loss, first.x0, target, first.model, first.config.optimizer.name)
    yield records.SweepPlan(describe(device), str(dtype).removeprefix("torch."), list(target.shape), len(runs),
                            max(len(b) for b in batches), len(batches), advice, why)
    results: dict[int, records.RunRecord] = {}
    if backend == "dask":  # batches as tasks, results as they finish (gdfit.backends)
        from gdfit.backends import run_batches

        left = [b for b in ([i for i in batch if i not in done] for batch in batches) if b]
        for batch, item in run_batches(runs, left, x_limit, "dask", address, should_stop):
            results.update(zip(batch, item))
            if on_batch is not None:
                on_batch(batch, item)
            yield (len(done) + len(results), len(runs))
        yield [results[i] for i in sorted(results)]
        return
    for batch in ([i for i in batch if i not in done] for batch in batches):
        if not batch:
            continue
        group = [runs[i] for i in batch]
        problem = first if _shared(group[0].resolved.config) == _shared(runs[0].resolved.config) else None
        for item in _run_batch(problem or prepare(group[0].resolved), batch_runs(group), x_limit, should_stop):
            if isinstance(item, int):
                yield (len(done) + len(results) + item, len(runs))
            else:
                with collector_paused():  # a record for each run
                    item = records.run_records([run.params for run in group], item)
                results.update(zip(batch, item))
                if on_batch is not None:
                    on_batch(batch, item)
        yield (len(done) + len(results), len(runs))
        if should_stop():
            break
    yield [results[i] for i in sorted(results)]


def plan_batches(runs: list[Run], fit: int | Callable[[Run], int]) -> tuple[list[list[int]], str]:
    """Indices of runs that can share a batch, at most `fit` runs each (or `fit(first run of the
    group)`), in grid order; and why there is more than one. A batch shares everything but each run's start (`seed`, `init`) and the
    optimizer settings whose per-run tensors round exactly as a float does (`optimizers.batchable`):
    one target, loss, update rule, schedule, stop rules, device and dtype."""
    groups: dict[str, list[int]] = {}
    splitting: set[str] = set()
    texts: dict[tuple, str] = {}  # runs that differ only in their start share one text: made once

    def shared_of(run: Run) -> str:
        # the grid's value objects by identity: the runs of a grid share them, and one object is one value
        values = tuple(id(v) for k, v in run.params.items() if k not in PER_RUN)
        if values not in texts:
            texts[values] = _shared(run.resolved.config)
        return texts[values]

    for i, run in enumerate(runs):
        groups.setdefault(shared_of(run), []).append(i)
    if len(groups) > 1:  # the keys that, changed alone from the first run, change what is shared
        first, shared = runs[0].params, shared_of(runs[0])
        for run in runs[1:]:
            changed = [k for k in first if run.params[k] != first[k]]
            if len(changed) == 1 and shared_of(run) != shared:
                splitting.add(changed[0])
    limits = [fit(runs[group[0]]) if callable(fit) else fit for group in groups.values()]
    batches = [group[i : i + limit] for group, limit in zip(groups.values(), limits)
               for i in range(0, len(group), limit)]
    reasons = []
    if len(groups) > 1:
        reasons.append(f"runs with different {', '.join(sorted(splitting))} run in separate batches "
                       "(a batch shares one target, loss, update rule, schedule, stop rules and dtype, and each "
                       "run equals its single run bit for bit)")
    if len(batches) > len(groups):
        reasons.append(f"batches hold at most {min(limits)} runs to fit in memory")
    return batches, "; ".join(reasons)


def _shared(config) -> str:
    """What runs of one batch must have in common, as one comparable text."""
    from gdfit.optimizers import batchable

    free = batchable(config.optimizer, config.dtype)
    document = config.model_dump(mode="json")
    for key in PER_RUN | ({"learning_rate"} & free):
        document.pop(key, None)
    document["optimizer"] = {k: v for k, v in document["optimizer"].items() if k not in free}
    return repr(sorted(document.items()))


@dataclass
class BatchRuns:
    """All that a batch's Loop reads of its runs, beside the problem they share: the first run's
    resolved config (the rest of the batch's), and each run's learning rate, the optimizer settings
    that differ within the batch, and its start (seed and init) as an index into the batch's
    distinct starts (a learning rate x seed grid repeats each seed's start once per rate). A Dask
    task carries this in place of its runs: a few numbers a run, where each run's whole config
    costs ~30 us to pickle and ~4.5 us to rebuild on the worker."""

    first: Resolved
    learning_rates: list[float]
    settings: dict[str, list[float]]  # optimizer settings that differ within the batch, run by run
    starts: list[tuple[int, Any]]  # the distinct (seed, init) of the runs
    start_of: list[int]  # each run's start: its index in `starts`

    def __len__(self) -> int:
        return len(self.learning_rates)


def batch_runs(group: list[Run]) -> BatchRuns:
    """A batch's runs (runs that can share one, `plan_batches`) as its Loop reads them."""
    configs = [run.resolved.config for run in group]
    position: dict[tuple, int] = {}
    starts, start_of = [], []
    for config in configs:
        # the init by identity: `expand` gives the runs of one init value one object (a repr costs 7 us)
        key = (config.seed, id(config.init))
        if key not in position:
            position[key] = len(starts)
            starts.append((config.seed, config.init))
        start_of.append(position[key])
    return BatchRuns(group[0].resolved, [config.learning_rate for config in configs],
                     _varying_settings([config.optimizer for config in configs]), starts, start_of)


def run_batch(batch: BatchRuns, x_limit: int = records.X_LIMIT) -> dict[str, list]:
    """One batch, self-contained (its own problem), to the end: what a Dask task runs. Its
    results as columns (`records.run_records`)."""
    from gdfit.engine import prepare

    *_, done = _run_batch(prepare(batch.first), batch, x_limit, lambda: False)
    return done


def batch_loop(first, batch: BatchRuns, should_stop, sync_every: int | None = None, chunk_every: int | None = None):
    """The `Loop` of one batch (`batch_runs`) of the problem `first`; the host looks every
    `sync_every` updates (by default as often as a sweep does), and hands over a chunk every
    `chunk_every` (`Loop`'s default: one run on the CPU, 64 updates at a time)."""
    from gdfit.engine import make_stepper
    from gdfit.loop import Loop, sync_interval

    target, device = first.target, first.device
    starts = _starts(first, batch)
    # per-run settings broadcast against the parameters ([K, *shape]; all of one rank for every model)
    column = (-1,) + (1,) * (next(iter(first.model.parameters(starts).values())).dim() - 1)
    lr = _per_run(batch.learning_rates, device, column)
    settings = {name: _per_run(values, device, column) for name, values in batch.settings.items()}
    config = batch.first.config
    stepper = make_stepper(first, starts, settings, config, own=True)
    if sync_every is None:
        sync_every = sync_interval(device, len(batch), target.numel())
    return Loop(config, stepper, lr, sync_every=sync_every, should_stop=should_stop, chunk_every=chunk_every)


def _starts(first, batch: BatchRuns):
    """`engine.run_starts` of the batch, each distinct start built once: a start is its run's seed
    and init (the rest is the batch's)."""
    import torch

    from gdfit.engine import run_starts

    base = batch.first
    distinct = [base.model_copy(update={"config": base.config.model_copy(update={"seed": seed, "init": init})})
                for seed, init in batch.starts]
    starts = run_starts(first, distinct)
    return starts if len(distinct) == len(batch) else starts[torch.tensor(batch.start_of)]


def _run_batch(first, batch: BatchRuns, x_limit: int, should_stop) -> Iterator[Any]:
    """One batch as one Loop: yields runs done at each look, then the batch's results as columns
    (`records.run_records`)."""
    from gdfit.engine import reported_x

    loop = batch_loop(first, batch, should_stop)
    for chunk in loop.chunks():
        yield chunk.done
    outcome = loop.outcome
    with collector_paused():  # an x for each run
        shown = reported_x(first, outcome.params, x_limit)
        rmse = getattr(first.model, "holdout_rmse", None)
        holdout = [rmse({name: p[j].to(first.device) for name, p in outcome.params.items()})
                   if rmse is not None else None for j in range(len(batch))]
    yield {"status": outcome.statuses, "iters": outcome.iters, "loss": outcome.losses, "x": shown,
           "error": [None] * len(batch), "holdout_rmse": holdout}


def _per_run(values: list[float], device, column: tuple[int, ...]):
    """One value when every run shares it (a single run's exact arithmetic), else a [K, 1, ...] tensor."""
    import torch

    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, dtype=torch.float64, device=device).view(column)


def _varying_settings(specs: list) -> dict[str, list[float]]:
    """Optimizer settings that differ within the batch (each run's optimizer spec), run by run."""
    fields = type(specs[0]).model_fields  # one optimizer per batch; asking a model for a field it lacks is slow
    settings: dict[str, list[float]] = {}
    for name in OPTIMIZER_TENSORS & fields.keys():
        values = [getattr(spec, name) for spec in specs]  # only batchable ones differ here
        if len(set(values)) > 1:
            settings[name] = values
    betas = [spec.betas for spec in specs] if "betas" in fields else [None]
    if len(set(betas)) > 1:
        settings["beta1"] = [b[0] for b in betas]
        settings["beta2"] = [b[1] for b in betas]
    return settings


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

"""A sweep's runs in batches: which runs can share one batched tensor, what a batch carries to
where it runs, and the batch's run through one `Loop`."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from gdfit import records
from gdfit.config import Resolved
from gdfit.sweeps.grid import OPTIMIZER_TENSORS, PER_RUN, Run, collector_paused

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
    from gdfit.fitting.optimizers import batchable

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
    from gdfit.engine.descent import prepare

    *_, done = _run_batch(prepare(batch.first), batch, x_limit, lambda: False)
    return done


def batch_loop(first, batch: BatchRuns, should_stop, sync_every: int | None = None, chunk_every: int | None = None):
    """The `Loop` of one batch (`batch_runs`) of the problem `first`; the host looks every
    `sync_every` updates (by default as often as a sweep does), and hands over a chunk every
    `chunk_every` (`Loop`'s default: one run on the CPU, 64 updates at a time)."""
    from gdfit.engine.descent import make_stepper
    from gdfit.engine.loop import Loop, sync_interval

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

    from gdfit.engine.descent import run_starts

    base = batch.first
    distinct = [base.model_copy(update={"config": base.config.model_copy(update={"seed": seed, "init": init})})
                for seed, init in batch.starts]
    starts = run_starts(first, distinct)
    return starts if len(distinct) == len(batch) else starts[torch.tensor(batch.start_of)]


def _run_batch(first, batch: BatchRuns, x_limit: int, should_stop) -> Iterator[Any]:
    """One batch as one Loop: yields runs done at each look, then the batch's results as columns
    (`records.run_records`)."""
    from gdfit.engine.descent import reported_x

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



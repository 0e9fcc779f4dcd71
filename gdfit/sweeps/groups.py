"""Many fits at once: one independent curve fit per group of a table, run in batches.

A group's rows whose target is missing (NaN) are left out, as one fit leaves them out. Groups that
cannot be fitted get their own status and no fit: `no_data` (no observed point), `too_few_points`
(no more points than fitted parameters), `flat` (every observed response equal: nothing to
determine the curve's shape), `bad_data` (a missing or infinite data value, or a sigma that is
not positive, at an observed point). The others run as the runs of a sweep batch do: K groups of
one size in one `Loop` with lm (their data and targets [K, n], each group its own row), each
stopping on its own rules. Groups of one size share a batch, so no row is padded and each group's
arithmetic is its single fit's, bit for bit; memory decides how many share it. A fit that ends
`converged` but whose data leave a parameter undetermined (an infinite stderr) is `degenerate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator

import numpy as np

from gdfit import records
from gdfit.config import BuiltinCurve, ColumnSource, ExpressionModel, Resolved
from gdfit.errors import ConfigError
from gdfit.files.tables import GroupedTable

NO_DATA, TOO_FEW, FLAT, BAD_DATA, DEGENERATE = "no_data", "too_few_points", "flat", "bad_data", "degenerate"
UNFITTED = (NO_DATA, TOO_FEW, FLAT, BAD_DATA)
MAX_BATCH = 16384  # groups per batch: lm's algebra is one array computation over a batch, whose cost
# per update is mostly numpy's call overhead below a few thousand groups; a batch is also what a
# resume repeats and a Dask task carries at most
GROUP_BYTES = 1024  # a group's results and small arrays beside lm's rows of n


# ---------------------------------------------------------------- the start hook


def group_start(model: ExpressionModel, x: np.ndarray | None, y: np.ndarray, curve: str | None = None
                ) -> dict[str, float]:
    """Each group's start values, from its x (the first data column the expression uses) and its
    observed responses y: the config's `params` values, and for a built-in curve (`curve`) each
    start the config leaves out guessed from the group's own data (gdfit.curves.guesses)."""
    starts = {name: float(spec.value) for name, spec in model.params.items() if spec.value is not None}
    missing = [name for name in model.params if name not in starts]
    if missing:
        from gdfit.curves.guesses import guess

        keep = np.isfinite(x) & np.isfinite(y)
        with np.errstate(all="ignore"):
            guessed = guess(curve, x[keep], y[keep]) if keep.sum() >= 2 else {}
        # a group whose data give no start starts at NaN, and ends as diverged on its own
        starts.update((name, float(guessed.get(name, math.nan))) for name in missing)
    return starts


def builtin_as_expression(resolved: Resolved) -> Resolved:
    """A grouped config of a built-in curve as the expression model it stands for, every start the
    config leaves out left to `group_start` (it guesses them group by group)."""
    from gdfit.config import ParamSpec
    from gdfit.config.curves import CURVES, DEFAULT_BOUNDS, curve_expression

    spec = resolved.config.model
    params = {}
    for name in CURVES[spec.name][1]:
        fields = dict(DEFAULT_BOUNDS.get((spec.name, name), {}))
        if name in spec.params:
            fields.update(spec.params[name].model_dump(exclude_unset=True))
        params[name] = ParamSpec(**fields)
    model = ExpressionModel.model_construct(expr=curve_expression(spec.name, spec.x), params=params)
    return resolved.model_copy(update={"config": resolved.config.model_copy(update={"model": model})})


# ---------------------------------------------------------------- the job


@dataclass
class GroupSpec:
    """What every batch of a job shares: the config, and the names the expression reads."""

    resolved: Resolved
    order: tuple[str, ...]  # every parameter, in the config's order
    varying: tuple[str, ...]  # the fitted ones
    data_names: tuple[str, ...]  # the data columns the expression uses
    target: str
    sigma: str | None
    curve: str | None = None  # a built-in curve's name: its starts are guessed per group

    @property
    def config(self):
        return self.resolved.config


@dataclass
class GroupBatch:
    """K groups of one size: what a batch's Loop reads (and a Dask task carries)."""

    indices: np.ndarray  # the groups' positions in the table
    data: dict[str, np.ndarray]  # [K, n] each
    target: np.ndarray  # [K, n]
    sigma: np.ndarray | None
    starts: np.ndarray  # [K, p] the fitted parameters' starts

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class GroupResults:
    """Finished groups as columns (a million groups as a few arrays, not a million objects)."""

    indices: list[int]
    status: list[str]
    iters: list[int]
    loss: list[float]
    values: np.ndarray  # [K, len(order)], NaN where not fitted
    stderr: np.ndarray  # [K, len(order)], NaN where none
    fit: dict[str, np.ndarray]  # FIT_FIELDS, [K] each, NaN where undefined

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class GroupPlan:
    """The job: which groups are fitted in which batches, and the statuses of those that are not."""

    spec: GroupSpec
    table: GroupedTable
    batches: list[np.ndarray]  # group positions, one size each
    unfitted: GroupResults
    observed: np.ndarray = field(repr=False)  # rows with an observed target, sorted by group
    observed_bounds: np.ndarray = field(repr=False)

    @property
    def total(self) -> int:
        return len(self.table)


# the results table's columns besides the parameters' (render/groups_view.results_columns), and
# the fields of a `group` event's `fit`: names a parameter cannot take
RESULT_COLUMNS = ("group", "status", "iters", "loss", "n", "p", "dof", "rss", "residual_std", "chi2", "reduced_chi2",
                  "r2", "aic", "bic")


def make_spec(resolved: Resolved, columns: Collection[str]) -> GroupSpec:
    """What a grouped config fits, checked against the config and the table's `columns`."""
    from gdfit.config import LM
    from gdfit.expr.language import names_in, parse

    config = resolved.config
    curve = None
    if isinstance(config.model, BuiltinCurve):
        curve = config.model.name
        if any(p.expr is not None for p in config.model.params.values()):
            raise ConfigError("many fits (data.group) fit no derived parameters (expr:)", source=resolved.source,
                              key="model.params")
        resolved = builtin_as_expression(resolved)
        config = resolved.config
    if not isinstance(config.model, ExpressionModel):
        raise ConfigError("many fits (data.group) need an expression model: model: {expr: .., params: ..}",
                          source=resolved.source, key="model")
    if not isinstance(config.target, ColumnSource):
        raise ConfigError("many fits (data.group) need the target as a data column: target: {column: NAME}",
                          source=resolved.source, key="target")
    if not isinstance(config.optimizer, LM):
        raise ConfigError(f"many fits run with optimizer lm, not {config.optimizer.name}", source=resolved.source,
                          key="optimizer", hint="add optimizer: lm to the config")
    from gdfit.engine.descent import check_optimizer

    check_optimizer(resolved)  # the losses lm takes, as for one fit
    order = tuple(config.model.params)
    clash = [name for name in order if name in columns]
    if clash:
        raise ConfigError(f"parameter {clash[0]!r} has the name of a data column; rename the parameter",
                          source=resolved.source, key=f"model.params.{clash[0]}")
    taken = set(RESULT_COLUMNS) | {f"{name}_stderr" for name in order}
    clash = [name for name in order if name in taken]
    if clash:  # its column in the results table would be another's
        raise ConfigError(f"parameter {clash[0]!r} has the name of a results column (the results table has "
                          f"{', '.join(RESULT_COLUMNS)}, and NAME_stderr for each parameter); rename the parameter",
                          source=resolved.source, key=f"model.params.{clash[0]}")
    for key, name in (("target", config.target.column), ("sigma", config.sigma.column if config.sigma else None)):
        if name is not None and name not in columns:
            raise ConfigError(f"no column {name!r} in the data; it has {', '.join(columns)}", source=resolved.source,
                              key=f"{key}.column")
    tree = parse(config.model.expr, key="model.expr", names=set(order) | set(columns),
                 unknown=f"parameters are {', '.join(order)}; data columns are {', '.join(columns)}")
    used = names_in(tree)
    unused = [name for name in order if name not in used]
    if unused:
        raise ConfigError(f"parameter {unused[0]!r} is not used by the expression {config.model.expr!r}",
                          source=resolved.source, key=f"model.params.{unused[0]}")
    varying = tuple(name for name in order if config.model.params[name].vary)
    if not varying:
        raise ConfigError("every parameter has vary: false; nothing is left to fit", source=resolved.source,
                          key="model.params")
    data_names = tuple(name for name in columns if name in used)
    sigma = config.sigma.column if config.sigma is not None else None
    return GroupSpec(resolved, order, varying, data_names, config.target.column, sigma, curve)


def plan(spec: GroupSpec, table: GroupedTable, max_batch: int = MAX_BATCH) -> GroupPlan:
    """Each group's observed points, the statuses of those that cannot be fitted, and the batches
    of the others: groups of one size, as many as memory allows."""
    y = table.columns[spec.target]
    observed = ~np.isnan(y)
    starts = table.bounds[:-1]
    counts = np.add.reduceat(observed.astype(np.int64), starts) if len(y) else np.zeros(0, np.int64)
    bad = np.zeros(len(y), dtype=bool)
    for name in spec.data_names:
        bad |= ~np.isfinite(table.columns[name])
    if spec.sigma:
        s = table.columns[spec.sigma]
        bad |= ~(np.isfinite(s) & (s > 0))
    bad &= observed
    bad_groups = np.add.reduceat(bad.astype(np.int64), starts) > 0
    with np.errstate(invalid="ignore"):
        high = np.fmax.reduceat(y, starts)
        low = np.fmin.reduceat(y, starts)
    p = len(spec.varying)
    status = np.full(len(table), "", dtype=object)
    status[high == low] = FLAT
    status[counts <= p] = TOO_FEW
    status[bad_groups] = BAD_DATA
    status[counts == 0] = NO_DATA
    fitted = np.flatnonzero(status == "")
    batches = _batches(fitted, counts[fitted], spec, max_batch)
    skipped = np.flatnonzero(status != "")
    unfitted = _unfitted(spec, skipped, [status[i] for i in skipped], counts[skipped])
    rows = np.flatnonzero(observed)
    observed_bounds = np.zeros(len(table) + 1, dtype=np.int64)
    np.cumsum(counts, out=observed_bounds[1:])
    return GroupPlan(spec, table, batches, unfitted, rows, observed_bounds)


def job_device(config):
    """Where a job's groups are fitted: on the host in numpy, never loading torch, wherever a
    single fit of the same config would be (`computes_on_host`); else the config's device."""
    from gdfit.engine.descent import computes_on_host
    from gdfit.files.devices import HOST, resolve_device

    return HOST if computes_on_host(config) else resolve_device(config.device)


def _batches(groups: np.ndarray, sizes: np.ndarray, spec: GroupSpec, max_batch: int) -> list[np.ndarray]:
    from gdfit.files.tensors import MEMORY_HEADROOM, available_bytes

    device = job_device(spec.config)
    free = available_bytes(device) * MEMORY_HEADROOM / local_workers(spec.config)  # batches run at once
    p = len(spec.varying)
    batches = []
    for size in np.unique(sizes):
        members = groups[sizes == size]
        # lm's arrays of a group: its Jacobian and a dozen rows of n
        per_group = 8 * int(size) * (p + 12) * 4 + GROUP_BYTES
        limit = max(1, min(max_batch, int(free // per_group)))
        batches.extend(members[i : i + limit] for i in range(0, len(members), limit))
    return batches


def _unfitted(spec: GroupSpec, indices: np.ndarray, status: list[str], counts: np.ndarray) -> GroupResults:
    K, width = len(indices), len(spec.order)
    p = len(spec.varying)
    fits = _no_fit(K)
    dof = (counts - p).astype(np.float64)
    fits["n"], fits["p"], fits["dof"] = counts.astype(np.float64), np.full(K, float(p)), np.where(dof < 0, math.nan, dof)
    return GroupResults(indices.tolist(), status, [0] * K, [math.nan] * K, np.full((K, width), math.nan),
                        np.full((K, width), math.nan), fits)


def _held(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """float64 values as a fit in `dtype` holds them (rounded to it), in float64."""
    if dtype == "float64":
        return lambda values: values
    if dtype in ("float32", "float16"):
        return lambda values: values.astype(dtype).astype(np.float64)
    import torch

    kind = getattr(torch, dtype)
    return lambda values: torch.from_numpy(values).to(kind).to(torch.float64).numpy()


def unreached(plan_: GroupPlan, done: Collection[int]) -> GroupResults:
    """The groups a stopped job never fitted (not in `done`): status `interrupted`, no values."""
    left = np.setdiff1d(np.arange(plan_.total), np.fromiter(done, dtype=np.int64, count=len(done)))
    counts = np.diff(plan_.observed_bounds)[left]
    return _unfitted(plan_.spec, left, [records.INTERRUPTED] * len(left), counts)


def _no_fit(K: int) -> dict[str, np.ndarray]:
    from gdfit.curves.groupstats import FIT_FIELDS

    return {name: np.full(K, math.nan) for name in FIT_FIELDS}


def batch_of(plan_: GroupPlan, indices: np.ndarray) -> GroupBatch:
    """The groups' observed rows as [K, n] arrays, and their starts (`group_start`)."""
    spec, table = plan_.spec, plan_.table
    first = plan_.observed_bounds[indices]
    n = int(plan_.observed_bounds[indices[0] + 1] - first[0])
    rows = plan_.observed[first[:, None] + np.arange(n)]
    data = {name: table.columns[name][rows] for name in spec.data_names}
    target = table.columns[spec.target][rows]
    sigma = table.columns[spec.sigma][rows] if spec.sigma else None
    model = spec.config.model
    x = data[spec.data_names[0]] if spec.data_names else None
    params = [model.params[name] for name in spec.varying]
    if all(param.value is not None for param in params):  # the config's starts: every group's the same
        starts = np.tile([float(param.value) for param in params], (len(indices), 1))
    else:  # guessed from each group's data as the fit holds them (a single fit guesses from those)
        held = _held(spec.config.dtype)
        x_held, target_held = (held(x) if x is not None else None), held(target)
        starts = np.empty((len(indices), len(spec.varying)))
        for i in range(len(indices)):
            guess = group_start(model, x_held[i] if x is not None else None, target_held[i], spec.curve)
            starts[i] = [guess[name] for name in spec.varying]
    low = [-math.inf if param.min is None else param.min for param in params]
    high = [math.inf if param.max is None else param.max for param in params]
    return GroupBatch(np.asarray(indices), data, target, sigma, np.clip(starts, low, high))


# ---------------------------------------------------------------- one batch


def batch_loop(spec: GroupSpec, batch: GroupBatch, should_stop: Callable[[], bool] = lambda: False):
    """The batch's model, target and `Loop` (lm over K groups, each its own data row and each at
    its own pace: a group's trials do not wait for the others', lm.advance)."""
    from gdfit.engine.loop import Loop, sync_interval
    from gdfit.expr.language import parse
    from gdfit.files.devices import HOST, resolve_dtype
    from gdfit.curves.curvefit import parameter_parts
    from gdfit.fitting.lm import LevenbergMarquardt
    from gdfit.fitting.losses import make_loss
    from gdfit.fitting.models import ExpressionFit

    resolved, config = spec.resolved, spec.config
    device = job_device(config)
    if device is HOST:  # numpy arrays throughout
        dtype = np.dtype(config.dtype)
        tensor = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    else:
        import torch

        dtype = resolve_dtype(config.dtype, device)
        tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)  # noqa: E731
    tree = parse(config.model.expr, key="model.expr", names=set(spec.order) | set(spec.data_names))
    varying, fixed, low, high, _ = parameter_parts(resolved.config.model, resolved, dtype, device)
    K, n = batch.target.shape
    sigma = tensor(batch.sigma) if batch.sigma is not None else None
    model = ExpressionFit(tree, {name: tensor(column) for name, column in batch.data.items()}, spec.order, varying,
                          fixed, low, high, sigma, n)
    y = tensor(batch.target)
    target = y / sigma if sigma is not None else y
    params = model.parameters(tensor(batch.starts))
    stepper = LevenbergMarquardt(model, make_loss(config.loss, n, for_lm=True), target, params,
                                 config.optimizer.damping)
    stepper.own_pace = True
    loop = Loop(config, stepper, config.learning_rate, sync_every=sync_interval(device, K, n),
                should_stop=should_stop)
    return model, target, loop


def run_group_batch(spec: GroupSpec, batch: GroupBatch, should_stop: Callable[[], bool] = lambda: False
                    ) -> Iterator[int | GroupResults]:
    """One batch to the end: yields its groups done at each look, then its results. A group that
    stopped costs no more work: lm works on the moving groups' rows only."""
    from gdfit.curves.groupstats import group_statistics

    model, target, loop = batch_loop(spec, batch, should_stop)
    for chunk in loop.chunks():
        yield chunk.done
    outcome = loop.outcome
    status, theta = list(outcome.statuses), outcome.params["theta"]
    K = len(batch)
    stderr, fits = group_statistics(model, theta, target, spec.config.absolute_sigma, loop.stepper.robust)
    where = {name: i for i, name in enumerate(spec.order)}
    values = np.full((K, len(spec.order)), math.nan)
    errors = np.full((K, len(spec.order)), math.nan)
    columns = [where[name] for name in spec.varying]
    values[:, columns] = _float64(theta)
    for name, value in model.fixed.items():
        values[:, where[name]] = value
    for i in range(K):
        if status[i] != records.CONVERGED:
            continue  # a fit that did not converge reports no stderr as if it had
        if np.isinf(stderr[i]).any():
            status[i] = DEGENERATE
        else:
            errors[i, columns] = stderr[i]
    yield GroupResults(batch.indices.tolist(), status, outcome.iters, outcome.losses, values, errors, fits)


def _float64(values) -> np.ndarray:
    """Parameters (a numpy array, or a tensor on any device) as a float64 numpy array."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return values.detach().to("cpu").double().numpy()


def run_batch_whole(spec: GroupSpec, batch: GroupBatch) -> GroupResults:
    """One batch, self-contained: what a Dask task runs."""
    *_, results = run_group_batch(spec, batch)
    return results


# ---------------------------------------------------------------- the whole job


def execute(plan_: GroupPlan, should_stop: Callable[[], bool], done: frozenset[int] = frozenset(),
            backend: str = "local", address: str | None = None) -> Iterator[int | GroupResults]:
    """Every group not in `done`: yields GroupResults as groups finish (the unfitted ones first),
    and between them the number of groups finished so far in the batch that runs (local)."""
    unfitted = plan_.unfitted
    keep = [i for i, g in enumerate(unfitted.indices) if g not in done]
    if keep:
        yield _subset(unfitted, keep)
    batches = [b for b in (np.array([g for g in batch if g not in done], dtype=np.int64) if done else batch
                           for batch in plan_.batches) if len(b)]
    if backend == "dask":
        yield from _execute_dask(plan_, batches, address, should_stop)
        return
    workers = min(local_workers(plan_.spec.config), len(batches))
    if workers > 1:
        yield from _execute_threads(plan_, batches, should_stop, workers)
        return
    for indices in batches:
        if should_stop():
            return
        for item in run_group_batch(plan_.spec, batch_of(plan_, indices), should_stop):
            yield item
        if should_stop():
            return


LOOK_S = 0.2  # how often the threads' progress is reported while their batches run


def local_workers(config) -> int:
    """Batches run at once in this process: one per usable CPU for a job computed in numpy, whose
    arrays' operations release Python's lock (measured on 2 cores: 100,000 groups in 7.0 s
    instead of 10.6); one for a job on tensors, whose operations take torch's own threads."""
    from gdfit.engine.threads import usable_cpus
    from gdfit.files.devices import HOST

    return usable_cpus() if job_device(config) is HOST else 1


def _execute_threads(plan_: GroupPlan, batches: list[np.ndarray], should_stop, workers: int
                     ) -> Iterator[int | GroupResults]:
    """The batches on `workers` threads, their results yielded in the batches' order (the same
    stream and journal as one thread gives), and between them the groups done in the batches not
    yet yielded. Ctrl-C: each running batch stops at its next look, and no new one starts."""
    from concurrent.futures import ThreadPoolExecutor, wait

    progress = [0] * len(batches)  # each batch's groups done so far, written by its thread

    def run(i: int, indices: np.ndarray) -> GroupResults | None:
        if should_stop():
            return None
        for item in run_group_batch(plan_.spec, batch_of(plan_, indices), should_stop):
            if isinstance(item, int):
                progress[i] = item
            else:
                progress[i] = len(indices)
                return item
        return None

    pool = ThreadPoolExecutor(workers, thread_name_prefix="gdfit-batch")
    try:
        futures = [pool.submit(run, i, indices) for i, indices in enumerate(batches)]
        for i, future in enumerate(futures):
            while not wait([future], timeout=LOOK_S).done:
                yield sum(progress[i:])
            progress[i] = 0  # its groups count among the results from here on
            result = future.result()
            if result is not None:
                yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _execute_dask(plan_: GroupPlan, batches: list[np.ndarray], address: str | None, should_stop) -> Iterator[Any]:
    """The batches as Dask tasks (the sweep backend's `run_tasks`), cut so that every worker gets
    several: a task ends with its slowest group."""
    from gdfit.sweeps.backends import TASKS_PER_WORKER, require_dask, run_tasks

    require_dask()
    spec = plan_.spec
    total = sum(len(b) for b in batches)

    def tasks_for(workers: int) -> list[np.ndarray]:
        size = max(1, math.ceil(total / (workers * TASKS_PER_WORKER)))
        return [b[i : i + size] for b in batches for i in range(0, len(b), size)]

    for indices, result in run_tasks(run_batch_whole, tasks_for, lambda indices: (spec, batch_of(plan_, indices)),
                                     address, should_stop, wants_gpu=lambda task: spec.config.device != "cpu"):
        yield _errors(spec, indices) if isinstance(result, BaseException) else result


def _errors(spec: GroupSpec, indices: np.ndarray) -> GroupResults:
    """The results of groups whose task failed (a worker lost too often): status `error`."""
    K, width = len(indices), len(spec.order)
    return GroupResults(indices.tolist(), [records.ERROR] * K, [0] * K, [math.nan] * K,
                        np.full((K, width), math.nan), np.full((K, width), math.nan), _no_fit(K))


def _subset(results: GroupResults, keep: list[int]) -> GroupResults:
    return GroupResults([results.indices[i] for i in keep], [results.status[i] for i in keep],
                        [results.iters[i] for i in keep], [results.loss[i] for i in keep], results.values[keep],
                        results.stderr[keep], {name: column[keep] for name, column in results.fit.items()})


def load_job(resolved: Resolved, max_batch: int = MAX_BATCH) -> GroupPlan:
    """Read a grouped config's table and plan its fits (every input error before any work)."""
    from gdfit.files.devices import HOST
    from gdfit.files.tables import read_grouped
    from gdfit.files.tensors import guard_memory

    config = resolved.config
    path = resolved.resolve_path(config.data.file)
    # the rows are held a few times over while they are read and sorted (in float64, on the host)
    table = read_grouped(path, config.data.group, lambda n: guard_memory(n, np.dtype(np.float64), HOST, 4, "data file"))
    spec = make_spec(resolved, table.names)
    # the columns the fits read hold numbers; others (a well or plate ID) may hold anything
    table.require_numbers([*spec.data_names, spec.target, *([spec.sigma] if spec.sigma else [])])
    return plan(spec, table, max_batch)


def merge(parts: list[GroupResults]) -> GroupResults:
    """Results from several batches (and a journal) as one, in the table's order."""
    if not parts:
        return GroupResults([], [], [], [], np.zeros((0, 0)), np.zeros((0, 0)), {})
    indices = np.array([g for part in parts for g in part.indices], dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    pick = lambda values: [values[i] for i in order]  # noqa: E731
    return GroupResults(indices[order].tolist(), pick([s for part in parts for s in part.status]),
                        pick([k for part in parts for k in part.iters]), pick([v for part in parts for v in part.loss]),
                        np.concatenate([part.values for part in parts])[order],
                        np.concatenate([part.stderr for part in parts])[order],
                        {name: np.concatenate([part.fit[name] for part in parts])[order] for name in parts[0].fit})


# ---------------------------------------------------------------- the journal's lines


def _exact(value: float) -> float | str:
    """A float as JSON keeps it exactly: a number, or its text where JSON has none (inf, nan)."""
    return value if math.isfinite(value) else repr(value)


def journal_lines(results: GroupResults, label_of: Callable[[int], Any]) -> str:
    """One line per finished group (an interrupted one is left to the resume): its position in the
    table, its value, and every figure exactly."""
    from gdfit.render.jsonl import dumps

    lines = []
    for i, g in enumerate(results.indices):
        if results.status[i] == records.INTERRUPTED:
            continue
        lines.append(dumps({"index": g, "group": label_of(g), "status": results.status[i],
                            "iters": int(results.iters[i]), "loss": _exact(float(results.loss[i])),
                            "values": [_exact(v) for v in results.values[i].tolist()],
                            "stderr": [_exact(v) for v in results.stderr[i].tolist()],
                            "fit": {name: _exact(float(column[i])) for name, column in results.fit.items()}}) + "\n")
    return "".join(lines)


def from_journal(lines: dict[int, dict[str, Any]]) -> GroupResults | None:
    """The groups a journal holds (its lines by table position), as results."""
    if not lines:
        return None
    events = [lines[g] for g in sorted(lines)]
    number = lambda v: float(v)  # noqa: E731  (text for inf and nan)
    return GroupResults(sorted(lines), [e["status"] for e in events], [int(e["iters"]) for e in events],
                        [number(e["loss"]) for e in events],
                        np.array([[number(v) for v in e["values"]] for e in events], dtype=np.float64),
                        np.array([[number(v) for v in e["stderr"]] for e in events], dtype=np.float64),
                        {name: np.array([number(e["fit"][name]) for e in events]) for name in events[0]["fit"]})

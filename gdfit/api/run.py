"""`fit` and `steps`: one run of a config, as `gdfit run` makes it, without printing.

`descending` is the one place a run is started: `gdfit run` calls it too, so the API's results and
the CLI's output come from the same descent.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from gdfit import records
from gdfit.api.result import Result
from gdfit.api.source import ConfigLike, SetLike, resolve
from gdfit.config import Resolved

if TYPE_CHECKING:  # the engine imports torch: loaded when a run starts, not with the API
    from gdfit.engine.checkpoint import Checkpoint, Checkpointer
    from gdfit.engine.descent import Descent


@contextmanager
def descending(
    resolved: Resolved,
    *,
    report: Callable[[int], bool] | None = None,
    report_last: bool = True,
    x_limit: int = records.X_LIMIT,
    should_stop: Callable[[], bool] = lambda: False,
    resume: Checkpoint | None = None,
    checkpointer: Checkpointer | None = None,
    keep_history: bool = True,
    torch_outputs: bool = False,
    threads: int | None = None,
) -> Iterator[Descent]:
    """The prepared problem (device, dtype, tensors) and its `Descent`, ready to iterate inside the
    block, under the torch threads chosen for it (engine/threads.py; `threads` overrides). A curve
    fit by lm on the CPU computes in numpy and never loads torch, unless `torch_outputs` (a
    checkpoint, TensorBoard, a .pt file) needs it."""
    from gdfit.engine.descent import Descent, computes_on_host, prepare
    from gdfit.engine.interrupts import pause_point

    pause_point("prepare")  # the engine is imported (torch too, where the run needs it)
    problem = prepare(resolved, on_host=computes_on_host(resolved.config) and not torch_outputs)
    choice = None
    if not isinstance(problem.target, np.ndarray):  # a run computed in numpy has no torch threads
        from gdfit.engine import threads as torch_threads

        if resume is not None and resume.threads is not None:  # the same arithmetic as before the stop
            choice = torch_threads.resumed(resume.threads, threads)
        else:
            choice = torch_threads.choose(problem.model, threads)
    with _using(choice):
        yield Descent(problem, report=report, report_last=report_last, x_limit=x_limit, should_stop=should_stop,
                      resume=resume, checkpointer=checkpointer, keep_history=keep_history,
                      threads=choice.describe() if choice is not None else None)


def _using(choice):
    """The block under the chosen threads (nothing to set for a run computed in numpy)."""
    if choice is None:
        return nullcontext()
    from gdfit.engine.threads import using

    return using(choice)


def fit(config: ConfigLike, *, set: SetLike = None, **overrides: Any) -> Result:
    """Run a config to its end and return the result.

    Args:
        config: a config file's path, its YAML text, or the mapping a YAML file would hold
            (relative file paths start at the file's folder, or at the working directory).
        set: overrides by dotted key, as `--set` takes them: `{"optimizer.damping": 1e-2}`, or
            `["optimizer.damping=1e-2"]` (values read as YAML).
        **overrides: top-level config keys, as `--max-iters` and the other flags: `max_iters=500`.

    Returns:
        The run's `Result`; `result.to_dict()` is what `gdfit run --output` writes.

    Raises:
        ConfigError: the config is unreadable or invalid (the message is the CLI's).
        GdfitError: any other bad input (a data file, a device); nothing is printed.
    """
    from gdfit.engine.descent import every_n

    resolved = resolve(config, set, overrides)
    with resolved.locating(), descending(resolved, report=every_n(0), report_last=False) as descent:
        for _ in descent.steps():
            pass
    return Result(descent)


def steps(config: ConfigLike, *, set: SetLike = None, every: int = 1, **overrides: Any
          ) -> Iterator[records.StepRecord]:
    """The run's updates as it makes them: a `StepRecord` (`iter`, `loss`, `lr`, `grad_norm`, `x`,
    a curve fit's `params`) for every `every`-th update and the last, as `--json` streams them.
    Arguments as for `fit`."""
    from gdfit.engine.descent import every_n

    resolved = resolve(config, set, overrides)
    with resolved.locating(), descending(resolved, report=every_n(every), keep_history=False) as descent:
        yield from descent.steps()

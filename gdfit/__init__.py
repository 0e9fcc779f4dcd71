"""gdfit: curve fits, matrix models, sweeps and many fits, by gradient descent and
Levenberg-Marquardt, on CPU or CUDA, from YAML configs, the command line or Python.

Fitting
    fit(config, *, set=None, **overrides) -> Result
        Run a config to its end: parameters with standard errors, covariance, statistics,
        the loss history, `predict(**data)`, `report()` and `to_dict()` (the CLI's --output).
    steps(config, *, set=None, every=1, **overrides) -> Iterator[StepRecord]
        The run's updates as it makes them, as `gdfit run --json` streams them.

Many runs
    sweep(config, grid=None, *, set=None, backend="local", **overrides) -> SweepResult
        Every combination of a grid of config keys, in batched tensors (locally or on Dask).
    fit_groups(config, *, set=None, backend="local", **overrides) -> GroupsResult
        One independent fit per group of a table with a group column (data: {file, group}).

Results and records
    Result, Param, SweepResult, GroupsResult, StepRecord, RunRecord

Errors (each carries the CLI's message and exit code)
    GdfitError, ConfigError, InputFileError, DeviceError, ResourceError, ExpressionError,
    OutputError, MissingExtraError, UsageError

`config` is a file's path, its YAML text, or the mapping a YAML file would hold. Nothing here
prints or exits. Everything else (the subpackages `cli`, `sweeps`, `render`, `engine`, `fitting`,
`expr`, `files`, `config`) is internal and may change.

`import gdfit` is light: the names above are loaded when first used (torch with the first fit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    # fitting
    "fit", "steps",
    # many runs: a grid of one config's keys; independent fits of many groups
    "sweep", "fit_groups",
    # results and records
    "Result", "Param", "SweepResult", "GroupsResult", "StepRecord", "RunRecord",
    # errors
    "GdfitError", "ConfigError", "InputFileError", "DeviceError", "ResourceError", "ExpressionError",
    "OutputError", "MissingExtraError", "UsageError",
    "__version__",
]

_HOMES = {
    "fit": "gdfit.api.run", "steps": "gdfit.api.run", "sweep": "gdfit.api.sweep",
    "fit_groups": "gdfit.api.groups", "GroupsResult": "gdfit.api.groups",
    "Result": "gdfit.api.result", "Param": "gdfit.api.result", "SweepResult": "gdfit.api.result",
    "StepRecord": "gdfit.records", "RunRecord": "gdfit.records",
    **{name: "gdfit.errors" for name in (
        "GdfitError", "ConfigError", "InputFileError", "DeviceError", "ResourceError", "ExpressionError",
        "OutputError", "MissingExtraError", "UsageError")},
}

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from gdfit.api.result import Param, Result, SweepResult
    from gdfit.api.run import fit, steps
    from gdfit.api.sweep import sweep
    from gdfit.api.groups import GroupsResult, fit_groups
    from gdfit.errors import (ConfigError, DeviceError, ExpressionError, GdfitError, InputFileError,
                              MissingExtraError, OutputError, ResourceError, UsageError)
    from gdfit.records import RunRecord, StepRecord


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562), so `import gdfit` and `gdfit --help` stay fast."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gdfit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

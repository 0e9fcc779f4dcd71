"""The Python API: `fit`, `steps` and `sweep` over the same config, engine and records as the CLI.

Nothing here prints or exits: errors are raised as `gdfit.errors` classes carrying the message the
CLI would print and its exit code.
"""

from gdfit.api.groups import GroupsResult, fit_groups
from gdfit.api.result import Param, Result, SweepResult
from gdfit.api.run import descending, fit, steps
from gdfit.api.source import ConfigLike, SetLike, resolve
from gdfit.api.sweep import sweep

__all__ = ["ConfigLike", "GroupsResult", "Param", "Result", "SetLike", "SweepResult", "descending", "fit", "fit_groups", "resolve",
           "steps", "sweep"]

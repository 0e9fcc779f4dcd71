"""A built-in curve (`model: {name: gaussian, x: COLUMN}`) as the expression model it stands for,
with every start the config leaves out guessed from the data (gdfit.curves.guesses)."""

from __future__ import annotations

import numpy as np
from gdfit.lazy import torch

from gdfit.config import BuiltinCurve, ExpressionModel, ParamSpec, Resolved
from gdfit.config.curves import CURVES, curve_expression, parameter_fields
from gdfit.errors import ConfigError, InputFileError
from gdfit.curves.guesses import guess as guess_starts


def as_expression(spec: BuiltinCurve, columns: dict[str, torch.Tensor], y: torch.Tensor, resolved: Resolved
                  ) -> tuple[ExpressionModel, dict[str, float]]:
    """The expression model of `spec` and the starts guessed for it ({} when the config gives them
    all). The guess sees the observed points (a NaN target is missing)."""
    if spec.x not in columns:
        raise ConfigError(f"no column {spec.x!r} in the data; it has {', '.join(columns) or '(none)'}",
                          source=resolved.source, key="model.x")
    _check_domain(spec, columns[spec.x], y, resolved)
    names = CURVES[spec.name][1]
    params: dict[str, ParamSpec] = {}
    missing = [n for n in names if n not in spec.params or spec.params[n].value is None]
    guessed: dict[str, float] = {}
    if missing:
        x = columns[spec.x].detach().cpu().to(torch.float64).numpy()
        target = y.detach().cpu().to(torch.float64).numpy()
        keep = np.isfinite(target) & np.isfinite(x)
        if keep.sum() < 2:
            raise InputFileError(f"model {spec.name} needs at least 2 observed points to guess its starts",
                                 source=resolved.source, key="model.params")
        with np.errstate(all="ignore"):
            guessed = {n: v for n, v in guess_starts(spec.name, x[keep], target[keep]).items() if n in missing}
        bad = [n for n, v in guessed.items() if not np.isfinite(v)]
        if bad:
            raise InputFileError(f"the data give no start for {bad[0]!r} of model {spec.name}; set "
                                 f"model.params.{bad[0]}", source=resolved.source, key=f"model.params.{bad[0]}")
    for name in names:
        given = spec.params.get(name)
        fields = parameter_fields(spec.name, name, None if given is None else given.model_dump(exclude_unset=True))
        if name in guessed:
            value = guessed[name]
            # a missing side is unbounded, so the clamp moves the guess only into [min, max]
            low, high = fields.get("min"), fields.get("max")
            fields["value"] = min(max(value, -np.inf if low is None else low), np.inf if high is None else high)
            guessed[name] = fields["value"]  # the start the fit uses
        params[name] = ParamSpec(**fields)
    params.update((name, p) for name, p in spec.params.items() if name not in names)  # derived ones
    return ExpressionModel(expr=curve_expression(spec.name, spec.x), params=params), guessed


# curves defined for x >= 0 only, and why: at x < 0 they are NaN whatever the parameters
NON_NEGATIVE_X = {"logistic4": "(ec50 / x) ** hill", "powerlaw": "x ** exponent"}


def _check_domain(spec: BuiltinCurve, x: torch.Tensor, y: torch.Tensor, resolved: Resolved) -> None:
    """A curve of x >= 0 given a negative x at an observed point (a target that is not NaN) is bad
    data, not a bad start: say which row."""
    if spec.name not in NON_NEGATIVE_X:
        return
    values = x.detach().cpu().to(torch.float64).numpy()
    bad = np.flatnonzero((values < 0) & ~np.isnan(y.detach().cpu().to(torch.float64).numpy()))
    if len(bad):
        raise InputFileError(f"model {spec.name} needs x >= 0 ({NON_NEGATIVE_X[spec.name]} is NaN below 0); column "
                             f"{spec.x!r} is {values[bad[0]]:g} at data row {int(bad[0]) + 1}",
                             source=resolved.source, key="model.x")

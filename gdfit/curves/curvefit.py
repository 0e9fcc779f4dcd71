"""Curve fits: an expression model built from the config and its data, and the fit's statistics.

The statistics follow NIST StRD and `scipy.optimize.curve_fit`: with J the Jacobian of the
weighted residuals at the fitted parameters, the covariance is s^2 (J^T J)^-1 with
s^2 = RSS / (n - p), or (J^T J)^-1 itself with `absolute_sigma`. The inverse is taken through the
SVD of J, never by forming J^T J, so ill-conditioned problems keep their digits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gdfit.lazy import torch

from gdfit.config import BuiltinCurve, ColumnSource, ExpressionModel, Resolved
from gdfit.files.data import read_columns
from gdfit.errors import ConfigError, ExpressionError, InputFileError
from gdfit.expr.language import functions_in, names_in, parse
from gdfit.curves import derived as derived_params
from gdfit.curves.builtin import as_expression
from gdfit.fitting.models import ExpressionFit
from gdfit.files.tensors import build_target, guard_memory
from gdfit.words import plural


def build_expression_fit(resolved: Resolved, dtype: torch.dtype, device: torch.device, every_used: bool = True
                         ) -> tuple[ExpressionFit, torch.Tensor, torch.Tensor]:
    """The model, the (weighted) target over the observed points, and the fitted parameters' start.
    `every_used`: each parameter must appear in the expression (a global fit's dataset uses some).
    Tensors on `device`, or numpy arrays where `dtype` is numpy's (a fit computed on the host)."""
    config = resolved.config
    spec: ExpressionModel | BuiltinCurve = config.model
    xp = np if isinstance(dtype, np.dtype) else torch  # the same operations, in numpy or in torch
    columns = _columns(resolved, dtype, device)
    guess: dict[str, float] = {}
    if isinstance(spec, BuiltinCurve):
        spec, guess = as_expression(spec, columns, _target(resolved, columns, dtype, device), resolved)
    params = tuple(spec.params)
    clash = [name for name in params if name in columns]
    if clash:
        raise ConfigError(f"parameter {clash[0]!r} has the name of a data column; rename the parameter",
                          source=resolved.source, key=f"model.params.{clash[0]}")
    try:
        tree = parse(spec.expr, key="model.expr", names=set(params) | set(columns),
                     unknown=f"parameters are {', '.join(params)}; data columns are {', '.join(columns) or '(none)'}")
        derived = derived_params.resolve({n: p.expr for n, p in spec.params.items() if p.expr is not None}, params,
                                         resolved.source)
    except ExpressionError as err:  # the language knows no files: say which config it is in
        err.source = err.source or resolved.source
        raise
    tree = derived_params.substitute(tree, derived)
    used = names_in(tree) | {name for t in derived.values() for name in names_in(t)} | set(derived)
    unused = [name for name in params if name not in used]
    if unused and every_used:
        raise ConfigError(f"parameter {unused[0]!r} is not used by the expression {spec.expr!r}",
                          source=resolved.source, key=f"model.params.{unused[0]}")
    y = _target(resolved, columns, dtype, device)
    observed = ~xp.isnan(y)
    if not bool(observed.any()):
        raise InputFileError("every target value is missing (NaN)", source=resolved.source, key="target")
    points = int(observed.sum())
    data = {name: column[observed] for name, column in columns.items() if name in used}
    sigma = None
    if config.sigma is not None:
        sigma = _column(columns, config.sigma.column, "sigma", resolved)[observed]
        if not bool((xp.isfinite(sigma) & (sigma > 0)).all()):
            raise InputFileError(f"column {config.sigma.column!r} must hold positive finite standard deviations",
                                 source=resolved.source, key="sigma")
    for name, column in data.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(column.tolist())))
        if len(bad):
            rows = np.flatnonzero(np.asarray(observed.tolist()))
            raise InputFileError(f"column {name!r} has a missing or infinite value at an observed point "
                                 f"(data row {int(rows[bad[0]]) + 1})",
                                 source=resolved.source, key="data.file")
    varying, fixed, low, high, start = parameter_parts(spec, resolved, dtype, device, derived)
    model = ExpressionFit(tree, data, params, varying, fixed, low, high, sigma, points)
    model.derived, model.guess = derived_params.Derived(derived), guess
    model.missing = len(y) - points
    model.pointwise = not ({"sum", "mean"} & functions_in(tree))
    target = y[observed]
    return model, (target / sigma if sigma is not None else target), start


def parameter_parts(spec: ExpressionModel, resolved: Resolved, dtype: torch.dtype, device: torch.device,
                    derived: dict | None = None):
    """An expression model's fitted parameters (those with `vary`, not derived), its fixed ones by
    value, and the fitted ones' bounds and start values as tensors (numpy arrays on the host)."""
    derived = derived or {}
    varying = tuple(name for name in spec.params if spec.params[name].vary and name not in derived)
    if not varying:
        raise ConfigError("every parameter has vary: false; nothing is left to fit", source=resolved.source,
                          key="model.params")
    fixed = {name: float(p.value) for name, p in spec.params.items() if not p.vary and name not in derived}
    low = _array([_or(spec.params[n].min, -math.inf) for n in varying], dtype, device)
    high = _array([_or(spec.params[n].max, math.inf) for n in varying], dtype, device)
    start = _array([_or(spec.params[n].value, math.nan) for n in varying], dtype, device)
    return varying, fixed, low, high, start


def _array(values: list[float] | np.ndarray, dtype, device) -> torch.Tensor | np.ndarray:
    """Numbers (a list, or a float64 column) in the fit's dtype: a numpy array for a fit on the
    host (numpy's dtype), else a tensor on `device`. Both round float64 to nearest."""
    if isinstance(dtype, np.dtype):
        return np.asarray(values, dtype=dtype)
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values).to(device=device, dtype=dtype)
    return torch.tensor(values, dtype=dtype, device=device)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _columns(resolved: Resolved, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    config = resolved.config
    if config.data is None:
        return {}
    if config.data.group is not None:  # one fit per group: gdfit run's many-fits job (sweeps/groups.py)
        raise ConfigError("data.group makes one fit per group: run the config with gdfit run", source=resolved.source,
                          key="data.group")
    path = resolved.resolve_path(config.data.file)
    raw = read_columns(path, lambda n: guard_memory(n, dtype, device, 8, "data file"))
    lengths = {len(c) for c in raw.values()}
    if len(lengths) > 1:
        raise InputFileError("columns differ in length", source=str(path), key="data.file")
    return {name: _array(column, dtype, device) for name, column in raw.items()}


def _column(columns: dict[str, torch.Tensor], name: str, key: str, resolved: Resolved) -> torch.Tensor:
    if name not in columns:
        raise ConfigError(f"no column {name!r} in the data; it has {', '.join(columns)}", source=resolved.source,
                          key=f"{key}.column")
    return columns[name]


def _target(resolved: Resolved, columns: dict[str, torch.Tensor], dtype, device) -> torch.Tensor:
    spec = resolved.config.target
    n = len(next(iter(columns.values()))) if columns else None
    if isinstance(spec, ColumnSource):
        return _column(columns, spec.column, "target", resolved)
    y = build_target(resolved, dtype, device, 8).flatten()
    if n is not None and y.numel() != n:
        raise ConfigError(f"the target has {plural(y.numel(), 'value')} but the data has {plural(n, 'row')}", source=resolved.source,
                          key="target")
    return y


# ---------------------------------------------------------------- statistics


def statistics(model: ExpressionFit, theta: torch.Tensor, target: torch.Tensor, absolute_sigma: bool
               ) -> dict[str, Any]:
    """`params`, `covariance` and `fit` for the end event and the result document, in float64
    (on the host: the model's numpy form, whatever the fit's dtype and device)."""
    with np.errstate(all="ignore"):  # a diverged fit's statistics are inf or NaN, and say so
        return _statistics(model, theta, target, absolute_sigma)


def _statistics(model: ExpressionFit, theta: torch.Tensor, target: torch.Tensor, absolute_sigma: bool
                ) -> dict[str, Any]:
    host = model.host("float64")
    theta = host.array(theta)
    x = theta[None]  # one run
    target = host.array(target)
    prediction, J = host.predict_and_jacobian(x)
    residuals = target - prediction[0]
    n, p = residuals.size, theta.size
    rss = float(residuals @ residuals)  # weighted: chi^2 when sigma is given
    dof = n - p
    covariance = covariance_of(J[0], rss / dof if dof > 0 else math.nan, absolute_sigma)
    stderr = [math.sqrt(v) if v >= 0 else math.nan for v in np.diag(covariance)] if covariance is not None \
        else [math.nan] * p
    y = target * host.sigma if host.sigma is not None else target
    f = host.curve(x)[0]
    plain = float(np.square(y - f).sum())  # unweighted RSS, for R^2
    total = float(np.square(y - y.mean()).sum())
    values = model.named(theta)
    stderr_of = dict(zip(model.names, stderr))
    params = {}
    with_derived = model.derived.report(values, model.names, covariance) if model.derived else {}
    for name, value in values.items():
        if name in with_derived:
            params[name] = with_derived[name]
            continue
        entry: dict[str, Any] = {"value": value, "stderr": stderr_of.get(name)}
        if name not in stderr_of:
            entry["fixed"] = True
        params[name] = entry
    fit = {**fit_figures(n, p, plain, rss, total), "missing": model.missing}
    breakdown = getattr(model, "breakdown", None)  # a global fit's statistics per dataset
    if breakdown is not None:
        fit["datasets"] = breakdown(residuals, y - f)
    return {"params": params, "covariance": covariance.tolist() if covariance is not None else None, "fit": fit}


def fit_figures(n: int, p: int, plain: float, rss: float, total: float) -> dict[str, Any]:
    """`fit`'s figures from the points, the parameters, the unweighted and weighted residual sums
    of squares and the total sum of squares about the mean (None where undefined)."""
    dof = n - p
    return {
        "n": n, "p": p, "dof": dof, "rss": plain,
        "residual_std": math.sqrt(plain / dof) if dof > 0 else None,
        "chi2": rss, "reduced_chi2": rss / dof if dof > 0 else None,
        "r2": 1 - plain / total if total > 0 else None,
        "aic": n * math.log(rss / n) + 2 * p if rss > 0 else None,
        "bic": n * math.log(rss / n) + p * math.log(n) if rss > 0 else None,
    }


def covariance_of(J: np.ndarray, s2: float, absolute_sigma: bool) -> np.ndarray | None:
    """(J^T J)^-1 through the SVD of J, times s^2 unless the sigmas are absolute (as curve_fit)."""
    if not np.isfinite(J).all():
        return None  # a diverged fit: no covariance
    try:
        _, s, Vt = np.linalg.svd(J, full_matrices=False)  # numpy: microseconds, where torch's CPU svd is slow
    except np.linalg.LinAlgError:
        return None
    tiny = s.max() * max(J.shape) * np.finfo(float).eps
    if not (s > tiny).all():
        return np.full((J.shape[1], J.shape[1]), math.inf)  # a direction the data does not determine
    cov = (Vt.T / s**2) @ Vt
    return cov if absolute_sigma else cov * s2

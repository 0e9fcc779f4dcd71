"""Curve fits: an expression model built from the config and its data, and the fit's statistics.

The statistics follow NIST StRD and `scipy.optimize.curve_fit`: with J the Jacobian of the
weighted residuals at the fitted parameters, the covariance is s^2 (J^T J)^-1 with
s^2 = RSS / (n - p), or (J^T J)^-1 itself with `absolute_sigma`. The inverse is taken through the
SVD of J, never by forming J^T J, so ill-conditioned problems keep their digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    infinite = np.flatnonzero(np.isinf(np.asarray(y.tolist())))
    if len(infinite):  # NaN marks a missing value; an infinite one is bad data, as in the columns
        column = getattr(config.target, "column", None)
        what = "the target" if column is None else f"target column {column!r}"
        raise InputFileError(f"{what} has an infinite value at data row {int(infinite[0]) + 1} (a missing value "
                             "is NaN)", source=resolved.source, key="target")
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
        raise ConfigError("data.group makes one fit per group: run the config with gdfit run (from Python: "
                          "gdfit.fit_groups)", source=resolved.source,
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
    target = host.array(target)
    figures = run_statistics(host, theta[None], target, absolute_sigma)  # one run
    covariance = figures.covariance[0] if figures.defined[0] else None
    values = model.named(theta)
    stderr_of = dict(zip(model.names, figures.stderr[0].tolist()))
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
    fit = {name: (None if math.isnan(column[0]) else int(column[0]) if name in COUNTS else float(column[0]))
           for name, column in figures.fit.items()}
    fit["missing"] = model.missing
    breakdown = getattr(model, "breakdown", None)  # a global fit's statistics per dataset
    if breakdown is not None:
        fit["datasets"] = breakdown(figures.residuals[0], figures.plain[0])
    return {"params": params, "covariance": covariance.tolist() if covariance is not None else None, "fit": fit}


FIT_FIELDS = ("n", "p", "dof", "rss", "residual_std", "chi2", "reduced_chi2", "r2", "aic", "bic")
COUNTS = ("n", "p", "dof")


@dataclass
class RunStatistics:
    """The statistics of K fits of one model (each run its parameters, and in many fits its
    own data), as arrays with the runs along the first axis."""

    covariance: np.ndarray  # [K, p, p]: inf where the data do not determine a direction
    defined: np.ndarray  # [K]: which runs have a covariance (not a diverged fit's)
    stderr: np.ndarray  # [K, p]
    fit: dict[str, np.ndarray]  # FIT_FIELDS, [K] each, NaN where undefined
    residuals: np.ndarray  # [K, n] weighted
    plain: np.ndarray  # [K, n] unweighted


def run_statistics(host, x: np.ndarray, target: np.ndarray, absolute_sigma: bool) -> RunStatistics:
    """Standard errors, covariance and `fit` figures of K runs at parameters x [K, p], from the
    model's host form and its (weighted) target. Each run's numbers are elementwise or sums along
    its own row: the same bits whether it is computed alone or among many (a group of many fits
    equals its single fit)."""
    with np.errstate(all="ignore"):  # a diverged fit's statistics are inf or NaN, and say so
        prediction, J = host.predict_and_jacobian(x)
        residuals = target - prediction
        K, n = residuals.shape
        p = x.shape[1]
        rss = np.vecdot(residuals, residuals)  # weighted: chi^2 when sigma is given
        dof = n - p
        covariance, defined = covariances(J, rss / dof if dof > 0 else np.full(K, math.nan), absolute_sigma)
        variance = np.diagonal(covariance, axis1=1, axis2=2)
        stderr = np.where(variance >= 0, np.sqrt(variance), math.nan)
        y = target * host.sigma if host.sigma is not None else target
        plain = np.broadcast_to(y, residuals.shape) - host.curve(x)  # unweighted residuals, for R^2
        total = np.square(y - y.mean(axis=-1, keepdims=True)).sum(axis=-1)
        fit = fit_figures(n, p, np.square(plain).sum(axis=-1), rss, np.broadcast_to(total, (K,)))
        return RunStatistics(covariance, defined, stderr, fit, residuals, plain)


def fit_figures(n: int, p: int, plain: np.ndarray, rss: np.ndarray, total: np.ndarray) -> dict[str, np.ndarray]:
    """`fit`'s figures of K runs from their points, parameters, unweighted and weighted residual
    sums of squares and total sums of squares about the mean, [K] each (NaN where undefined)."""
    K, dof = len(rss), n - p
    nan = np.full(K, math.nan)
    with np.errstate(all="ignore"):
        return {
            "n": np.full(K, float(n)), "p": np.full(K, float(p)), "dof": np.full(K, float(dof)), "rss": plain,
            "residual_std": np.sqrt(plain / dof) if dof > 0 else nan,
            "chi2": rss, "reduced_chi2": rss / dof if dof > 0 else nan,
            "r2": np.where(total > 0, 1 - plain / total, math.nan),
            "aic": np.where(rss > 0, n * np.log(rss / n) + 2 * p, math.nan),
            "bic": np.where(rss > 0, n * np.log(rss / n) + p * math.log(n), math.nan),
        }


def covariances(J: np.ndarray, s2: np.ndarray, absolute_sigma: bool) -> tuple[np.ndarray, np.ndarray]:
    """(J^T J)^-1 of each run through the SVD of its J [K, n, p] (columns scaled to unit size),
    times its s^2 unless the sigmas are absolute (as curve_fit): [K, p, p], inf for a run whose
    data do not determine a direction; and which runs have one ([K]; not those whose J is not
    finite: a diverged fit)."""
    K, n, p = J.shape
    covariance = np.full((K, p, p), math.nan)
    defined = np.isfinite(J).all(axis=(1, 2))
    finite = np.flatnonzero(defined)
    if not len(finite):
        return covariance, defined
    # each column to unit size first: the rank test then reads how well the data determine the
    # parameters, not their units (a slope per second beside an intercept of 1e4 at Unix times
    # would look singular); the covariance is scaled back below
    units = np.abs(J[finite]).max(axis=1)  # [m, p]
    units = np.where(units > 0, units, 1.0)  # a zero column stays zero: a direction not determined
    try:
        _, s, Vt = np.linalg.svd(J[finite] / units[:, None, :], full_matrices=False)  # numpy: microseconds, where torch's CPU svd is slow
    except np.linalg.LinAlgError:  # one did not converge: each alone (the same numbers for the others)
        if len(finite) == 1:
            defined[finite] = False
            return covariance, defined
        for i in finite:
            (covariance[i],), (defined[i],) = covariances(J[i : i + 1], s2[i : i + 1], absolute_sigma)
        return covariance, defined
    tiny = s.max(axis=1) * max(n, p) * np.finfo(float).eps
    full = (s > tiny[:, None]).all(axis=1)
    with np.errstate(all="ignore"):
        cov = np.matmul(Vt.transpose(0, 2, 1) / (s ** 2)[:, None, :], Vt) / (units[:, :, None] * units[:, None, :])
        if not absolute_sigma:
            cov = cov * s2[finite][:, None, None]
    covariance[finite] = np.where(full[:, None, None], cov, math.inf)  # inf: a direction the data does not determine
    return covariance, defined


def covariance_of(J: np.ndarray, s2: float, absolute_sigma: bool) -> np.ndarray | None:
    """One run's covariance from its J [n, p] (`covariances`), None where it has none."""
    (covariance,), (defined,) = covariances(J[None], np.array([s2], dtype=float), absolute_sigma)
    return covariance if defined else None

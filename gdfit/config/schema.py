"""Every config key with its default and valid values: `gdfit config --schema` and the documentation's config reference."""

from __future__ import annotations

from typing import Any

from gdfit.config import DEVICE_HELP, DTYPES, INIT_NAMES, MAX_INLINE_ELEMENTS, FitConfig

VALUES = {
    "target": f"matrix / vector / scalar inline (<= {MAX_INLINE_ELEMENTS:,} numbers); "
    "{file: PATH} (.csv .txt .npy .pt); {random: {shape: [..], seed: N, low: 0, high: 1}}; files and random take dtype; "
    "{column: NAME} of the data file; none with datasets (each has its own)",
    "init": f"{', '.join(INIT_NAMES)} (normal takes mean, std: {{name: normal, std: 0.1}}); "
    "an explicit matrix of the target's shape; {file: PATH}; {random: {...}}",
    "seed": "integer; the same config and seed give the same numbers",
    "loss": "mse, l1, {name: huber, delta: 1.0}, {name: smooth_l1, beta: 1.0} (mean reduction); with lm, "
    "least_squares' robust losses {name: soft_l1 | huber | cauchy | arctan, f_scale: 1.0}",
    "optimizer": "gd; {name: momentum, momentum: 0.9, dampening: 0}; {name: nesterov, momentum: 0.9}; "
    "{name: adam, betas: [0.9, 0.999], eps: 1e-8}; {name: rmsprop, alpha: 0.99, eps: 1e-8}; "
    "{name: lbfgs, history_size: 100}; {name: lm, damping: 1e-3}; als (lowrank only)",
    "learning_rate": "number > 0",
    "schedule": "constant; {name: step, step_size: 100, gamma: 0.1}; {name: exponential, gamma: 0.99}; "
    "{name: cosine, t_max: max_iters, eta_min: 0}",
    "threshold": "number >= 0; converged when loss <= threshold",
    "max_iters": "integer >= 0; the most updates",
    "timeout_s": "number > 0 or null; stop with status timeout after this many seconds",
    "patience": "integer > 0 or null; stop with status stalled after this many updates without improvement",
    "min_rel_improvement": "number in [0, 1); the relative drop in loss that counts as improvement for patience",
    "divergence_factor": "number > 1; diverged when loss > factor x the initial loss (or not finite)",
    "device": DEVICE_HELP,
    "dtype": ", ".join(DTYPES),
    "engine": "auto (fused), fused (closed-form, in place), autograd (the tutorial's literal loop)",
    "data": "null, or {file: PATH}: named columns (.csv with a header row, .npz of 1-D arrays) for a model",
    "model": "identity (x itself is fitted); {expr: TEXT, params: {NAME: start or {value, min, max, vary}}}; "
    "{name: lowrank, rank: R, l2: 0}; {name: linear, inputs: TENSOR, bias: false}",
    "sigma": "null, or {column: NAME}: per-point standard deviations (weights 1/sigma^2), as curve_fit",
    "absolute_sigma": "false: scale the covariance by the reduced chi^2 (curve_fit's default); true: do not",
    "allow_underdetermined": "false: refuse a curve fit with fewer data points than free parameters (exit 2); "
                             "true: fit it anyway (its optimum is not unique)",
    "ftol": "number >= 0 or null; converged when the relative loss reduction is <= ftol (1e-10 for lm and lbfgs "
    "curve fits, 1e-8 for lowrank and linear)",
    "xtol": "number >= 0 or null; converged when |step| <= xtol (xtol + |parameters|) (1e-10 for lm and lbfgs "
    "curve fits, 1e-8 for lowrank and linear)",
    "gtol": "number >= 0 or null; converged when the largest gradient element is <= gtol (1e-10 for lm "
    "curve fits, 1e-8 for linear; off for lowrank, whose small start has a small gradient)",
    "mask": "null, or a tensor of the target's shape (inline, {file: PATH}): 1 observed, 0 missing; lowrank and "
    "linear only (NaN target entries are missing too)",
    "holdout": "null, a fraction in (0, 1), or {fraction: F, seed: 0}: hide that share of the observed entries "
    "and report the held-out RMSE; lowrank and linear only",
    "sweep": "mapping KEY: values for `gdfit sweep` (a list, a..b, logspace(a,b,n) or linspace(a,b,n)); "
    "`gdfit run` ignores it",
    "datasets": "null, or a list of {data: {file: PATH}, target: {column: NAME}, model: {expr: TEXT}, sigma: "
    "{column: NAME}}: a global fit of them all, parameters shared by name (then no top-level target, data, "
    "model, sigma)",
    "params": "null, or {NAME: start or {value, min, max, vary}}: a global fit's shared parameters (with datasets)",
    "confidence": "null, or sigma levels like [1, 2] (one number for one level; below 1, a probability): "
    "profile-likelihood intervals of each fitted parameter, by lmfit's F-test; lm and mse only (--ci: [1, 2])",
}


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        dumped = value.model_dump()
        return dumped["name"] if len(dumped) == 1 or set(dumped) <= {"name", "mean", "std", "dtype"} else str(dumped)
    return "null" if value is None else str(value)


def schema_rows() -> list[dict[str, str]]:
    """One row per key of FitConfig, in declaration order."""
    return [
        {"key": name, "default": _default(field), "values": VALUES[name]}
        for name, field in FitConfig.model_fields.items()
    ]

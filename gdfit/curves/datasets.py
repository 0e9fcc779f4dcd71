"""Global fits: several datasets, each with its own data, target and expression, fitted at once
with their parameters shared by name (`datasets:` and top-level `params:`).

A global fit is one curve fit over the datasets' points laid end to end: point i's prediction
comes from the expression of the dataset it belongs to. Each dataset is an ExpressionFit of its
own (built by curvefit.build_expression_fit, with every shared parameter, so that all of them
read the same theta); GlobalFit joins their predictions and Jacobians, and every optimizer, lm's
algebra, the statistics and the reports see one ExpressionFit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gdfit.config import ExpressionModel, Resolved
from gdfit.errors import ConfigError, GdfitError
from gdfit.expr.language import names_in
from gdfit.curves.curvefit import build_expression_fit
from gdfit.fitting.models import ExpressionFit


def build_global_fit(resolved: Resolved, dtype: torch.dtype, device: torch.device
                     ) -> tuple[GlobalFit, torch.Tensor, torch.Tensor]:
    """The global model, the datasets' (weighted) targets end to end, and the shared parameters' start."""
    config = resolved.config
    parts, targets, start = [], [], None
    for i, dataset in enumerate(config.datasets):
        # the dataset as a config of one curve fit: its own data, target, sigma and expression
        single = config.model_copy(update={
            "data": dataset.data, "target": dataset.target, "sigma": dataset.sigma, "datasets": None, "params": None,
            "model": ExpressionModel.model_construct(expr=dataset.model.expr, params=config.params)})
        try:
            part, target, start = build_expression_fit(resolved.model_copy(update={"config": single}), dtype, device,
                                                       every_used=False)
        except GdfitError as err:
            raise _in_dataset(err, i, resolved.source) from None
        parts.append(part)
        targets.append(target)
    # as in one fit: a derived parameter counts as used, and so do the parameters it is made of
    derived = parts[0].derived
    used = set().union(*(names_in(part.tree) for part in parts), derived.trees,
                       *(names_in(tree) for tree in derived.trees.values()))
    unused = [name for name in config.params if name not in used]
    if unused:
        raise ConfigError(f"parameter {unused[0]!r} is not used by any dataset's expression",
                          source=resolved.source, key=f"params.{unused[0]}")
    labels = [dataset.data.file for dataset in config.datasets]
    return GlobalFit(parts, labels), torch.cat(targets), start


def _in_dataset(err: GdfitError, index: int, source: str) -> GdfitError:
    """An error about one dataset's keys, at that dataset's place in the config (the shared
    parameters are the top-level params)."""
    err.source = err.source or source
    key = err.key or ""
    if key.startswith("model.params"):
        err.key = key.removeprefix("model.")
    else:
        err.key = f"datasets.{index}" + (f".{key}" if key else "")
    return err


class GlobalFit(ExpressionFit):
    """Datasets fitted together: their ExpressionFits (`parts`), which share theta, joined end to end."""

    def __init__(self, parts: list[ExpressionFit], labels: list[str]) -> None:
        first = parts[0]
        sigma = None
        if any(part.sigma is not None for part in parts):  # a dataset without sigma weighs its points by 1
            sigma = torch.cat([part.sigma if part.sigma is not None else part.low.new_ones(part.points)
                               for part in parts])
        super().__init__(None, {}, first.order, first.names, first.fixed, first.low, first.high, sigma,
                         sum(part.points for part in parts))
        self.parts, self.labels = parts, labels
        self.derived = first.derived  # the shared parameters' derived ones: every part has the same
        self.missing = sum(part.missing for part in parts)
        self.pointwise = False  # no one column to draw the whole curve over: each dataset has its own

    def curve(self, theta: torch.Tensor) -> torch.Tensor:
        """Each dataset's unweighted prediction, end to end, [K, n]."""
        return torch.cat([part.curve(theta) for part in self.parts], 1)

    def host(self, dtype: torch.dtype = torch.float64) -> StackedCurve:
        if dtype not in self.hosts:
            self.hosts[dtype] = StackedCurve([part.host(dtype) for part in self.parts])
        return self.hosts[dtype]

    def fixing(self, name: str, value: float) -> GlobalFit:
        """The same datasets with parameter `name` held at `value`."""
        return GlobalFit([part.fixing(name, value) for part in self.parts], self.labels)

    def split(self, values: torch.Tensor | np.ndarray) -> list:
        """Values over the joined points (their last axis) cut into each dataset's."""
        edges = np.cumsum([part.points for part in self.parts])[:-1].tolist()
        if isinstance(values, torch.Tensor):
            return list(torch.tensor_split(values, edges, dim=-1))
        return np.split(values, edges, axis=-1)

    def breakdown(self, weighted: np.ndarray, plain: np.ndarray) -> list[dict[str, Any]]:
        """Each dataset's `n`, `rss` (unweighted) and `chi2` (weighted), from the joined residuals."""
        return [{"data": label, "n": int(w.size), "rss": float(p @ p), "chi2": float(w @ w)}
                for label, w, p in zip(self.labels, self.split(weighted), self.split(plain))]


class StackedCurve:
    """The datasets' host forms (HostCurve) as one: predictions and Jacobians joined end to end.
    Every part reads the same parameters in the same order, so their Jacobians' columns agree."""

    def __init__(self, parts: list) -> None:
        first = parts[0]
        self.parts = parts
        self.dtype, self.torch_dtype, self.names = first.dtype, first.torch_dtype, first.names
        self.points = sum(part.points for part in parts)
        self.bounded, self.low, self.high = first.bounded, first.low, first.high
        self.sigma = None
        if any(part.sigma is not None for part in parts):
            self.sigma = np.concatenate([part.sigma if part.sigma is not None else np.ones(part.points, self.dtype)
                                         for part in parts])
        self.array, self.inside = first.array, first.inside

    def select(self, rows: np.ndarray) -> "StackedCurve":
        return StackedCurve([part.select(rows) for part in self.parts])

    def curve(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([part.curve(x) for part in self.parts], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([part.predict(x) for part in self.parts], axis=1)

    def predict_and_jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, jacobians = zip(*(part.predict_and_jacobian(x) for part in self.parts))
        return np.concatenate(values, axis=1), np.concatenate(jacobians, axis=1)

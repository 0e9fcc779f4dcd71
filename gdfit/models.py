"""Models: named parameters and the prediction they make of the target.

The loop updates a model's parameters, whatever the model. Each parameter tensor carries a
leading run dimension, so K runs of one model are one tensor program.
"""

from __future__ import annotations

from typing import Protocol

import torch

Params = dict[str, torch.Tensor]


class Model(Protocol):
    """What the descent loop needs of a model."""

    def parameters(self, start: torch.Tensor) -> Params:
        """The runs' starting parameters, from the starts built by `init`."""

    def predict(self, params: Params) -> torch.Tensor:
        """The prediction of the target for each run, [K, *target_shape]."""

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        """The chain rule: d loss / d parameter from d loss / d prediction."""


class Identity:
    """The tutorial's problem: x itself is the prediction, fitted element by element."""

    names = ("x",)

    def parameters(self, start: torch.Tensor) -> Params:
        return {"x": start}

    def predict(self, params: Params) -> torch.Tensor:
        return params["x"]

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        return {"x": grad_of_prediction}

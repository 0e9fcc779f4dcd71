"""Learning-rate schedules, as the multiplier applied to update k (1-based).

Update k uses the rate torch's scheduler holds after k - 1 calls to scheduler.step().
"""

from __future__ import annotations

import math

from gdfit.config import Constant, CosineLR, ExponentialLR, StepLR


def lr_factor(spec: Constant | StepLR | ExponentialLR | CosineLR, k: int, max_iters: int, lr: float = 1.0) -> float:
    """Rate for update k as a multiple of the base rate `lr` (cosine's eta_min needs lr)."""
    epoch = k - 1
    if isinstance(spec, StepLR):
        return spec.gamma ** (epoch // spec.step_size)
    if isinstance(spec, ExponentialLR):
        return spec.gamma**epoch
    if isinstance(spec, CosineLR):
        t_max = spec.t_max or max(max_iters, 1)
        eta_min = spec.eta_min / lr
        return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
    return 1.0


def describe(spec: Constant | StepLR | ExponentialLR | CosineLR) -> str:
    """One line for the table header and start event."""
    params = {k: v for k, v in spec.model_dump().items() if k != "name"}
    return spec.name + (" (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")

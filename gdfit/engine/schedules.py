"""Learning-rate schedules: the rate of update k (1-based).

Update k uses the rate torch's scheduler holds after k - 1 calls to scheduler.step(), written in
closed form (torch's recursive form agrees to the last bit or two).
"""

from __future__ import annotations

import math

from gdfit.config import Constant, CosineLR, ExponentialLR, StepLR

Schedule = Constant | StepLR | ExponentialLR | CosineLR


def rate(spec: Schedule, lr, k: int, max_iters: int):
    """The rate of update k for base rate `lr` (a float, or a tensor of per-run rates)."""
    epoch = k - 1
    if isinstance(spec, StepLR):
        return lr * spec.gamma ** (epoch // spec.step_size)
    if isinstance(spec, ExponentialLR):
        return lr * spec.gamma**epoch
    if isinstance(spec, CosineLR):
        t_max = spec.t_max or max(max_iters, 1)
        return spec.eta_min + (lr - spec.eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
    return lr


def describe(spec: Schedule) -> str:
    """One line for the table header and start event."""
    params = {k: v for k, v in spec.model_dump().items() if k != "name"}
    return spec.name + (" (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")

"""The default engine held to torch itself, on a few hundred random configurations.

The oracle here is written from the README ("Iteration semantics", "Config reference") and torch's
own pieces: the tutorial's literal loop for gd, torch.optim for the other optimizers,
torch.optim.lr_scheduler for schedules, torch.nn.functional for losses. It shares no code with
gdfit's engine. Only x0 and the target come from gdfit (`prepare`): building them is not under test.

The cases: N_CASES configurations drawn with a fixed seed (the test ids spell them out), plus a few
made by hand whose losses land exactly on a stop rule's boundary. Each case asserts that gdfit stops
with the oracle's status at the oracle's update, that its losses over the first updates match, and
that its final loss is the loss of the x it returns. A case whose oracle is itself chaotic (its stop
moves when x0 moves by a few ulps) may be excluded from the stop comparison only, and only when
nothing else differs; the last test counts those cases and keeps them few. float16 and bfloat16
runs are checked for the final-loss identity alone.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import COUNT_1, ROOT
from helpers import fit, resolved

from gdfit.engine.descent import prepare

SEED = 20261127
N_CASES = 360
AUTOGRAD_EVERY = 6  # the autograd engine runs every 6th case as well
COMPARED_UPDATES = 10  # losses compared update by update over this many updates
CHAOS_ULPS = 4
MAX_EXCLUDED_FRACTION = 0.05
# (relative, absolute) for the losses of the first updates; half precisions only compare the start
TOLERANCE = {"float64": (1e-12, 1e-12), "float32": (1e-5, 0.0), "float16": (0.0, 0.0), "bfloat16": (0.0, 0.0)}

SHAPES = [[3, 3], [9], [2, 5], [4, 3, 2], [1]]
TUTORIAL_TARGET = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]


# ---------------------------------------------------------------- drawing configurations


@dataclass(frozen=True)
class Case:
    """One configuration: the gdfit config mapping (threshold aside) and how to set its threshold."""

    index: int
    data: dict[str, Any] = field(hash=False)
    threshold: float | None  # an absolute threshold, or None for `ulps` x the one-ulp loss
    ulps: float
    init: str  # which kind of start: random, zeros, normal, matrix, =target, target+1ulp
    label: str
    expected: tuple[str, int] | None = None  # a hand-made case's (status, updates), worked out by hand


def _sig(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def _nested(rng: random.Random, shape: list[int], low: float, high: float) -> Any:
    if len(shape) == 1:
        return [round(rng.uniform(low, high), 4) for _ in range(shape[0])]
    return [_nested(rng, shape[1:], low, high) for _ in range(shape[0])]


def _one_ulp_up(values: Any, dtype: str) -> Any:
    """The nested list moved one ulp of `dtype` up in every element (exact in float64)."""
    t = torch.tensor(values, dtype=torch.float64).to(getattr(torch, dtype))
    return torch.nextafter(t, torch.full_like(t, math.inf)).to(torch.float64).tolist()


def _draw_target(rng: random.Random, shape: list[int]) -> tuple[Any, str, Any]:
    """(target spec, label, explicit values or None)."""
    kind = rng.random()
    if shape == [3, 3] and kind < 0.2:
        return TUTORIAL_TARGET, "tutorial", TUTORIAL_TARGET
    if kind < 0.5:
        low, high = rng.choice([(-1.0, 1.0), (0.0, 1.0), (-0.01, 0.01), (100.0, 101.0)])
        values = _nested(rng, shape, low, high)
        return values, f"list[{low:g},{high:g})", values
    low, high = rng.choice([(0.0, 1.0), (0.0, 1.0), (-2.0, 2.0), (100.0, 101.0)])
    seed = rng.randrange(1000)
    return {"random": {"shape": shape, "seed": seed, "low": low, "high": high}}, f"rand{seed}[{low:g},{high:g})", None


def _draw_init(rng: random.Random, shape: list[int], explicit: Any, dtype: str) -> tuple[Any, str]:
    kinds = ["random", "random", "zeros", "normal", "matrix"] + (["target", "ulp"] if explicit is not None else [])
    kind = rng.choice(kinds)
    if kind == "random":
        return "random", "random"
    if kind == "zeros":
        return "zeros", "zeros"
    if kind == "normal":
        mean, std = rng.choice([0.0, 0.5, 3.0]), rng.choice([0.1, 1.0, 10.0])
        return {"name": "normal", "mean": mean, "std": std}, f"normal({mean:g},{std:g})"
    if kind == "matrix":
        return _nested(rng, shape, -2.0, 2.0), "matrix"
    if kind == "target":
        return explicit, "=target"
    return _one_ulp_up(explicit, dtype), "target+1ulp"


OPTIMIZERS = (
    [({"name": "gd"}, "gd")] * 4
    + [
        ({"name": "momentum", "momentum": m, "dampening": d}, f"momentum(m={m:g},d={d:g})")
        for m in (0.0, 0.5, 0.9)
        for d in (0.0, 0.5)
    ]
    + [({"name": "nesterov", "momentum": m}, f"nesterov(m={m:g})") for m in (0.5, 0.9)]
    + [({"name": "adam"}, "adam")] * 2
    + [({"name": "rmsprop"}, "rmsprop")] * 2
)


def _draw_optimizer(rng: random.Random) -> tuple[dict[str, Any], str]:
    spec, label = rng.choice(OPTIMIZERS)
    if spec["name"] == "adam":
        b1, b2 = rng.choice([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9), (0.0, 0.99)])
        eps = rng.choice([1e-8, 1e-6, 1e-3])
        return {"name": "adam", "betas": [b1, b2], "eps": eps}, f"adam(b={b1:g},{b2:g},eps={eps:g})"
    if spec["name"] == "rmsprop":
        alpha, eps = rng.choice([0.99, 0.9, 0.5]), rng.choice([1e-8, 1e-6, 1e-3])
        return {"name": "rmsprop", "alpha": alpha, "eps": eps}, f"rmsprop(a={alpha:g},eps={eps:g})"
    return dict(spec), label


def _draw_loss(rng: random.Random) -> tuple[dict[str, Any], str]:
    name = rng.choices(["mse", "l1", "huber", "smooth_l1"], [40, 20, 20, 20])[0]
    if name == "huber":
        delta = rng.choice([0.1, 0.5, 1.0, 2.0])
        return {"name": "huber", "delta": delta}, f"huber({delta:g})"
    if name == "smooth_l1":
        beta = rng.choice([0.1, 0.5, 1.0, 2.0])
        return {"name": "smooth_l1", "beta": beta}, f"smooth_l1({beta:g})"
    return {"name": name}, name


def _draw_rate(rng: random.Random, optimizer: str, loss: str, n: int) -> float:
    """Rates from well inside to well beyond each optimizer's stable range."""
    if optimizer in ("gd", "momentum", "nesterov"):
        if optimizer == "gd" and loss == "mse" and rng.random() < 0.1:
            return n / 2  # the closed-form one-update solution: x lands on the target up to rounding
        # mse curvature is 2/n, so gd is stable below lr = n; the other losses' gradients are <= 1/n
        return _sig(n * 10 ** rng.uniform(-2.5, 0.6))
    if optimizer == "adam":
        return _sig(10 ** rng.uniform(-3.0, 0.5))
    return _sig(10 ** rng.uniform(-3.5, 0.0))


def _draw_schedule(rng: random.Random, lr: float) -> tuple[dict[str, Any], str]:
    name = rng.choices(["constant", "step", "exponential", "cosine"], [40, 20, 20, 20])[0]
    if name == "step":
        size, gamma = rng.choice([1, 3, 10, 50]), rng.choice([0.5, 0.9, 0.99, 1.1])
        return {"name": "step", "step_size": size, "gamma": gamma}, f"step({size},{gamma:g})"
    if name == "exponential":
        gamma = rng.choice([0.8, 0.95, 0.99, 1.02])
        return {"name": "exponential", "gamma": gamma}, f"exp({gamma:g})"
    if name == "cosine":
        t_max, eta_min = rng.choice([None, 5, 20, 100]), _sig(lr * rng.choice([0.0, 0.01, 0.1]))
        return {"name": "cosine", "t_max": t_max, "eta_min": eta_min}, f"cos({t_max},{eta_min:g})"
    return {"name": "constant"}, "const"


def _draw_case(rng: random.Random, index: int) -> Case:
    shape, dtype = rng.choice(SHAPES), rng.choice(["float32", "float64"])
    n = math.prod(shape)
    target, target_label, explicit = _draw_target(rng, shape)
    init, init_label = _draw_init(rng, shape, explicit, dtype)
    optimizer, opt_label = _draw_optimizer(rng)
    loss, loss_label = _draw_loss(rng)
    lr = _draw_rate(rng, optimizer["name"], loss["name"], n)
    schedule, schedule_label = _draw_schedule(rng, lr)
    max_iters = rng.choices([0, 1, 2, 10, 30, 100, 200, 300], [2, 3, 3, 12, 20, 25, 20, 15])[0]
    factor = rng.choice([1e6, 1e6, 1e6, 1.5, 10.0, 1e3])
    patience, min_rel = None, 1e-6
    if rng.random() < 0.25:
        patience, min_rel = rng.choice([1, 3, 10, 30]), rng.choice([0.0, 1e-6, 1e-3, 0.05])
    threshold, ulps = rng.choice([0.0, None, None, 1e-2, 1e-4, 1e-6, 1e-9, 1e-12]), 0.0
    if threshold is None:
        ulps = rng.choice([1.0, 4.0])
    data = dict(
        target=target, init=init, seed=rng.randrange(100), loss=loss, optimizer=optimizer, learning_rate=lr,
        schedule=schedule, max_iters=max_iters, divergence_factor=factor, patience=patience,
        min_rel_improvement=min_rel, dtype=dtype, device="cpu",
    )
    parts = [
        f"{index:03d}", opt_label, loss_label, schedule_label, dtype.replace("float", "f"),
        "x".join(map(str, shape)), f"t={target_label}", f"x0={init_label}", f"lr={lr:g}",
        f"thr={threshold:g}" if threshold is not None else f"thr={ulps:g}ulp", f"it={max_iters}",
        f"df={factor:g}",
    ]
    if patience is not None:
        parts.append(f"pat={patience}/{min_rel:g}")
    return Case(index, data, threshold, ulps, init_label.split("(")[0], "-".join(parts))


def draw_cases(count: int = N_CASES, seed: int = SEED) -> list[Case]:
    rng = random.Random(seed)
    return [_draw_case(rng, i) for i in range(count)]


def _edge(index: int, label: str, expected: tuple[str, int], threshold: float, **settings: Any) -> Case:
    """A hand-made case on a rule's boundary. On one element from 0.25 to a target of 0.5 with gd
    on mse, every number is a power of two: the loss lands exactly on the boundary it tests."""
    data = dict(
        target=[0.5], init=[0.25], seed=0, loss={"name": "mse"}, optimizer={"name": "gd"}, learning_rate=0.25,
        schedule={"name": "constant"}, max_iters=10, divergence_factor=1e6, patience=None,
        min_rel_improvement=1e-6, dtype="float32", device="cpu",
    )
    data.update(settings)
    return Case(index, data, threshold, 0.0, "edge", f"{index:03d}-edge-{label}-{data['dtype']}", expected)


def edge_cases(start: int) -> list[Case]:
    made = []
    for dtype in ("float32", "float64"):
        overflow = ("diverged", 0) if dtype == "float32" else ("max_iters", 3)  # 1e40 fits float64 only
        for label, expected, threshold, settings in [
            # x1 = 0.375, loss 2^-6: exactly the threshold, which counts as converged
            ("loss-equals-threshold", ("converged", 1), 2.0**-6, {}),
            # lr 1.5 quadruples the loss: exactly factor x the initial loss is not yet diverged
            ("loss-equals-divergence-ceiling", ("diverged", 2), 0.0, {"learning_rate": 1.5, "divergence_factor": 4.0}),
            # the loss falls by exactly min_rel_improvement each update: that is not an improvement
            ("improvement-equals-min-rel", ("stalled", 1), 0.0, {"patience": 1, "min_rel_improvement": 0.75}),
            # at the target with no updates allowed: converged wins over max_iters
            ("start-at-target-max-iters-0", ("converged", 0), 0.0, {"init": [0.5], "max_iters": 0}),
            ("max-iters-0", ("max_iters", 0), 0.0, {"max_iters": 0}),
            # a start whose loss overflows float32; lr 1 reflects x about the target, keeping the loss
            ("initial-loss-overflows", overflow, 0.0,
             {"target": [1e20], "init": "zeros", "max_iters": 3, "learning_rate": 1.0}),
        ]:
            made.append(_edge(start + len(made), label, expected, threshold, dtype=dtype, **settings))
    return made


RANDOM_CASES = draw_cases()
CASES = RANDOM_CASES + edge_cases(len(RANDOM_CASES))


# ---------------------------------------------------------------- the oracle: torch, as the README says


def named(spec: str | dict[str, Any]) -> dict[str, Any]:
    """`adam` -> {"name": "adam"}, as the config reference allows."""
    return {"name": spec} if isinstance(spec, str) else spec


def torch_loss(spec: str | dict[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    spec = named(spec)
    name = spec["name"]
    if name == "huber":
        return functools.partial(F.huber_loss, delta=spec["delta"])
    if name == "smooth_l1":
        return functools.partial(F.smooth_l1_loss, beta=spec["beta"])
    return {"mse": F.mse_loss, "l1": F.l1_loss}[name]


def torch_optimizer(spec: str | dict[str, Any], param: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    """torch.optim's single-tensor code path; for gd an SGD that only carries the schedule's rate."""
    spec = named(spec)
    name = spec["name"]
    if name == "momentum":
        return torch.optim.SGD(
            [param], lr=lr, momentum=spec["momentum"], dampening=spec["dampening"], foreach=False
        )
    if name == "nesterov":
        return torch.optim.SGD([param], lr=lr, momentum=spec["momentum"], nesterov=True, foreach=False)
    if name == "adam":
        return torch.optim.Adam([param], lr=lr, betas=tuple(spec["betas"]), eps=spec["eps"], foreach=False)
    if name == "rmsprop":
        return torch.optim.RMSprop([param], lr=lr, alpha=spec["alpha"], eps=spec["eps"], foreach=False)
    return torch.optim.SGD([param], lr=lr, foreach=False)


def torch_scheduler(spec: str | dict[str, Any], optimizer: torch.optim.Optimizer, max_iters: int):
    spec = named(spec)
    name, sched = spec["name"], torch.optim.lr_scheduler
    if name == "step":
        return sched.StepLR(optimizer, step_size=spec["step_size"], gamma=spec["gamma"])
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=spec["gamma"])
    if name == "cosine":
        t_max, eta_min = spec.get("t_max") or max_iters, spec.get("eta_min", 0.0)
        return sched.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    return None


class StopRule:
    """The README's stop rules, checked on Python floats in the README's order."""

    def __init__(self, data: dict[str, Any], initial: float) -> None:
        self.data, self.initial = data, initial
        self.best, self.best_at = initial, 0

    def at_start(self) -> str | None:
        if not math.isfinite(self.initial):
            return "diverged"
        if self.initial <= self.data["threshold"]:
            return "converged"
        if self.data["max_iters"] == 0:
            return "max_iters"
        return None

    def after(self, k: int, loss: float) -> str | None:
        data = self.data
        if not math.isfinite(loss) or loss > data["divergence_factor"] * self.initial:
            return "diverged"
        if loss <= data["threshold"]:
            return "converged"
        if data["patience"] is not None:
            if loss < self.best * (1 - data["min_rel_improvement"]):
                self.best, self.best_at = loss, k
            elif k - self.best_at >= data["patience"]:
                return "stalled"
        if k == data["max_iters"]:
            return "max_iters"
        return None


@dataclass
class Run:
    status: str
    iters: int
    losses: list[float]  # losses[k]: the loss after k updates
    x: torch.Tensor


# the config reference's defaults for the keys the oracle reads
DEFAULTS = dict(
    loss="mse", optimizer="gd", learning_rate=1.0, schedule="constant", threshold=1e-5, max_iters=10_000,
    patience=None, min_rel_improvement=1e-6, divergence_factor=1e6,
)


def run_torch(data: dict[str, Any], x0: torch.Tensor, target: torch.Tensor) -> Run:
    """The run the README describes, made of torch's own loss, optimizer and scheduler."""
    data = {**DEFAULTS, **data}
    loss_fn = torch_loss(data["loss"])
    literal_gd = named(data["optimizer"])["name"] == "gd"
    x = x0.detach().clone().requires_grad_(True)
    # gd's optimizer is never given x: it only holds the rate that the scheduler sets
    holder = torch.zeros(1, requires_grad=True) if literal_gd else x
    optimizer = torch_optimizer(data["optimizer"], holder, data["learning_rate"])
    scheduler = torch_scheduler(data["schedule"], optimizer, data["max_iters"])
    loss = loss_fn(x, target)
    losses = [loss.item()]
    rule = StopRule(data, losses[0])
    status, k = rule.at_start(), 0
    while status is None:
        k += 1
        if literal_gd:
            lr = optimizer.param_groups[0]["lr"]
            loss.backward()
            x = x - lr * x.grad
            x.detach_()
            x.requires_grad_(True)
            optimizer.step()  # no parameter has a gradient: only tells the scheduler a step was made
        else:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss = loss_fn(x, target)
        losses.append(loss.item())
        status = rule.after(k, losses[-1])
    return Run(status, k, losses, x.detach())


def nudged(x0: torch.Tensor, target: torch.Tensor, ulps: int) -> torch.Tensor:
    """x0 moved by `ulps` units in the last place of max(|x0|, |target|) (x0 may be all zeros)."""
    scale = torch.maximum(x0.abs(), target.abs()).clamp_min(torch.finfo(x0.dtype).tiny)
    return x0 + ulps * torch.finfo(x0.dtype).eps * scale


# ---------------------------------------------------------------- cases made concrete (cached)


@functools.lru_cache(maxsize=None)
def concrete(index: int, dtype: str | None = None) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """The full config (threshold resolved; dtype replaced if given), and gdfit's x0 and target."""
    case = CASES[index]
    data = dict(case.data, threshold=case.threshold if case.threshold is not None else 0.0)
    data["dtype"] = dtype or data["dtype"]
    if case.threshold is None:
        # the loss of an x one ulp from the target in every element: the dtype's resolution here
        target = prepare(resolved(**data)).target
        up = torch.nextafter(target, torch.full_like(target, math.inf))
        data["threshold"] = case.ulps * torch_loss(data["loss"])(up, target).item()
    problem = prepare(resolved(**data))
    return data, problem.x0, problem.target


@functools.lru_cache(maxsize=None)
def oracle(index: int) -> Run:
    return run_torch(*concrete(index))


@functools.lru_cache(maxsize=None)
def chaotic(index: int) -> str | None:
    """Why the oracle's own stop moves when x0 moves by CHAOS_ULPS ulps either way, or None.

    A stop at update 0 is never chaotic: both sides evaluate the loss of the same x0, with no
    rounding of their own before it (and moving x0 off the target would change the problem). Nor is
    a hand-made boundary case: its arithmetic is exact, and moving x0 moves it off its boundary."""
    data, x0, target = concrete(index)
    base = oracle(index)
    if base.iters == 0 or CASES[index].expected is not None:
        return None
    for sign in (1, -1):
        moved = run_torch(data, nudged(x0, target, sign * CHAOS_ULPS), target)
        if (moved.status, moved.iters) != (base.status, base.iters):
            return (
                f"from x0 {sign * CHAOS_ULPS:+d} ulps the oracle stops {moved.status} at {moved.iters}, "
                f"not {base.status} at {base.iters}"
            )
    return None


EXCLUDED: dict[str, str] = {}  # test id -> why, for the cases excluded in this session


# ---------------------------------------------------------------- comparisons


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def close(a: float, b: float, dtype: str) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return same_float(a, b)
    rel, abs_ = TOLERANCE[dtype]
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


def differences(data: dict[str, Any], want: Run, got: Any, target: torch.Tensor) -> list[str]:
    """How gdfit's run differs from torch's, stop aside: early losses, and the final loss against
    the loss of the x it returns (exactly, in the run's dtype)."""
    found = []
    shared = min(COMPARED_UPDATES, want.iters, got.iters)
    for k in range(shared + 1):
        if not close(got.history[k], want.losses[k], data["dtype"]):
            found.append(f"loss after {k} updates: gdfit {got.history[k]!r}, torch {want.losses[k]!r}")
            break
    if len(got.history) != got.iters + 1 or not same_float(got.history[-1], got.loss):
        found.append(f"history of {len(got.history)} losses ending {got.history[-1]!r} for {got.iters} updates")
    if not isinstance(got.x, torch.Tensor) or got.x.dtype != target.dtype:
        found.append(f"x is not a {target.dtype} tensor: {got.x!r}")
    else:
        own = torch_loss(data["loss"])(got.x, target).item()
        if not same_float(got.loss, own):
            found.append(f"final loss {got.loss!r}, but the returned x has loss {own!r}")
    return found


def check_against_torch(case: Case, engine: str, test_id: str) -> None:
    data, _, target = concrete(case.index)
    want = oracle(case.index)
    _, got, _ = fit(engine=engine, every=1, **data)
    problems = differences(data, want, got, target)
    if (got.status, got.iters) != (want.status, want.iters):
        why = chaotic(case.index)
        if why is not None and not problems:
            EXCLUDED[test_id] = why
            pytest.skip(f"chaotic: {why}")
        problems.insert(0, (
            f"gdfit stops {got.status} at update {got.iters} (loss {got.loss!r}), torch {want.status} at update "
            f"{want.iters} (loss {want.losses[-1]!r})" + (f"; chaotic: {why}" if why else "")
        ))
    if problems:
        pytest.fail(
            "\n".join(problems)
            + f"\nthreshold {data['threshold']!r}; torch's losses {want.losses[:4]} ... {want.losses[-3:]}",
            pytrace=False,
        )


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_default_engine_follows_torch(case, request):
    check_against_torch(case, "fused", request.node.name)


SUBSET = RANDOM_CASES[::AUTOGRAD_EVERY] + CASES[len(RANDOM_CASES):]


@pytest.mark.parametrize("case", SUBSET, ids=[c.label for c in SUBSET])
def test_autograd_engine_follows_torch(case, request):
    check_against_torch(case, "autograd", request.node.name)


def test_oracle_reproduces_the_tutorial():
    """The oracle's own sanity: seed.yaml converges in 19 updates, and from the tutorial's printed
    count-1 tensor it retraces the printed losses and stops at count 20."""
    seed = yaml.safe_load((ROOT / "configs" / "seed.yaml").read_text())
    assert seed["target"] == TUTORIAL_TARGET and seed["learning_rate"] == 1.0 and seed["threshold"] == 1e-5
    problem = prepare(resolved(**seed))
    run = run_torch(seed, problem.x0, problem.target)
    assert (run.status, run.iters) == ("converged", 19)

    printed = {2: 0.053250689059495926, 3: 0.032213374972343445, 4: 0.019487105309963226, 5: 0.011788494884967804}
    run = run_torch(seed, torch.tensor(COUNT_1), problem.target)
    for count, loss in printed.items():
        assert run.losses[count - 1] == pytest.approx(loss, abs=2e-6)  # our update k is the tutorial's count k + 1
    assert (run.status, run.iters + 1) == ("converged", 20)
    assert run.losses[-1] <= 1e-5 < run.losses[-2]


HALF = [(c, ("bfloat16", "float16")[i % 2]) for i, c in enumerate(RANDOM_CASES[::9])]
HALF_IDS = [c.label.replace(f"-{c.data['dtype'].replace('float', 'f')}-", f"-{d}-") for c, d in HALF]


@pytest.mark.parametrize("case,dtype", HALF, ids=HALF_IDS)
def test_half_precision_reports_the_loss_of_its_x(case, dtype):
    """In float16 and bfloat16 a trajectory moves with every rounding, so stops are not compared;
    but the start is the start, and the reported loss is the loss of the reported x, exactly."""
    data, x0, target = concrete(case.index, dtype)
    _, got, _ = fit(engine="fused", every=1, **data)
    start = torch_loss(data["loss"])(x0, target).item()
    problems = differences(dict(data, threshold=0.0), Run("", 0, [start], x0), got, target)
    if problems:
        pytest.fail(f"{got.status} at update {got.iters}: " + "\n".join(problems), pytrace=False)


EDGES = CASES[len(RANDOM_CASES):]


@pytest.mark.parametrize("case", EDGES, ids=[c.label for c in EDGES])
def test_oracle_on_the_rules_boundaries(case):
    """The oracle's stop rules against outcomes worked out by hand (exact powers of two)."""
    run = oracle(case.index)
    assert (run.status, run.iters) == case.expected, run.losses


def features(case: Case) -> set[str]:
    """What a case exercises, read from its config mapping."""
    data = case.data
    optimizer, schedule, target = data["optimizer"], data["schedule"], data["target"]
    shape = target["random"]["shape"] if isinstance(target, dict) else list(torch.tensor(target).shape)
    settings = ",".join(f"{k}={v:g}" for k, v in optimizer.items() if k in ("momentum", "dampening"))
    found = {
        f"optimizer {optimizer['name']}{',' + settings if settings else ''}", f"loss {data['loss']['name']}",
        f"schedule {schedule['name']}", f"dtype {data['dtype']}", f"shape {'x'.join(map(str, shape))}",
        f"init {case.init}",
        "threshold 0" if case.threshold == 0 else "threshold ulps" if case.threshold is None else "threshold > 0",
        f"max_iters {'0' if data['max_iters'] == 0 else '>= 200' if data['max_iters'] >= 200 else 'some'}",
    }
    if schedule["name"] == "cosine":
        found.add(f"cosine t_max {'default' if schedule['t_max'] is None else 'set'}")
    if data["divergence_factor"] < 10:
        found.add("small divergence_factor")
    if data["patience"] is not None:
        found.add("patience")
    return found


def test_the_cases_cover_what_they_claim_and_few_are_chaotic(capsys):
    """Every option and stop rule is drawn, and the chaotic cases (the most that can be excluded) are few."""
    seen = set().union(*(features(c) for c in RANDOM_CASES))
    expected = {
        "optimizer gd", "optimizer adam", "optimizer rmsprop", "optimizer nesterov,momentum=0.5",
        "optimizer nesterov,momentum=0.9", "loss mse", "loss l1", "loss huber", "loss smooth_l1",
        "schedule constant", "schedule step", "schedule exponential", "schedule cosine", "cosine t_max default",
        "cosine t_max set", "dtype float32", "dtype float64", "init random", "init zeros", "init normal",
        "init matrix", "init =target", "init target+1ulp", "threshold 0", "threshold ulps", "threshold > 0",
        "max_iters 0", "max_iters >= 200", "small divergence_factor", "patience",
    }
    expected |= {f"optimizer momentum,momentum={m:g},dampening={d:g}" for m in (0, 0.5, 0.9) for d in (0, 0.5)}
    expected |= {f"shape {'x'.join(map(str, shape))}" for shape in SHAPES}
    assert expected <= seen, expected - seen

    outcomes = [(oracle(c.index).status, oracle(c.index).iters) for c in RANDOM_CASES]
    assert {status for status, _ in outcomes} == {"converged", "diverged", "max_iters", "stalled"}
    assert ("converged", 0) in outcomes and any(s == "converged" and k > 20 for s, k in outcomes)
    assert any(s == "diverged" and k > 0 for s, k in outcomes)

    sensitive = [c.label for c in CASES if chaotic(c.index) is not None]
    with capsys.disabled():
        print(
            f"\ntest_faithful: {len(CASES)} cases, {len(sensitive)} chaotic (the oracle's stop moves with x0 "
            f"+-{CHAOS_ULPS} ulps), {len(EXCLUDED)} excluded in this session"
        )
        for name, why in sorted(EXCLUDED.items()):
            print(f"  excluded {name}: {why}")
    assert len(sensitive) <= MAX_EXCLUDED_FRACTION * len(CASES), sensitive

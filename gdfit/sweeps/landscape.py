"""Loss landscapes: a 2-D plane through parameter space, the loss over a grid on it, and the
paths real runs take across it. Imports torch, never prints; `render.landscape_view` draws.

The plane is either two named scalar parameters of a curve fit (the others held at the first
run's fitted values), or a slice through the first run's start and end plus a random direction
orthogonal to it and of the same norm (Li et al., 2018, "Visualizing the loss landscape of neural
nets", whose filter normalisation reduces to this for models without filters). The grid is one
batched evaluation of the model: every grid point is a run of the model's leading run dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from gdfit import records
from gdfit.config import Resolved
from gdfit.config.curves import curve_text
from gdfit.errors import ConfigError, GdfitError
from gdfit.fitting.lm import Packing
from gdfit.fitting.models import ExpressionFit, Identity
from gdfit.sweeps.grid import Run

PATH_POINTS = 2000  # recorded points per path at most: longer runs are thinned evenly (last kept)
PATH_ELEMENTS = 1 << 24  # parameter values held for all paths at once at most
GRID_ELEMENTS = 1 << 23  # prediction elements evaluated at once (grid points x target elements)
MARGIN = 0.12  # of the paths' extent, on each side
FRAME_LOSS = 2.0  # a diverging path is framed while its loss is at most this x the highest start loss
# keys whose change alters the surface itself: runs drawn together must share them
SURFACE_KEYS = ("target", "loss", "model", "data", "sigma", "dtype", "device")


@dataclass(frozen=True)
class Plane:
    """Points origin + a u + b v; (a, b) are the picture's coordinates."""

    origin: torch.Tensor  # [P], float64
    u: torch.Tensor
    v: torch.Tensor
    kind: str  # "params" (two named parameters) or "slice"
    labels: tuple[str, str]

    def points(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[m, P] for coordinates a, b of shape [m]."""
        return self.origin + a[:, None] * self.u + b[:, None] * self.v

    def coords(self, points: torch.Tensor) -> torch.Tensor:
        """[m, 2]: each point's orthogonal projection onto the plane, in (a, b)."""
        d = points.to(torch.float64) - self.origin
        return torch.stack([d @ self.u / (self.u @ self.u), d @ self.v / (self.v @ self.v)], 1)


def slice_plane(start: torch.Tensor, end: torch.Tensor, seed: int) -> Plane:
    """Through `start` (0, 0) and `end` (1, 0); b along a random direction orthogonal to end -
    start and of its norm. A run that never moved gets a random first direction too."""
    start, end = start.to(torch.float64).flatten(), end.to(torch.float64).flatten()
    if start.numel() < 2:
        raise ConfigError("a landscape needs at least two fitted values; this problem has one", key="model")
    generator = torch.Generator().manual_seed(seed)
    u = end - start
    scale = float(u.norm())
    if not math.isfinite(scale):
        raise GdfitError("the first run ended at a non-finite point: no plane goes through it; "
                         "compare it against a run that stays finite first", key="--compare")
    if scale == 0:
        scale = max(float(start.norm()), 1.0) * 0.5
        u = torch.randn(start.shape, generator=generator, dtype=torch.float64)
        u *= scale / u.norm()
    v = torch.randn(start.shape, generator=generator, dtype=torch.float64)
    v -= (v @ u) / (u @ u) * u  # Gram-Schmidt, twice for rounding
    v -= (v @ u) / (u @ u) * u
    v *= u.norm() / v.norm()
    return Plane(start, u, v, "slice", ("start to end of the first run", "random direction, same norm"))


def params_plane(model: ExpressionFit, fitted: torch.Tensor, names: tuple[str, str]) -> Plane:
    """The plane of two fitted scalar parameters, the others held at `fitted`."""
    i, j = (model.names.index(n) for n in names)
    origin = fitted.to(torch.float64).flatten().clone()
    origin[i] = origin[j] = 0.0
    u, v = torch.zeros_like(origin), torch.zeros_like(origin)
    u[i], v[j] = 1.0, 1.0
    return Plane(origin, u, v, "params", names)


def pick_params(model, names: list[str] | None, source: str) -> tuple[str, str] | None:
    """The two parameters to draw (None: a slice), checked against the model's fitted ones."""
    fitted = tuple(getattr(model, "names", ()) if isinstance(model, ExpressionFit) else ())
    if names is None:
        return fitted if len(fitted) == 2 else None
    if not isinstance(model, ExpressionFit):
        raise ConfigError("--params names a curve fit's parameters; this config fits x itself (no model)",
                          source=source, key="--params")
    unknown = [n for n in names if n not in fitted]
    if unknown:
        fixed = [n for n in unknown if n in model.order]
        why = f"held fixed (vary: false): {', '.join(fixed)}; " if fixed else ""
        raise ConfigError(f"no fitted parameter {', '.join(map(repr, unknown))}: {why}the fitted parameters are "
                          f"{', '.join(fitted)}", source=source, key="--params")
    if len(names) != 2 or names[0] == names[1]:
        raise ConfigError(f"give two different parameters, as --params {','.join(fitted[:2])}", source=source,
                          key="--params")
    return names[0], names[1]


# ---------------------------------------------------------------- the loss, batched


def losses_at(problem, points: torch.Tensor) -> torch.Tensor:
    """The loss at each of `points` ([m, P] flat parameters), as the run computes it: the model
    evaluated with m runs at once (in slices that fit `GRID_ELEMENTS`), [m] in float64."""
    packing = Packing(problem.model.parameters(problem.x0.unsqueeze(0)))
    per_point = max(problem.target.numel(), 1)
    step = max(1, GRID_ELEMENTS // per_point)
    out = []
    with torch.no_grad():
        for chunk in points.split(step):
            params = packing.unpack(chunk.to(device=problem.device, dtype=problem.dtype))
            out.append(problem.loss.value(problem.model.predict(params), problem.target).to(torch.float64).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class Grid:
    """The loss at every (a[i], b[j]): `loss[j, i]`, rows along b (as an image is stored)."""

    a: torch.Tensor
    b: torch.Tensor
    loss: torch.Tensor


def evaluate(problem, plane: Plane, a_range: tuple[float, float], b_range: tuple[float, float],
             size: tuple[int, int] = (200, 200)) -> Grid:
    """The loss on a size[0] x size[1] grid over the ranges: one batched evaluation."""
    a = torch.linspace(*a_range, size[0], dtype=torch.float64)
    b = torch.linspace(*b_range, size[1], dtype=torch.float64)
    bb, aa = torch.meshgrid(b, a, indexing="ij")
    loss = losses_at(problem, plane.points(aa.flatten(), bb.flatten()))
    return Grid(a, b, loss.view(size[1], size[0]))


# ---------------------------------------------------------------- the paths


@dataclass
class Trace:
    """One run's path: its parameters at recorded updates, and how it ended."""

    label: str
    values: dict  # the --compare values that made this run
    status: str
    iters: int
    updates: list[int]  # the update number of each recorded point (0: the start)
    points: torch.Tensor  # [m, P] flat parameters, CPU, the run's dtype
    losses: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [m] the loss at each point
    coords: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))  # [m, 2] on the plane


class Recorder:
    """Every update's parameters of K runs, thinned to at most `cap` points by doubling the
    stride when full, so the kept updates stay evenly spaced (0, s, 2s, ...)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.stride = max(2, cap), 1
        self.updates: list[int] = []
        self.flats: list[torch.Tensor] = []

    def add(self, k: int, flat: torch.Tensor) -> None:
        if k % self.stride:
            return
        self.updates.append(k)
        self.flats.append(flat.detach().to("cpu", copy=True))
        if len(self.updates) > self.cap:
            self.stride *= 2
            keep = [i for i, u in enumerate(self.updates) if u % self.stride == 0]
            self.updates = [self.updates[i] for i in keep]
            self.flats = [self.flats[i] for i in keep]

    def path(self, run: int, iters: int, final: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Run `run`'s updates up to its own end, and the end itself (`final`, its last parameters)."""
        updates = [u for u in self.updates if u < iters]
        points = [self.flats[i][run] for i, u in enumerate(self.updates) if u < iters]
        return updates + [iters], torch.stack(points + [final.to("cpu")])


def label_of(values: dict) -> str:
    if not values:
        return "run"
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    return str(value)


def run_paths(runs: list[Run], should_stop: Callable[[], bool] = lambda: False, cap: int = PATH_POINTS,
              problems: dict | None = None) -> list[Trace]:
    """Every run, in batches as a sweep makes them (`sweep.plan_batches`), the host looking after
    every update to record each run's parameters."""
    from gdfit.engine.descent import prepare
    from gdfit.sweeps.batches import batch_loop, batch_runs, plan_batches

    batches, _ = plan_batches(runs, len(runs))
    traces: dict[int, Trace] = {}
    for batch in batches:
        group = [runs[i] for i in batch]
        problem = (problems or {}).get(batch[0]) or prepare(group[0].resolved)
        loop = batch_loop(problem, batch_runs(group), should_stop, sync_every=1, chunk_every=1)
        packing = Packing(loop.stepper.params)
        width = sum(packing.sizes)
        recorder = Recorder(min(cap, max(2, PATH_ELEMENTS // max(width * len(group), 1))))
        recorder.add(0, packing.pack(loop.stepper.params))
        for _ in loop.chunks():
            recorder.add(loop.k, packing.pack(loop.stepper.params))
        outcome = loop.outcome
        final = packing.pack(outcome.params)
        for j, (i, run) in enumerate(zip(batch, group)):
            status = outcome.statuses[j]
            updates, points = recorder.path(j, outcome.iters[j], final[j])
            traces[i] = Trace(label_of(run.params), dict(run.params), status, outcome.iters[j], updates, points)
        if should_stop():
            break
    return [traces[i] for i in sorted(traces)]


# ---------------------------------------------------------------- the whole picture


@dataclass
class Landscape:
    """What a renderer needs: the plane, the grid, the paths, the best point, a title."""

    plane: Plane
    grid: Grid
    traces: list[Trace]
    best: tuple[float, float, float, str]  # (a, b, loss, label) of the lowest loss on any path
    title: str
    held: dict[str, float] = field(default_factory=dict)  # parameters held at their fitted values


def frame(traces: list[Trace], plane: Plane) -> tuple[tuple[float, float], tuple[float, float]]:
    """Ranges that hold every path with a margin; a diverging path only while its loss stays
    within FRAME_LOSS x the highest start loss (it leaves the frame after that)."""
    starts = [float(t.losses[0]) for t in traces if len(t.losses) and math.isfinite(float(t.losses[0]))]
    ceiling = FRAME_LOSS * max(starts) if starts else math.inf
    shown = []
    for t in traces:
        ok = torch.isfinite(t.coords).all(1)
        if t.status == records.DIVERGED:
            ok &= torch.isfinite(t.losses) & (t.losses <= ceiling)
        shown.append(t.coords[ok])
    pts = torch.cat(shown) if shown else torch.zeros(0, 2)
    if not len(pts):
        pts = torch.zeros(1, 2, dtype=torch.float64)
    low, high = pts.min(0).values, pts.max(0).values
    span = high - low
    if plane.kind == "slice":  # u and v have one norm: keep the picture's scales equal
        side = float(span.max()) or 1.0
        span = torch.tensor([side, side], dtype=torch.float64)
        centre = (low + high) / 2
        low, high = centre - side / 2, centre + side / 2
    else:
        for d in range(2):
            if span[d] == 0:
                span[d] = abs(float(low[d])) * 0.2 or 1.0
                low[d], high[d] = low[d] - span[d] / 2, high[d] + span[d] / 2
    low, high = low - MARGIN * span, high + MARGIN * span
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def build(runs: list[Run], params: list[str] | None = None, size: tuple[int, int] = (200, 200),
          should_stop: Callable[[], bool] = lambda: False, cap: int = PATH_POINTS) -> Landscape:
    """Run every variant, choose the plane from the first, and evaluate the grid over the paths."""
    from gdfit.engine.descent import prepare

    check_same_surface(runs)
    first_run = runs[0].resolved
    problem = prepare(first_run)
    names = pick_params(problem.model, params, first_run.source)
    traces = run_paths(runs, should_stop, cap, {0: problem})
    first = traces[0]
    held: dict[str, float] = {}
    if names is None:
        plane = slice_plane(first.points[0], first.points[-1], first_run.config.seed)
    else:
        plane = params_plane(problem.model, first.points[-1], names)
        held = {n: v for n, v in problem.model.named(first.points[-1]).items() if n not in names}
    for trace in traces:
        trace.losses = losses_at(problem, trace.points)
        trace.coords = plane.coords(trace.points)
    a_range, b_range = frame(traces, plane)
    grid = evaluate(problem, plane, a_range, b_range, size)
    return Landscape(plane, grid, traces, best_point(traces), _title(problem, first_run), held)


def check_same_surface(runs: list[Run]) -> None:
    """Runs drawn on one surface must share what makes it (SURFACE_KEYS)."""
    for key in {k for run in runs for k in run.params}:
        if key.split(".")[0] in SURFACE_KEYS:
            raise ConfigError(f"runs drawn together share one loss surface; comparing {key.split('.')[0]} would "
                              f"change the surface itself (compare optimizer, learning_rate, seed, init, ...)",
                              source="--compare", key=key)


def best_point(traces: list[Trace]) -> tuple[float, float, float, str]:
    best = (math.nan, math.nan, math.inf, "")
    for t in traces:
        finite = torch.isfinite(t.losses) & torch.isfinite(t.coords).all(1)
        if finite.any():
            i = int(torch.where(finite, t.losses, torch.full_like(t.losses, math.inf)).argmin())
            if float(t.losses[i]) < best[2]:
                best = (float(t.coords[i, 0]), float(t.coords[i, 1]), float(t.losses[i]), t.label)
    return best


def _title(problem, resolved: Resolved) -> str:
    config = resolved.config
    model = problem.model
    if isinstance(model, ExpressionFit):
        what = "; ".join(d.model.expr for d in config.datasets) if config.datasets else curve_text(config.model.model_dump(mode="json"))
    elif isinstance(model, Identity):
        what = f"x fitted to a {'x'.join(map(str, problem.target.shape)) or 'scalar'} target"
    else:
        what = "model"
    return f"{config.loss.name} loss of {what}"

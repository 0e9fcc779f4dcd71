"""Matrix models: low-rank factorization (and completion) U V^T, and linear least squares inputs @ W (+ b).

Both keep their parameters packed in one start tensor [K, P] (U then V, or W then b) and hand
the loop views of it, so every optimizer, checkpoints and sweeps see plain named parameters.

- `lowrank`: U [m, r] and V [n, r] start balanced and small: every entry N(0, s^2) from `seed`,
  with s^2 = INIT_SHARE * rms(target) / sqrt(r), so that U V^T starts at 1% of the target's RMS
  (its entries have standard deviation s^2 sqrt(r)). `l2` is lambda in
  sum_observed (U V^T - T)^2 + lambda (|U|_F^2 + |V|_F^2), the whole divided by the number of
  fitted entries (as mse's mean is): its minimum is the target's SVD truncated to rank r with each
  singular value shrunk by lambda (soft-thresholding), for a complete target and mse.
- `linear`: W [d, k] (W [d] for a vector target) and b [k] start at 0 (the problem is convex).
"""

from __future__ import annotations

import math
from typing import Any

from gdfit.lazy import torch

from gdfit.config import LinearModel, LowRankModel, Resolved
from gdfit.errors import ConfigError, InputFileError
from gdfit.fitting.losses import Loss, make_loss, rounded
from gdfit.fitting.models import Params
from gdfit.fitting.optimizers import Setting
from gdfit.fitting.steppers import ClosedForm, _norm, motion, objective
from gdfit.fitting.observed import Entries, MaskedLoss, fill_missing, rms, split

INIT_SHARE = 0.01  # U V^T starts with this share of the target's RMS
EXACT_SVD_LIMIT = 2_000_000_000  # m n min(m, n): above it the target's singular values are estimated


class MatrixModel:
    """What lowrank and linear share: packed parameters, the split of entries, held-out RMSE."""

    names: tuple[str, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()
    entries: Entries

    @property
    def size(self) -> int:
        """Parameters per run, P."""
        return sum(math.prod(shape) for shape in self.shapes)

    def parameters(self, start: torch.Tensor) -> Params:
        """Views of the packed starts [K, P] (or of one run's start [P]) as named parameters."""
        params, offset = {}, 0
        lead = start.shape[:-1]
        for name, shape in zip(self.names, self.shapes):
            width = math.prod(shape)
            params[name] = start[..., offset : offset + width].view(*lead, *shape)
            offset += width
        return params

    def start_of(self, params: Params) -> torch.Tensor:
        """The packed starts [K, P] that `parameters` turns into these parameters."""
        return torch.cat([params[name].reshape(params[name].shape[0], -1) for name in self.names], 1)

    def start(self, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """One run's packed start [P]: zeros (linear); lowrank draws it from `seed`."""
        return torch.zeros(self.size, dtype=dtype, device=device)

    def constrain_(self, params: Params) -> None:
        """No bounds."""

    def penalty(self, params: Params) -> torch.Tensor | None:
        """A regulariser's value per run [K], added to the loss; None when there is none."""
        return None

    def holdout_rmse(self, params: Params) -> float | None:
        """Run 0's RMSE on the held-out entries (params without the run dimension)."""
        if self.entries.held is None:
            return None
        return self.entries.rmse(self.at(self._batched(params), self.entries.held)[0])

    def at(self, params: Params, index: torch.Tensor) -> torch.Tensor:
        """The prediction at flat entry indices only, [K, len(index)]."""
        return self.predict(params).flatten(1)[:, index]

    @staticmethod
    def _batched(params: Params) -> Params:
        return {name: p.unsqueeze(0) for name, p in params.items()}

    def named_tensors(self, params: Params) -> dict[str, torch.Tensor]:
        """One run's parameters by name and its prediction, for --save."""
        batched = self._batched(params)
        return {**{name: p.detach() for name, p in params.items()}, "prediction": self.predict(batched)[0].detach()}


class LowRank(MatrixModel):
    """The prediction U @ V^T for K runs: U [K, m, r], V [K, n, r]."""

    names = ("U", "V")

    def __init__(self, shape: tuple[int, int], rank: int, l2: float, entries: Entries, scale: float) -> None:
        self.m, self.n = shape
        self.rank, self.l2, self.entries, self.scale = rank, l2, entries, scale
        self.shapes = ((self.m, rank), (self.n, rank))

    def start(self, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """U then V, packed: N(0, scale^2) from `seed`, drawn on the CPU (the same on every device)."""
        drawn = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(self.size, generator=gen, dtype=drawn) * self.scale).to(device=device, dtype=dtype)

    def penalty_residuals(self, flat: torch.Tensor) -> torch.Tensor | None:
        """sqrt(lambda) x the packed parameters: least squares' view of the l2 term (for lm)."""
        return flat * math.sqrt(self.l2) if self.l2 else None

    def predict(self, params: Params) -> torch.Tensor:
        return torch.matmul(params["U"], params["V"].mT)

    def prediction_jacobian(self, flat: torch.Tensor) -> torch.Tensor:
        """d (U V^T).flatten() / d (U, V) packed, [K, m n, P], written from U and V: entry (i, j)
        has V[j] in U[i]'s columns and U[i] in V[j]'s, and zeros elsewhere (what forward-mode
        autograd finds one column at a time, at P products of U V^T)."""
        params = self.parameters(flat)
        U, V = params["U"], params["V"]
        K, (m, n, r) = flat.shape[0], (self.m, self.n, self.rank)
        by_U = torch.einsum("Kjk,il->Kijlk", V, torch.eye(m, dtype=flat.dtype, device=flat.device))
        by_V = torch.einsum("Kik,jl->Kijlk", U, torch.eye(n, dtype=flat.dtype, device=flat.device))
        return torch.cat([by_U.reshape(K, m * n, m * r), by_V.reshape(K, m * n, n * r)], 2)

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        # what autograd's matmul backward computes for U @ V.mT: G @ V, and (U^T G)^T for V
        U, V = params["U"], params["V"]
        grads = {"U": torch.matmul(grad_of_prediction, V), "V": torch.matmul(U.mT, grad_of_prediction).mT}
        if self.l2:
            factor = 2 * self.l2 / self.entries.fitted_count
            grads = {name: g.add(params[name], alpha=factor) for name, g in grads.items()}
        return grads

    def penalty(self, params: Params) -> torch.Tensor | None:
        if not self.l2:
            return None
        squares = sum(params[name].square().flatten(1).sum(1) for name in self.names)
        return squares * (self.l2 / self.entries.fitted_count)

    def at(self, params: Params, index: torch.Tensor) -> torch.Tensor:
        # sum_r U[i, r] V[j, r] for the listed entries only: no m x n product
        rows, cols = index // self.n, index % self.n
        return (params["U"][:, rows] * params["V"][:, cols]).sum(-1)

    def singular_values(self, params: Params) -> list[float]:
        """The fitted U V^T's r singular values, from the r x r core of its QR factors (float64)."""
        U, V = params["U"].double(), params["V"].double()
        _, ru = torch.linalg.qr(U)
        _, rv = torch.linalg.qr(V)
        return torch.linalg.svdvals(ru @ rv.mT).tolist()


class Linear(MatrixModel):
    """The prediction inputs @ W (+ b) for K runs: inputs [N, d], W [K, d, k], b [K, 1, k] (a row,
    so that every parameter has the same rank and per-run settings broadcast alike)."""

    def __init__(self, inputs: torch.Tensor, outputs: int, bias: bool, vector: bool, entries: Entries) -> None:
        self.inputs, self.outputs, self.bias, self.vector, self.entries = inputs, outputs, bias, vector, entries
        d = inputs.shape[1]
        self.names = ("W", "b") if bias else ("W",)
        self.shapes = ((d, outputs), (1, outputs)) if bias else ((d, outputs),)

    def predict(self, params: Params) -> torch.Tensor:
        pred = torch.matmul(self.inputs, params["W"])
        if self.bias:
            pred = pred + params["b"]
        return pred.squeeze(-1) if self.vector else pred

    def parameter_grads(self, params: Params, grad_of_prediction: torch.Tensor) -> Params:
        G = grad_of_prediction.unsqueeze(-1) if self.vector else grad_of_prediction
        grads = {"W": torch.matmul(self.inputs.mT, G)}
        if self.bias:
            grads["b"] = G.sum(-2, keepdim=True)
        return grads

    def named_tensors(self, params: Params) -> dict[str, torch.Tensor]:
        named = super().named_tensors(params)
        if self.bias:
            named["b"] = named["b"].squeeze(0)  # b [k]
        if self.vector:  # a vector target has a vector of weights and one bias
            named["W"] = named["W"].squeeze(-1)
            if self.bias:
                named["b"] = named["b"].squeeze(-1)
        return named

    def advice(self) -> dict[str, float] | None:
        """mse's curvature, exactly: the Hessian in each column of W (and b) is (2/n) A^T A with
        A = inputs (and a column of ones), so its largest eigenvalue is 2 sigma_max(A)^2 / n."""
        if self.entries.fitted is not None:
            return None  # missing entries: each column has its own rows; the power iteration decides
        A = self.inputs.double()
        if self.bias:
            A = torch.cat([A, torch.ones(A.shape[0], 1, dtype=A.dtype, device=A.device)], 1)
        sigma = float(torch.linalg.matrix_norm(A, ord=2))
        return {"curvature": 2 * sigma**2 / self.entries.total, "exact": True}


class LowRankOnMse(ClosedForm):
    """lowrank on a complete target with mse, for any optimizer: the operations of `ClosedForm`
    (so the same numbers, bit for bit), written into two m x n buffers kept from update to update.
    A fresh m x n tensor is fresh memory from the OS, zeroed page by page: at 4096^2, three of
    them an update cost as much as a matrix product."""

    def __init__(self, model: LowRank, loss: Loss, target: torch.Tensor, params: Params, optimizer, track: bool) -> None:
        super().__init__(model, loss, target, params, optimizer, track)
        shape = (next(iter(params.values())).shape[0], model.m, model.n)
        self.work = torch.empty(shape, dtype=target.dtype, device=target.device)  # U V^T, then the squares
        self.residual = torch.empty_like(self.work)  # U V^T - T, then mse's gradient in place
        self.scale = rounded(2.0 / loss.numel, target.dtype)
        self.fresh = False  # `residual` belongs to the current parameters

    def losses(self) -> torch.Tensor:
        torch.matmul(self.params["U"], self.params["V"].mT, out=self.work)
        torch.sub(self.work, self.target, out=self.residual)
        torch.mul(self.residual, self.residual, out=self.work)  # F.mse_loss's (x - t)^2
        self.fresh = True
        return objective(self.model, self.work.flatten(1).mean(1), self.params)

    def _grad_of_prediction(self) -> torch.Tensor:
        if not self.fresh:
            self.losses()
        self.fresh = False
        return self.residual.mul_(self.scale)  # mse_loss_backward: (x - t) * 2/n


class AlternatingLeastSquares(ClosedForm):
    """`optimizer: als` for lowrank on mse: each update solves for U with V fixed, then for V with
    U fixed (Spark MLlib's ALS). Each half-step is an exact least-squares solve
    (torch.linalg.lstsq), over the fitted entries of each row (or column) only where some are
    missing, with l2's lambda |U|^2 as r rows sqrt(lambda) I below the fixed factor. Neither half
    can raise the objective, so the loss never rises. No learning rate; the gradient reported (and
    read by gtol) is the one where the update ends."""

    def __init__(self, model: LowRank, loss: Loss, target: torch.Tensor, params: Params, track: bool) -> None:
        super().__init__(model, loss, target, params, optimizer=None, track=track)
        self.fitted = model.entries.fitted  # bool [m, n] or None (every entry fitted)
        self.ridge = math.sqrt(model.l2)

    def advance(self, k: int, lr: Setting, moving: torch.Tensor | None) -> torch.Tensor:
        U, V = self.params["U"], self.params["V"]
        kept = {n: p.clone() for n, p in self.params.items()} if moving is not None else None
        before = {n: p.clone() for n, p in self.params.items()} if self.track else None
        U.copy_(self._solve(V, self.target, self.fitted))
        V.copy_(self._solve(U, self.target.mT, None if self.fitted is None else self.fitted.mT))
        if kept is not None:
            for name, p in self.params.items():
                p.copy_(torch.where(moving, p, kept[name]))
        self.grads = {}
        if before is not None:
            self.motion = motion(before, self.params, self._gradient())
        return self.losses()

    def _solve(self, fixed: torch.Tensor, target: torch.Tensor, fitted: torch.Tensor | None) -> torch.Tensor:
        """argmin_G sum over fitted (i, j) of (G[i] . F[j] - T[i, j])^2 + lambda |G|^2, for F = `fixed`
        [K, b, r] and T = `target` [a, b]: G [K, a, r]."""
        K, b, r = fixed.shape
        a = target.shape[0]
        if fitted is None:  # one design for every row: T^T = F G^T
            design, rhs = fixed, target.mT.expand(K, b, a)
        else:  # row i's own design: F with the rows of its missing entries zeroed
            weight = fitted.to(fixed.dtype)
            design = weight[None, :, :, None] * fixed[:, None]  # [K, a, b, r]
            rhs = (weight * target).expand(K, a, b)[..., None]  # [K, a, b, 1]
        if self.ridge:
            eye = torch.eye(r, dtype=fixed.dtype, device=fixed.device) * self.ridge
            design = torch.cat([design, eye.expand(*design.shape[:-2], r, r)], -2)
            rhs = torch.cat([rhs, rhs.new_zeros(*rhs.shape[:-2], r, rhs.shape[-1])], -2)
        solution = torch.linalg.lstsq(design, rhs).solution
        return solution.mT if fitted is None else solution[..., 0]

    def _gradient(self) -> Params:
        if not self.grads:
            self.grads = self.model.parameter_grads(self.params, self.loss.grad(self.model.predict(self.params), self.target))
        return self.grads

    def grad_norm(self) -> torch.Tensor:
        return _norm(self._gradient())


# ---------------------------------------------------------------- building


def build_matrix_problem(resolved: Resolved, dtype: torch.dtype, device: torch.device
                         ) -> tuple[MatrixModel, torch.Tensor, torch.Tensor, Loss, float]:
    """The model, the target (missing entries as 0), the packed start, the loss over the fitted
    entries, and the run's working set in target-sized copies (for the memory guard)."""
    from gdfit.files.tensors import build_target, guard_memory

    config = resolved.config
    spec = config.model
    raw = build_target(resolved, dtype, device, 1, missing_ok=True)
    build = lambda s, role: _tensor(resolved, s, role, dtype, device)  # noqa: E731
    entries = split(resolved, raw, build)
    loss = make_loss(config.loss, entries.fitted_count)
    if entries.fitted is not None:
        loss = MaskedLoss(loss, entries.fitted)
    target = fill_missing(raw)
    if isinstance(spec, LowRankModel):
        model = _lowrank(resolved, spec, target, entries)
    else:
        model = _linear(resolved, spec, target, entries, build)
    start = model.start(config.seed, dtype, device)
    copies = working_copies(config, loss, target.numel(), model)
    guard_memory(target.numel(), dtype, device, copies, f"model {spec.name} on a target of shape {list(target.shape)}")
    return model, target, start, loss, copies


def _tensor(resolved: Resolved, spec: Any, role: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor spec other than the target (inputs, mask): no missing entries."""
    from gdfit.config import FileSource, RandomSource
    from gdfit.files.tensors import build_inline, load_tensor_file

    if isinstance(spec, FileSource):
        return load_tensor_file(resolved.resolve_path(spec.file), role, dtype, device, 1).to(device=device, dtype=dtype)
    if isinstance(spec, RandomSource):
        gen = torch.Generator().manual_seed(spec.random.seed)
        data = torch.rand(tuple(spec.random.shape), generator=gen, dtype=torch.float64)
        return (data * (spec.random.high - spec.random.low) + spec.random.low).to(device=device, dtype=dtype)
    return build_inline(spec, dtype, device, 1, role)


def _lowrank(resolved: Resolved, spec: LowRankModel, target: torch.Tensor, entries: Entries) -> LowRank:
    if target.dim() != 2:
        raise ConfigError(f"lowrank needs a matrix target (2 dimensions), got shape {list(target.shape)}",
                          source=resolved.source, key="target")
    m, n = target.shape
    if spec.rank > min(m, n):
        raise ConfigError(f"rank {spec.rank} is larger than min(m, n) = {min(m, n)} for the target of shape [{m}, {n}]: "
                          f"U V^T has rank at most {min(m, n)}", source=resolved.source, key="model.rank")
    scale = math.sqrt(INIT_SHARE * rms(target, entries.fitted) / math.sqrt(spec.rank))
    return LowRank((m, n), spec.rank, spec.l2, entries, scale)


def _linear(resolved: Resolved, spec: LinearModel, target: torch.Tensor, entries: Entries, build) -> Linear:
    inputs = build(spec.inputs, "model.inputs")
    shown = list(inputs.shape)
    if inputs.dim() == 1:
        inputs = inputs.unsqueeze(1)  # one input variable
    if inputs.dim() != 2 or target.dim() not in (1, 2):
        raise ConfigError(f"linear needs inputs [N, d] and a target [N] or [N, k]; got inputs of shape {shown} and a "
                          f"target of shape {list(target.shape)}", source=resolved.source, key="model.inputs")
    if inputs.shape[0] != target.shape[0]:
        raise ConfigError(f"inputs have shape {shown} but the target has shape {list(target.shape)}: they need the "
                          f"same number of rows (the prediction inputs @ W has one row per input row)",
                          source=resolved.source, key="model.inputs")
    if not bool(torch.isfinite(inputs).all()):
        raise InputFileError("inputs hold NaN or infinite values; only the target may have missing entries",
                             source=resolved.source, key="model.inputs")
    vector = target.dim() == 1
    return Linear(inputs, 1 if vector else target.shape[1], spec.bias, vector, entries)


def working_copies(config, loss: Loss, numel: int, model: MatrixModel) -> float:
    """One run's peak working set in target-sized tensors: the target, the prediction, its
    gradient and the loss's temporaries; the autograd engine's graph keeps one more. Parameters
    count by their size: themselves, their gradient, the optimizer's state, a copy to hold a
    stopped run still, and two for xtol's step."""
    from gdfit.config import ALS, LBFGS, LM
    from gdfit.fitting.optimizers import make_optimizer

    target_sized = 3 + loss.temporaries + (1 if config.engine == "autograd" else 0)  # LowRankOnMse: 3
    if isinstance(config.optimizer, LBFGS):
        state = 2 * config.optimizer.history_size + 2
    elif isinstance(config.optimizer, LM):
        state = 8
    elif isinstance(config.optimizer, ALS):  # per row, a copy of the fixed factor (below)
        state = 0
        target_sized += 0 if model.entries.fitted is None else getattr(model, "rank", 1)
    else:
        state = make_optimizer(config.optimizer).state_copies()
    tracked = 2 if config.xtol is not None or config.gtol is not None else 0
    param_sized = 3 + state + tracked
    inputs = model.inputs.numel() if isinstance(model, Linear) else 0
    return target_sized + (param_sized * model.size + inputs) / numel


# ---------------------------------------------------------------- advice and results


def lowrank_advice(model: LowRank, target: torch.Tensor) -> dict[str, float]:
    """mse's largest curvature where the fit ends (U V^T the target's leading SVD, U and V
    balanced): the direction (u1, v1) has curvature (2/n) 2 sigma_1, with sigma_1 that of the
    fitted entries (missing ones as 0), plus l2's 2 lambda / n. From the small start the
    curvature is about half of it, and grows as the fit does; gd needs lr below 2 / the end's."""
    keep = model.entries.fitted
    values = target if keep is None else torch.where(keep, target, torch.zeros_like(target))
    sigma = _largest_singular_value(values)
    count = model.entries.fitted_count
    return {"curvature": (4 * sigma + 2 * model.l2) / count, "exact": False}


def _largest_singular_value(matrix: torch.Tensor, iterations: int = 100, rtol: float = 1e-6) -> float:
    if matrix.numel() <= 1_000_000:
        return float(torch.linalg.matrix_norm(matrix.double(), ord=2))
    work = torch.promote_types(matrix.dtype, torch.float32)
    A = matrix.to(work)
    v = torch.rand(A.shape[1], generator=torch.Generator().manual_seed(0), dtype=work).to(A.device) + 0.5
    estimate = 0.0
    for _ in range(iterations):  # power iteration on A^T A
        v = A.mT @ (A @ v)
        norm = float(torch.linalg.vector_norm(v))
        if norm == 0.0:
            return 0.0
        v /= norm
        if abs(math.sqrt(norm) - estimate) <= rtol * math.sqrt(norm):
            break
        estimate = math.sqrt(norm)
    return math.sqrt(norm)


def summary(model: MatrixModel, params: Params, target: torch.Tensor) -> dict[str, Any]:
    """The end's report for one run (params without the run dimension): the split of entries,
    the held-out RMSE, and for lowrank on a complete target the singular values, fitted and the
    target's leading ones."""
    report: dict[str, Any] = model.entries.describe()
    report["holdout_rmse"] = model.holdout_rmse(params)
    if isinstance(model, LowRank) and model.entries.complete:
        fitted = model.singular_values(params)
        leading, method = _leading_singular_values(target, model.rank)
        report["singular_values"] = {"fitted": fitted, "target": leading, "method": method}
    return report


def _leading_singular_values(target: torch.Tensor, r: int) -> tuple[list[float], str]:
    m, n = target.shape
    if m * n * min(m, n) <= EXACT_SVD_LIMIT:
        return torch.linalg.svdvals(target.double())[:r].tolist(), "exact"
    q = min(r + 10, min(m, n))
    _, s, _ = torch.svd_lowrank(target.float(), q=q, niter=4)
    return s[:r].double().tolist(), "randomized (torch.svd_lowrank)"

"""Matrix models: the low-rank update's cost against the three products it needs, and the oracles.

usage: python -m benchmarks.matrix [--rounds N] [--size M] [--rank R] [--updates U]   (prints a markdown table)

- Low rank: gdfit's per-update time (gd, mse, the fused engine, through `Loop`) on a random M x M
  float32 target at rank R, against the time of the three matrix products one update needs
  (U V^T, G V and G^T U), timed in the same interleaved rounds (benchmarks/run.py's house style:
  one warm-up round, then baseline, ours, baseline, ours, ...; medians and the spread of the
  per-round ratios). Goal: at most 1.5x.
- Oracles, printed and asserted (also in tests/fitting/test_matrix.py): lowrank's final loss on a rank-5 plus
  noise 300 x 200 float64 matrix against the truncated SVD's (Eckart-Young, 1e-6 relative);
  linear against torch.linalg.lstsq (1e-8); completion of a rank-3 200 x 150 matrix with 40%
  observed and noise 0.01: held-out RMSE at most 3 sigma.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.run import Row, interleave, row
from gdfit.engine.advisor import advise
from gdfit.config import build_config
from gdfit.engine.descent import Descent, make_stepper, prepare


def resolved(**data):
    return build_config({"device": "cpu", **data}, source="benchmark", base_dir=Path("."))


def lowrank_update(size: int, rank: int, updates: int, rounds: int) -> Row:
    problem = prepare(resolved(target={"random": {"shape": [size, size], "seed": 0}}, model={"name": "lowrank", "rank": rank},
                               learning_rate=1.0, ftol=None, xtol=None))
    stepper = make_stepper(problem, problem.x0.unsqueeze(0))
    stepper.losses()
    lr = advise(problem.loss, problem.x0, problem.target, problem.model)["suggested_lr"]
    U, V = (p.clone() for p in stepper.params.values())
    G = torch.empty(1, size, size)

    def products() -> float:
        started = time.perf_counter()
        for _ in range(updates):
            torch.matmul(U, V.mT, out=G)
            torch.matmul(G, V)
            torch.matmul(U.mT, G)
        return (time.perf_counter() - started) / updates

    k = [0]

    def gdfit_updates() -> float:
        started = time.perf_counter()
        for _ in range(updates):
            k[0] += 1
            stepper.advance(k[0], lr, None)
        return (time.perf_counter() - started) / updates

    times = interleave({"products": products, "gdfit": gdfit_updates}, rounds)
    return row(times, f"low rank {size}x{size}, rank {rank}: one gd update", "gdfit", "products",
               "the 3 products (U V^T, G V, G^T U)", "<= 1.5x", unit="ms")


def eckart_young() -> tuple[float, str]:
    from tests.test_matrix import noisy_low_rank

    target = noisy_low_rank(300, 200, 5, 0.1)
    best = float(torch.linalg.svdvals(target)[5:].square().sum()) / target.numel()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.npy"
        np.save(path, target.numpy())
        data = dict(target={"file": str(path)}, model={"name": "lowrank", "rank": 5}, dtype="float64", max_iters=5000)
        problem = prepare(resolved(**data))
        lr = advise(problem.loss, problem.x0, problem.target, problem.model)["suggested_lr"]
        result = _run(resolved(learning_rate=lr, **data))
    error = abs(result.loss - best) / best
    return error, f"lowrank rank 5 on 300x200 float64: loss {result.loss:.12g} vs truncated SVD {best:.12g}: " \
                  f"relative {error:.2e} after {result.iters} updates ({result.status})"


def lstsq() -> tuple[float, str]:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(200, 5, generator=g, dtype=torch.float64)
    B = A @ torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.7 + 0.1 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    solution = torch.linalg.lstsq(torch.cat([A, torch.ones(200, 1, dtype=A.dtype)], 1), B).solution
    data = dict(target=B.tolist(), model={"name": "linear", "inputs": A.tolist(), "bias": True}, dtype="float64",
                max_iters=5000, ftol=None, xtol=None, gtol=1e-13)
    problem = prepare(resolved(**data))
    lr = advise(problem.loss, problem.x0, problem.target, problem.model)["suggested_lr"]
    descent = Descent(prepare(resolved(learning_rate=lr, **data)), report=lambda k: False)
    list(descent.steps())
    fitted = torch.cat([descent.final_params["W"], descent.final_params["b"]], 0)
    error = float((fitted - solution).abs().max())
    return error, f"linear (gd, bias) vs torch.linalg.lstsq, float64: max |difference| {error:.2e} " \
                  f"after {descent.result.iters} updates"


def completion() -> tuple[float, str]:
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 150, generator=g, dtype=torch.float64)
    noisy = truth + 0.01 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    hidden = torch.rand(truth.shape, generator=g, dtype=torch.float64) >= 0.4
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.npy"
        np.save(path, noisy.masked_fill(hidden, math.nan).numpy())
        data = dict(target={"file": str(path)}, model={"name": "lowrank", "rank": 3}, dtype="float64", holdout=0.2,
                    max_iters=3000)
        problem = prepare(resolved(**data))
        lr = advise(problem.loss, problem.x0, problem.target, problem.model)["suggested_lr"]
        result = _run(resolved(learning_rate=lr, **data))
    rmse = result.matrix["holdout_rmse"]
    return rmse, f"completion rank 3, 200x150, {result.matrix['observed']} observed (40%), sigma 0.01: held-out " \
                 f"RMSE {rmse:.4g} over {result.matrix['held_out']} entries (3 sigma = 0.03), {result.iters} updates"


def _run(config):
    descent = Descent(prepare(config), report=lambda k: False)
    list(descent.steps())
    return descent.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--updates", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
          file=sys.stderr)
    figure = lowrank_update(args.size, args.rank, args.updates, args.rounds)
    print("| measure | gdfit | baseline | baseline time | ratio | spread | goal | met |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {figure.measure} | {figure.ours} | {figure.baseline} | {figure.baseline_time} | {figure.ratio:.2f}x | "
          f"{figure.spread:.0%} | {figure.goal} | {figure.met()} |")
    failures = []
    for name, (value, text), bound in (("Eckart-Young", eckart_young(), 1e-6), ("lstsq", lstsq(), 1e-8),
                                       ("completion", completion(), 0.03)):
        print(f"- {text}: {'ok' if value <= bound else 'FAILED'}")
        if value > bound:
            failures.append(name)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

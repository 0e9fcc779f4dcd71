"""gdfit on the NIST StRD suite: each problem from both starts, through the engine in one process.

    python -m benchmarks.nist_fit [--optimizer lm] [--only Misra1a,...] [--brief] [--torch-lbfgs]

Prints, per fit, the LRE (correct significant digits) of the values, standard errors and RSS, and
a summary: fits with at least 4 digits in all of them, and the median LRE.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import nist


def gdfit_fit(problem: nist.NistProblem, start: int, folder: Path, **overrides: Any) -> dict[str, Any]:
    """One fit through gdfit's config and engine: values, stderr, RSS, status and updates."""
    from gdfit.config import build_config
    from gdfit.engine.descent import Descent, prepare

    csv_path = folder / f"{problem.name}.csv"
    if not csv_path.exists():
        nist.write_csv(problem, csv_path)
    raw = nist.config_for(problem, start, csv_path.name, **overrides)
    resolved = build_config(raw, source=str(folder / f"{problem.name}.yaml"), base_dir=folder)
    descent = Descent(prepare(resolved), report=lambda k: False, report_last=False, advice=False)
    for _ in descent.steps():
        pass
    result = descent.result
    names = problem.params
    return {
        "values": [result.params[n]["value"] for n in names],
        "stderr": [result.params[n]["stderr"] for n in names],
        "rss": result.fit["rss"],
        "status": result.status,
        "iters": result.iters,
        "stop_rule": result.stop_rule,
    }


def torch_lbfgs_fit(problem: nist.NistProblem, start: int, folder: Path, max_steps: int = 1000,
                    options: dict[str, float] | None = None) -> dict[str, Any]:
    """torch.optim.LBFGS itself (strong-Wolfe line search, torch's defaults: max_iter 20 per step,
    history 100, tolerance_grad 1e-7, tolerance_change 1e-9) on the mean squared residual, its
    step() called until the loss stops changing or max_steps; standard errors from the Jacobian
    at the end, as for scipy's fits (nist.standard_errors). The model is gdfit's torch form of the
    problem's expression; the optimizer and its stopping are torch's own."""
    import numpy as np
    import torch

    from gdfit.config import build_config
    from gdfit.engine.descent import prepare

    csv_path = folder / f"{problem.name}.csv"
    if not csv_path.exists():
        nist.write_csv(problem, csv_path)
    raw = nist.config_for(problem, start, csv_path.name)
    prepared = prepare(build_config(raw, source=str(folder / f"{problem.name}.yaml"), base_dir=folder))
    model, target = prepared.model, prepared.target
    theta = prepared.x0.clone().unsqueeze(0).requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], line_search_fn="strong_wolfe", history_size=100, **(options or {}))

    def closure():
        optimizer.zero_grad()
        value = torch.nn.functional.mse_loss(model.curve(theta)[0], target)
        value.backward()
        return value

    previous, steps = None, 0
    for steps in range(1, max_steps + 1):
        loss = float(optimizer.step(closure))
        if previous is not None and (loss == previous or not np.isfinite(loss)):
            break
        previous = loss
    final = theta.detach()[0].numpy().copy()
    residuals = problem.residuals(final)
    rss = float(residuals @ residuals)
    _, J = model.host(torch.float64).predict_and_jacobian(final[None])
    stderr = nist.standard_errors(np.asarray(J[0]), rss, problem.dof)
    return {"values": [float(v) for v in final], "stderr": [float(e) for e in stderr], "rss": rss,
            "status": "ended", "iters": steps, "stop_rule": "torch.optim.LBFGS: the loss stopped changing"}


def suite_time(fit_one, problems) -> float:
    began = time.perf_counter()
    for problem in problems:
        for start in (1, 2):
            fit_one(problem, start)
    return time.perf_counter() - began


def timing(problems, rounds: int) -> None:
    """The whole suite with lm against scipy's least_squares(method="lm") (its default
    finite-difference Jacobian), in interleaved rounds: median and spread of each, and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        ours = lambda p, s: gdfit_fit(p, s, Path(tmp))  # noqa: E731
        theirs = lambda p, s: nist.scipy_fit(p, s)  # noqa: E731
        ours(problems[0], 1)  # first-call costs (imports) are not the suite's, on either side
        theirs(problems[0], 1)
        gd, sp = [], []
        for _ in range(rounds):
            gd.append(suite_time(ours, problems))
            sp.append(suite_time(theirs, problems))
    ratios = [a / b for a, b in zip(gd, sp)]
    print(f"suite of {2 * len(problems)} fits, {rounds} interleaved rounds: gdfit lm {statistics.median(gd):.3f} s "
          f"[{min(gd):.3f}-{max(gd):.3f}], scipy least_squares lm {statistics.median(sp):.3f} s "
          f"[{min(sp):.3f}-{max(sp):.3f}]; ratio {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="lm")
    parser.add_argument("--only", default="")
    parser.add_argument("--max-iters", type=int, default=None)
    parser.add_argument("--brief", action="store_true", help="one line per fit, without the values beside NIST's")
    parser.add_argument("--set", action="append", default=[], help="KEY=NUMBER, e.g. ftol=1e-12")
    parser.add_argument("--time", type=int, default=0, metavar="ROUNDS", help="time the suite against scipy instead")
    parser.add_argument("--torch-lbfgs", action="store_true",
                        help="fit with torch.optim.LBFGS itself (strong Wolfe, torch's defaults), not through gdfit")
    args = parser.parse_args(argv)
    problems = [p for p in nist.load_all() if not args.only or p.name in args.only.split(",")]
    if args.time:
        timing(problems, args.time)
        return
    overrides: dict[str, Any] = {"optimizer": args.optimizer}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = float(value)
    if args.max_iters is not None:
        overrides["max_iters"] = args.max_iters
    lres, good = [], 0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for problem in problems:
            for start in (1, 2):
                fit = (torch_lbfgs_fit(problem, start, Path(tmp)) if args.torch_lbfgs
                       else gdfit_fit(problem, start, Path(tmp), **overrides))
                s = nist.score(fit["values"], fit["stderr"], fit["rss"], problem)
                lres.append(s["min"])
                good += s["ok4"]
                mark = "ok " if s["ok4"] else "BAD"
                print(f"{mark} {problem.name:9s} start {start}: values {s['lre_values']:5.2f} stderr {s['lre_stderr']:5.2f} "
                      f"rss {s['lre_rss']:5.2f}  {fit['status']} after {fit['iters']} ({fit['stop_rule']})")
                if not args.brief:
                    for name, v, e, cv, ce in zip(problem.params, fit["values"], fit["stderr"], problem.certified,
                                                   problem.certified_stderr):
                        stderr = "none" if e is None else f"{e:.6e}"  # a fit that did not converge has none
                        print(f"      {name}: {v:.10e} ± {stderr}   certified {cv:.10e} ± {ce:.6e}")
    print(f"\n{good} of {len(lres)} fits reach 4 digits; median LRE {statistics.median(lres):.2f}; "
          f"{time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()

"""gdfit lm beside lmfit and scipy on the same curve problems: values, stderr, chi-square,
iterations and time (interleaved rounds: median and spread), with the machine and the date.

    python -m benchmarks.curve_compare [--rounds 5]

Every problem's data is made here from a fixed seed. Iterations: gdfit's updates (one Jacobian
each); lmfit's and scipy's function evaluations (nfev), their own unit of work.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _problems():
    rng = np.random.default_rng(2026)
    x = np.linspace(0, 10, 200)
    out = []

    def add(name, expr, f, x, y, start, sigma=None):
        out.append({"name": name, "expr": expr, "f": f, "x": x, "y": y, "start": start, "sigma": sigma})

    f = lambda x, amp, cen, wid, bg: amp * np.exp(-(x - cen) ** 2 / (2 * wid ** 2)) + bg  # noqa: E731
    add("gaussian on background", "amp * exp(-(x - cen)**2 / (2 * wid**2)) + bg", f, x,
        f(x, 3, 5, 0.8, 0.5) + 0.05 * rng.standard_normal(x.size), {"amp": 2, "cen": 4.5, "wid": 1, "bg": 0})
    f = lambda x, a, tau, c: a * np.exp(-x / tau) + c  # noqa: E731
    add("decay", "a * exp(-x / tau) + c", f, x, f(x, 5, 2.5, 0.3) + 0.03 * rng.standard_normal(x.size),
        {"a": 1, "tau": 1, "c": 0})
    f = lambda x, a, k, w, p: a * np.exp(-k * x) * np.sin(w * x + p)  # noqa: E731
    add("damped sine", "a * exp(-k * x) * sin(w * x + p)", f, x,
        f(x, 2, 0.3, 3.1, 0.4) + 0.02 * rng.standard_normal(x.size), {"a": 1.5, "k": 0.2, "w": 3.0, "p": 0})
    f = lambda x, a1, c1, s1, a2, c2, s2: (a1 * np.exp(-(x - c1) ** 2 / (2 * s1 ** 2))  # noqa: E731
                                           + a2 * np.exp(-(x - c2) ** 2 / (2 * s2 ** 2)))
    add("two peaks", "a1 * exp(-(x - c1)**2 / (2 * s1**2)) + a2 * exp(-(x - c2)**2 / (2 * s2**2))", f, x,
        f(x, 2, 3.5, 0.6, 1.5, 6, 0.9) + 0.03 * rng.standard_normal(x.size),
        {"a1": 1.5, "c1": 3, "s1": 1, "a2": 1, "c2": 6.5, "s2": 1})
    sigma = 0.02 + 0.05 * x / 10
    f = lambda x, a, tau, c: a * np.exp(-x / tau) + c  # noqa: E731
    add("weighted decay", "a * exp(-x / tau) + c", f, x, f(x, 4, 3, 1) + sigma * rng.standard_normal(x.size),
        {"a": 1, "tau": 1, "c": 0}, sigma)
    f = lambda x, a1, t1, a2, t2: a1 * np.exp(-x / t1) + a2 * np.exp(-x / t2)  # noqa: E731
    add("double exponential (ill-conditioned)", "a1 * exp(-x / t1) + a2 * exp(-x / t2)", f, x,
        f(x, 2, 1.0, 1.5, 1.6) + 0.01 * rng.standard_normal(x.size), {"a1": 1, "t1": 0.5, "a2": 1, "t2": 3})
    f = lambda x, b1, b2: b1 * (1 - np.exp(-b2 * x))  # noqa: E731
    xm = np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8, 593.1, 689.1, 760.0])
    ym = np.array([10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01, 66.40, 75.47, 81.78])
    add("bad start (Misra1a from NIST's start 1)", "b1 * (1 - exp(-b2 * x))", f, xm, ym, {"b1": 500, "b2": 1e-4})
    return out


def gdfit_fit(problem, folder: Path) -> dict:
    from gdfit.config import build_config
    from gdfit.engine.descent import Descent, prepare

    columns = {"x": problem["x"], "y": problem["y"]}
    if problem["sigma"] is not None:
        columns["s"] = problem["sigma"]
    path = folder / "data.csv"
    np.savetxt(path, np.column_stack(list(columns.values())), delimiter=",", header=",".join(columns), comments="")
    config = {"data": {"file": "data.csv"}, "target": {"column": "y"}, "optimizer": "lm", "dtype": "float64",
              "model": {"expr": problem["expr"], "params": dict(problem["start"])}, "max_iters": 1000}
    if problem["sigma"] is not None:
        config["sigma"] = {"column": "s"}
    descent = Descent(prepare(build_config(config, source=str(folder / "fit.yaml"), base_dir=folder)),
                      report=lambda k: False, report_last=False, advice=False)
    for _ in descent.steps():
        pass
    r = descent.result
    names = list(problem["start"])
    return {"values": [r.params[n]["value"] for n in names], "stderr": [r.params[n]["stderr"] for n in names],
            "chi2": r.fit["chi2"], "iters": r.iters, "status": r.status}


def lmfit_fit(problem) -> dict:
    import lmfit

    model = lmfit.Model(problem["f"])
    weights = 1 / problem["sigma"] if problem["sigma"] is not None else None
    result = model.fit(problem["y"], model.make_params(**problem["start"]), x=problem["x"], weights=weights)
    names = list(problem["start"])
    return {"values": [result.params[n].value for n in names], "stderr": [result.params[n].stderr for n in names],
            "chi2": result.chisqr, "iters": result.nfev, "status": "success" if result.success else "failed"}


def scipy_fit(problem) -> dict:
    from scipy.optimize import curve_fit

    names = list(problem["start"])
    popt, pcov, info, _, ier = curve_fit(problem["f"], problem["x"], problem["y"], p0=[problem["start"][n] for n in names],
                                         sigma=problem["sigma"], full_output=True, maxfev=20000)
    w = 1 / problem["sigma"] if problem["sigma"] is not None else 1.0
    r = (problem["y"] - problem["f"](problem["x"], *popt)) * w
    return {"values": list(popt), "stderr": list(np.sqrt(np.diag(pcov))), "chi2": float(r @ r),
            "iters": info["nfev"], "status": "success" if ier in (1, 2, 3, 4) else "failed"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _number(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.6g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}; date: {datetime.date.today().isoformat()}; rounds: {args.rounds}\n")
    print("| problem | fitter | values | stderr | chi-square | iterations | status | time (ms), median [min, max] |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        fitters = {"gdfit lm": lambda p: gdfit_fit(p, Path(tmp)), "lmfit leastsq": lmfit_fit,
                   "scipy curve_fit": scipy_fit}
        for problem in _problems():
            for fit in fitters.values():
                fit(problem)  # first-call costs (imports, compilation) are not the fit's
            times = {name: [] for name in fitters}
            results = {}
            for _ in range(args.rounds):  # interleaved: each round fits with every fitter in turn
                for name, fit in fitters.items():
                    began = time.perf_counter()
                    results[name] = fit(problem)
                    times[name].append(1000 * (time.perf_counter() - began))
            for name, result in results.items():
                spread = times[name]
                print(f"| {problem['name']} | {name} | {', '.join(_number(v) for v in result['values'])} | "
                      f"{', '.join(_number(v) for v in result['stderr'])} | {_number(result['chi2'])} | "
                      f"{result['iters']} | {result['status']} | {statistics.median(spread):.2f} "
                      f"[{min(spread):.2f}, {max(spread):.2f}] |")


if __name__ == "__main__":
    main()

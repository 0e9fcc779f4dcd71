"""scipy's MINPACK Levenberg-Marquardt on the 54 NIST StRD problem-starts: the baseline for gdfit.

usage: python -m benchmarks.nist_scipy [--max-nfev N] [--tight]   (prints a markdown table)

Each fit is `least_squares(residuals, start, method="lm")` with scipy's defaults (tolerances 1e-8,
2-point finite-difference Jacobian); only max_nfev is raised (10,000 unless --max-nfev says
otherwise; 0 means scipy's own default, 100 * k) so that no fit stops for lack of budget.
--tight instead uses nist.TIGHT: tolerances 1e-15 and MINPACK lmdif's relative difference steps.
A fit is "ok4" when every value, every standard error and the RSS have at least 4 correct digits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from benchmarks import nist


def main(argv: list[str] | None = None) -> int:
    """Fit all 54 problem-starts and print the table and its summary; 1 when the data is absent."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nist_scipy", description=__doc__.splitlines()[0])
    parser.add_argument("--max-nfev", type=int, default=10_000, help="0: scipy's default (100 * k)")
    parser.add_argument("--tight", action="store_true", help="tolerances 1e-15, steps relative to each parameter")
    args = parser.parse_args(argv)
    options = nist.TIGHT if args.tight else {}
    if not nist.available():
        print(f"NIST StRD files not found in {nist.FOLDER} (set GDFIT_NIST_DIR)", file=sys.stderr)
        return 1

    began = time.perf_counter()
    print("| problem | difficulty | start | LRE values | LRE stderr | LRE RSS | nfev | ok4 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    scores, failed = [], []
    for problem in nist.load_all():
        for start in (1, 2):
            fit = nist.scipy_fit(problem, start, max_nfev=args.max_nfev or None, **options)
            s = nist.score(fit["values"], fit["stderr"], fit["rss"], problem)
            scores.append(s)
            if not s["ok4"]:
                failed.append(f"{problem.name}/{start}")
            print(f"| {problem.name} | {problem.difficulty} | {start} | {s['lre_values']:.2f} | {s['lre_stderr']:.2f}"
                  f" | {s['lre_rss']:.2f} | {fit['nfev']} | {'yes' if s['ok4'] else '**no**'} |")
    elapsed = time.perf_counter() - began

    ok = sum(s["ok4"] for s in scores)
    median = statistics.median(s["min"] for s in scores)
    rest = "--tight" if args.tight else "scipy's defaults otherwise"
    settings = f"max_nfev {args.max_nfev or 'default'}, {rest}"
    print(f"\nok4: {ok} of {len(scores)}; median of the per-fit minimum LRE: {median:.2f};"
          f" wall time {elapsed:.2f} s ({settings})")
    print(f"not ok4: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""configs/decay.yaml's fit as an lmfit script: the baseline of the `curvefit` figure (run.py).

The same data, model, start values and bounds, weighted by 1/sigma as gdfit weights by sigma;
it prints lmfit's fit report, as `gdfit run` prints its own. Run it as a whole process:
`python benchmarks/lmfit_decay.py` (lmfit: `pip install gdfit[bench]`).
"""

from pathlib import Path

import numpy as np
from lmfit import Model

DATA = Path(__file__).resolve().parent.parent / "configs" / "decay.csv"


def decay(t, a, tau, c):
    return a * np.exp(-t / tau) + c


def main() -> None:
    table = np.genfromtxt(DATA, delimiter=",", names=True, comments="#")
    t, y, sigma = table["t"], table["y"], table["sigma"]
    model = Model(decay)
    params = model.make_params(a=1, tau=dict(value=1, min=0), c=0)
    result = model.fit(y, params, t=t, weights=1 / sigma, scale_covar=False)  # absolute_sigma: true
    print(result.fit_report())


if __name__ == "__main__":
    main()

"""Write the curve-fit examples' data (decay.csv, peaks.csv, oscillation.csv, gaussian.csv, dose.csv,
edge.csv, global-a.csv, global-b.csv and double-decay.csv) from known parameters.

Run it from anywhere: `python configs/make_data.py [FOLDER]` (default: this file's folder). The
output is the same on every machine up to the last bits of the curves: numpy's PCG64 generator with
a fixed seed, every number written with a fixed format, and numpy's float64 exp, cos and power,
which take the CPU's SIMD path (AVX-512 or AVX2) and may differ there by an ulp or two. The true
parameters are in TRUTH; the README compares gdfit's fits to them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 1
TRUTH = {
    "decay": {"a": 5.0, "tau": 2.5, "c": 0.5},
    "peaks": {"a1": 3.0, "m1": 4.0, "s1": 0.6, "a2": 2.0, "m2": 6.2, "s2": 0.9, "c": 0.2},
    "oscillation": {"a": 2.0, "tau": 4.0, "w": 3.0, "phi": 0.5, "c": 1.0},
    "gaussian": {"amplitude": 12.0, "center": 1.3, "sigma": 0.7},
    "dose": {"bottom": 5.0, "top": 95.0, "ec50": 0.8, "hill": 1.4},
    "edge": {"a": 3.0, "x0": 2.0, "w": 0.4, "c": 0.5},
    "global": {"amp": 4.0, "tau1": 1.2, "tau2": 4.5, "c": 0.3},
    "double-decay": {"a1": 3.0, "t1": 1.0, "a2": 2.0, "t2": 3.0},
}
# the later examples have streams of their own, so the earlier files stay as they were
GLOBAL_SEED, DOUBLE_DECAY_SEED = 2, 3


def decay(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """a exp(-t / tau) + c on 40 times, with noise that grows with the signal (2% + 0.02):
    each point's own standard deviation is the `sigma` column."""
    p = TRUTH["decay"]
    t = np.linspace(0.0, 10.0, 40)
    f = p["a"] * np.exp(-t / p["tau"]) + p["c"]
    sigma = 0.02 + 0.02 * f
    return {"t": t, "y": f + rng.normal(0.0, sigma), "sigma": sigma}


def peaks(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two overlapping Gaussian peaks on a flat background, 201 points, noise 0.05."""
    p = TRUTH["peaks"]
    x = np.linspace(0.0, 10.0, 201)
    f = (p["a1"] * np.exp(-((x - p["m1"]) ** 2) / (2 * p["s1"] ** 2))
         + p["a2"] * np.exp(-((x - p["m2"]) ** 2) / (2 * p["s2"] ** 2)) + p["c"])
    return {"x": x, "y": f + rng.normal(0.0, 0.05, x.size)}


def oscillation(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A damped oscillation a exp(-t / tau) cos(w t + phi) + c, 120 points, noise 0.1."""
    p = TRUTH["oscillation"]
    t = np.linspace(0.0, 12.0, 120)
    f = p["a"] * np.exp(-t / p["tau"]) * np.cos(p["w"] * t + p["phi"]) + p["c"]
    return {"t": t, "y": f + rng.normal(0.0, 0.1, t.size)}


def gaussian(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One Gaussian peak, lmfit's form amplitude / (sigma sqrt(2 pi)) exp(-(x - center)^2 / (2 sigma^2)),
    81 points, noise 0.1."""
    p = TRUTH["gaussian"]
    x = np.linspace(-3.0, 5.0, 81)
    f = p["amplitude"] / (p["sigma"] * np.sqrt(2 * np.pi)) * np.exp(-((x - p["center"]) ** 2) / (2 * p["sigma"] ** 2))
    return {"x": x, "y": f + rng.normal(0.0, 0.1, x.size)}


def dose(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A dose-response curve, bottom + (top - bottom) / (1 + (ec50 / dose)^hill): a control (dose 0)
    and 10 doses in 3-fold steps, 3 replicates each, noise 3."""
    p = TRUTH["dose"]
    doses = np.repeat(np.concatenate([[0.0], 0.01 * 3.0 ** np.arange(10)]), 3)
    with np.errstate(divide="ignore"):
        f = p["bottom"] + (p["top"] - p["bottom"]) / (1 + (p["ec50"] / doses) ** p["hill"])
    return {"dose": doses, "response": f + rng.normal(0.0, 3.0, doses.size)}


def edge(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A blurred step (a knife-edge scan): a / 2 erfc((x - x0) / (sqrt(2) w)) + c, 60 points, noise 0.05."""
    from math import erfc, sqrt

    p = TRUTH["edge"]
    x = np.linspace(0.0, 4.0, 60)
    f = np.array([p["a"] / 2 * erfc((v - p["x0"]) / (sqrt(2) * p["w"])) for v in x]) + p["c"]
    return {"x": x, "y": f + rng.normal(0.0, 0.05, x.size)}


def global_decays(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Two decays sharing amplitude and offset, with their own time constants (configs/global-decay.yaml):
    global-a.csv, 40 points with noise 0.04; global-b.csv, 30 points with noise 2% + 0.02. Each
    point's standard deviation is its file's `dy` column."""
    p = TRUTH["global"]
    t_a, t_b = np.linspace(0.0, 8.0, 40), np.linspace(0.0, 20.0, 30)
    f_a = p["amp"] * np.exp(-t_a / p["tau1"]) + p["c"]
    f_b = p["amp"] * np.exp(-t_b / p["tau2"]) + p["c"]
    dy = 0.02 + 0.02 * f_b
    return {"global-a": {"t": t_a, "y": f_a + rng.normal(0.0, 0.04, t_a.size), "dy": np.full(t_a.size, 0.04)},
            "global-b": {"t": t_b, "y": f_b + rng.normal(0.0, dy), "dy": dy}}


def double_decay(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """a1 exp(-x / t1) + a2 exp(-x / t2), 60 points, noise 0.05: two time constants the data barely
    tell apart, whose profile intervals are lopsided (configs/double-decay.yaml)."""
    p = TRUTH["double-decay"]
    x = np.linspace(0.0, 10.0, 60)
    f = p["a1"] * np.exp(-x / p["t1"]) + p["a2"] * np.exp(-x / p["t2"])
    return {"x": x, "y": f + rng.normal(0.0, 0.05, x.size)}


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    # 17 significant digits: a float64 read back is the float64 written
    rows = zip(*columns.values())
    lines = [",".join(columns)] + [",".join(f"{v:.17g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(folder: Path) -> None:
    rng = np.random.default_rng(SEED)  # one stream, drawn in this order (new data sets go last)
    for name, make in (("decay", decay), ("peaks", peaks), ("oscillation", oscillation), ("gaussian", gaussian),
                       ("dose", dose), ("edge", edge)):
        write_csv(folder / f"{name}.csv", make(rng))
    for name, columns in global_decays(np.random.default_rng(GLOBAL_SEED)).items():
        write_csv(folder / f"{name}.csv", columns)
    write_csv(folder / "double-decay.csv", double_decay(np.random.default_rng(DOUBLE_DECAY_SEED)))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)

"""The NIST StRD nonlinear regression problems: loading, models, LRE scoring and a scipy baseline.

The 27 `.dat` files are read at run time from FOLDER (`../shared/data/nist-strd` beside the repo,
or the env var GDFIT_NIST_DIR); nothing from them is copied into the project. Each problem's model
is written twice, by hand: once in gdfit's expression language (`expr`, what gdfit fits) and once
in numpy (`predict`, what checks the parsing against the certified RSS and what scipy fits).

Accuracy is McCullough's log relative error (LRE): about the number of correct significant digits.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FOLDER = Path(os.environ.get("GDFIT_NIST_DIR") or ROOT.parent / "shared" / "data" / "nist-strd")
DIFFICULTIES = ("lower", "average", "higher")
# Rat43.dat states 9 degrees of freedom, but it has 15 observations and 4 parameters, and its
# certified residual SD is sqrt(RSS / 11): the 9 is a typo in the file. dof is n - k everywhere.
DOF_ERRATA = {"Rat43": 9}
# Not scipy's defaults (the benchmark's --tight): tolerances 1e-15 rather than 1e-8, and difference
# steps relative to each parameter, sqrt(eps) * |b|, as MINPACK's lmdif takes them. scipy >= 1.16
# steps by sqrt(eps) * max(1, |b|): 1.5e-8, a tenth of Hahn1's b7 = 1.2e-7.
TIGHT: dict[str, Any] = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15, "diff_step": math.sqrt(np.finfo(float).eps)}

Columns = dict[str, np.ndarray]
NumpyModel = Callable[[np.ndarray, Columns], np.ndarray]


# --- the models, each written in gdfit's language and in numpy --------------------------------------
# NIST's notation is translated: exp[...] -> exp(...), arctan -> atan; everything else is kept as
# NIST writes it (so x**2, not square(x)) to keep the expression easy to compare with the file.

def _exp_rise(b, c):
    return b[0] * (1 - np.exp(-b[1] * c["x"]))


def _chwirut(b, c):
    return np.exp(-b[0] * c["x"]) / (b[1] + b[2] * c["x"])


def _three_exp(b, c):
    x = c["x"]
    return b[0] * np.exp(-b[1] * x) + b[2] * np.exp(-b[3] * x) + b[4] * np.exp(-b[5] * x)


def _gauss(b, c):
    x = c["x"]
    return (b[0] * np.exp(-b[1] * x) + b[2] * np.exp(-((x - b[3]) ** 2) / b[4] ** 2)
            + b[5] * np.exp(-((x - b[6]) ** 2) / b[7] ** 2))


def _cubic_cubic(b, c):
    x = c["x"]
    return (b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3) / (1 + b[4] * x + b[5] * x**2 + b[6] * x**3)


def _enso(b, c):
    w = 2 * np.pi * c["x"]
    return (b[0] + b[1] * np.cos(w / 12) + b[2] * np.sin(w / 12)
            + b[4] * np.cos(w / b[3]) + b[5] * np.sin(w / b[3])
            + b[7] * np.cos(w / b[6]) + b[8] * np.sin(w / b[6]))


_EXP_RISE = "b1*(1-exp(-b2*x))"
_CHWIRUT = "exp(-b1*x)/(b2+b3*x)"
_THREE_EXP = "b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)"
_GAUSS = "b1*exp(-b2*x) + b3*exp(-(x-b4)**2/b5**2) + b6*exp(-(x-b7)**2/b8**2)"
_CUBIC_CUBIC = "(b1 + b2*x + b3*x**2 + b4*x**3) / (1 + b5*x + b6*x**2 + b7*x**3)"
_ENSO = ("b1 + b2*cos(2*pi*x/12) + b3*sin(2*pi*x/12) + b5*cos(2*pi*x/b4) + b6*sin(2*pi*x/b4)"
         " + b8*cos(2*pi*x/b7) + b9*sin(2*pi*x/b7)")

MODELS: dict[str, tuple[str, NumpyModel]] = {
    "Misra1a": (_EXP_RISE, _exp_rise),
    "Chwirut2": (_CHWIRUT, _chwirut),
    "Chwirut1": (_CHWIRUT, _chwirut),
    "Lanczos3": (_THREE_EXP, _three_exp),
    "Gauss1": (_GAUSS, _gauss),
    "Gauss2": (_GAUSS, _gauss),
    "DanWood": ("b1*x**b2", lambda b, c: b[0] * c["x"] ** b[1]),
    "Misra1b": ("b1*(1-(1+b2*x/2)**(-2))", lambda b, c: b[0] * (1 - (1 + b[1] * c["x"] / 2) ** -2.0)),
    "Kirby2": ("(b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)",
               lambda b, c: (b[0] + b[1] * c["x"] + b[2] * c["x"] ** 2) / (1 + b[3] * c["x"] + b[4] * c["x"] ** 2)),
    "Hahn1": (_CUBIC_CUBIC, _cubic_cubic),
    # NIST's model is for log[y]: the response is the derived column log_y.
    "Nelson": ("b1 - b2*x1*exp(-b3*x2)", lambda b, c: b[0] - b[1] * c["x1"] * np.exp(-b[2] * c["x2"])),
    "MGH17": ("b1 + b2*exp(-x*b4) + b3*exp(-x*b5)",
              lambda b, c: b[0] + b[1] * np.exp(-c["x"] * b[3]) + b[2] * np.exp(-c["x"] * b[4])),
    "Lanczos1": (_THREE_EXP, _three_exp),
    "Lanczos2": (_THREE_EXP, _three_exp),
    "Gauss3": (_GAUSS, _gauss),
    "Misra1c": ("b1*(1-(1+2*b2*x)**(-0.5))", lambda b, c: b[0] * (1 - (1 + 2 * b[1] * c["x"]) ** -0.5)),
    "Misra1d": ("b1*b2*x*((1+b2*x)**(-1))", lambda b, c: b[0] * b[1] * c["x"] * (1 + b[1] * c["x"]) ** -1.0),
    "Roszman1": ("b1 - b2*x - atan(b3/(x-b4))/pi",
                 lambda b, c: b[0] - b[1] * c["x"] - np.arctan(b[2] / (c["x"] - b[3])) / np.pi),
    "ENSO": (_ENSO, _enso),
    "MGH09": ("b1*(x**2+x*b2) / (x**2+x*b3+b4)",
              lambda b, c: b[0] * (c["x"] ** 2 + c["x"] * b[1]) / (c["x"] ** 2 + c["x"] * b[2] + b[3])),
    "Thurber": (_CUBIC_CUBIC, _cubic_cubic),
    "BoxBOD": (_EXP_RISE, _exp_rise),
    "Rat42": ("b1 / (1+exp(b2-b3*x))", lambda b, c: b[0] / (1 + np.exp(b[1] - b[2] * c["x"]))),
    "MGH10": ("b1 * exp(b2/(x+b3))", lambda b, c: b[0] * np.exp(b[1] / (c["x"] + b[2]))),
    "Eckerle4": ("(b1/b2) * exp(-0.5*((x-b3)/b2)**2)",
                 lambda b, c: (b[0] / b[1]) * np.exp(-0.5 * ((c["x"] - b[2]) / b[1]) ** 2)),
    "Rat43": ("b1 / ((1+exp(b2-b3*x))**(1/b4))",
              lambda b, c: b[0] / (1 + np.exp(b[1] - b[2] * c["x"])) ** (1 / b[3])),
    "Bennett5": ("b1 * (b2+x)**(-1/b3)", lambda b, c: b[0] * (b[1] + c["x"]) ** (-1 / b[2])),
}


# --- one problem -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NistProblem:
    """One NIST StRD problem: its data, model, two starts and certified results."""

    name: str
    difficulty: str
    columns: Columns = field(compare=False, repr=False)  # arrays: equality and hash use the other fields
    response: str
    expr: str
    params: tuple[str, ...]
    starts: tuple[tuple[float, ...], tuple[float, ...]]
    certified: tuple[float, ...]
    certified_stderr: tuple[float, ...]
    certified_rss: float
    certified_residual_sd: float
    dof: int

    @property
    def n(self) -> int:
        """The number of observations."""
        return len(self.columns[self.response])

    def start(self, which: int) -> tuple[float, ...]:
        """NIST's start 1 or start 2."""
        if which not in (1, 2):
            raise ValueError(f"start must be 1 or 2, not {which!r}")
        return self.starts[which - 1]

    def predict(self, b: np.ndarray) -> np.ndarray:
        """The model at parameters b, in numpy (written by hand, independently of `expr`)."""
        return MODELS[self.name][1](np.asarray(b, dtype=np.float64), self.columns)

    def residuals(self, b: np.ndarray) -> np.ndarray:
        """predict(b) minus the response column."""
        return self.predict(b) - self.columns[self.response]

    def rss(self, b: np.ndarray) -> float:
        """The residual sum of squares at b."""
        r = self.residuals(b)
        return float(r @ r)


def available() -> bool:
    """Whether FOLDER holds all 27 problem files."""
    return FOLDER.is_dir() and all((FOLDER / f"{name}.dat").is_file() for name in MODELS)


def _groups(pattern: str, text: str, name: str) -> tuple[str, ...]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"{name}.dat: no line matches {pattern!r}")
    return match.groups()


def _number(pattern: str, text: str, name: str) -> str:
    return _groups(pattern, text, name)[0]


def load(name: str) -> NistProblem:
    """Parse one problem's .dat file from FOLDER (name as NIST spells it, e.g. "Misra1a")."""
    if name not in MODELS:
        raise KeyError(f"unknown NIST problem {name!r}; known: {', '.join(MODELS)}")
    path = FOLDER / f"{name}.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set GDFIT_NIST_DIR to the folder of the NIST .dat files)")
    text = path.read_text()
    lines = text.splitlines()

    difficulty = _number(r"^\s*(Lower|Average|Higher) Level of Difficulty", text, name).lower()
    k = int(_number(r"^\s*(\d+) Parameters", text, name))
    # "b1 =   500   250   2.3894212918E+02  2.7070075241E+00": start 1, start 2, value, stderr.
    rows = re.findall(r"^\s*(b\d+)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", text, re.MULTILINE)
    if len(rows) != k:
        raise ValueError(f"{name}.dat: {len(rows)} parameter lines, the header says {k}")
    params = tuple(row[0] for row in rows)
    numbers = [[float(v) for v in row[1:]] for row in rows]

    # The header's "Data (lines A to B)" says where the rows are; line A-1 names the columns.
    first, last = map(int, _groups(r"Data\s+\(lines\s+(\d+)\s+to\s+(\d+)\)", text, name))
    names = lines[first - 2].split()
    if names[0] != "Data:":
        raise ValueError(f"{name}.dat: line {first - 1} is not the 'Data:' column header")
    table = np.array([[float(v) for v in line.split()] for line in lines[first - 1:last]], dtype=np.float64)
    n = int(_number(r"^Number of Observations:\s*(\d+)", text, name))
    if table.shape != (n, len(names) - 1):
        raise ValueError(f"{name}.dat: data is {table.shape}, expected ({n}, {len(names) - 1})")
    file_columns = dict(zip(names[1:], table.T))
    # Predictors first, then the response: the CSV reads as x, y.
    columns = {key: np.ascontiguousarray(file_columns[key]) for key in names[1:] if key != "y"}
    columns["y"] = np.ascontiguousarray(file_columns["y"])
    response = "y"
    if name == "Nelson":  # the model is for log[y]
        columns["log_y"] = np.log(columns["y"])
        response = "log_y"
    stated_dof = int(_number(r"^Degrees of Freedom:\s*(\d+)", text, name))
    if stated_dof != n - k and DOF_ERRATA.get(name) != stated_dof:
        raise ValueError(f"{name}.dat: {stated_dof} degrees of freedom stated, but n - k = {n - k}")
    for array in columns.values():
        array.setflags(write=False)  # the dataclass is frozen; keep its data so too

    return NistProblem(
        name=name,
        difficulty=difficulty,
        columns=columns,
        response=response,
        expr=MODELS[name][0],
        params=params,
        starts=(tuple(r[0] for r in numbers), tuple(r[1] for r in numbers)),
        certified=tuple(r[2] for r in numbers),
        certified_stderr=tuple(r[3] for r in numbers),
        certified_rss=float(_number(r"^Residual Sum of Squares:\s*(\S+)", text, name)),
        certified_residual_sd=float(_number(r"^Residual Standard Deviation:\s*(\S+)", text, name)),
        dof=n - k,
    )


def load_all() -> list[NistProblem]:
    """All 27 problems, NIST's order: lower, average, higher difficulty, then by name."""
    problems = [load(name) for name in MODELS]
    return sorted(problems, key=lambda p: (DIFFICULTIES.index(p.difficulty), p.name))


# --- scoring ---------------------------------------------------------------------------------------

def lre(value: float, certified: float, digits: float = 11.0) -> float:
    """McCullough's log relative error, -log10(|value - certified| / |certified|), in [0, digits].

    The absolute error where certified is 0. `digits` caps it: NIST certifies 11 digits, so more
    agreement than that cannot be measured. 0 for a non-finite value or no correct digit.
    """
    if value is None:  # a fit that did not converge reports no stderr: no correct digit
        return 0.0
    value, certified = float(value), float(certified)
    if not math.isfinite(value):
        return 0.0
    error = abs(value - certified) if certified == 0 else abs(value - certified) / abs(certified)
    if error == 0:
        return float(digits)
    return min(float(digits), max(0.0, -math.log10(error)))


def score(values, stderr, rss: float, problem: NistProblem) -> dict[str, Any]:
    """LREs of a fit against the certified results: the worst parameter, the worst stderr, the RSS."""
    lre_values = min(lre(v, c) for v, c in zip(values, problem.certified, strict=True))
    lre_stderr = min(lre(s, c) for s, c in zip(stderr, problem.certified_stderr, strict=True))
    lre_rss = lre(rss, problem.certified_rss)
    worst = min(lre_values, lre_stderr, lre_rss)
    return {"lre_values": lre_values, "lre_stderr": lre_stderr, "lre_rss": lre_rss, "min": worst, "ok4": worst >= 4}


# --- gdfit and scipy -------------------------------------------------------------------------------

def write_csv(problem: NistProblem, path: Path) -> None:
    """All columns as CSV: a header of names, then rows, each float as repr (exact float64)."""
    names = list(problem.columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(problem.columns[key] for key in names)):
            writer.writerow([repr(float(v)) for v in row])


def config_for(problem: NistProblem, start: int, csv_path: str, **overrides: Any) -> dict[str, Any]:
    """A gdfit config fitting `problem` from NIST start 1 or 2; overrides replace top-level keys."""
    config: dict[str, Any] = {
        "data": {"file": str(csv_path)},
        "target": {"column": problem.response},
        "model": {"expr": problem.expr, "params": dict(zip(problem.params, problem.start(start)))},
        "dtype": "float64",
        "optimizer": "lm",
        "max_iters": 1000,
    }
    config.update(overrides)
    return config


def standard_errors(jac: np.ndarray, rss: float, dof: int) -> np.ndarray:
    """sqrt(diag(s^2 (J^T J)^-1)), s^2 = rss/dof; NaN where J is singular or not finite.

    The columns of J are scaled to unit norm before the SVD: NIST's parameters span many orders
    of magnitude (Hahn1: 1 to 1e-7), and the singularity test should judge J's shape, not its units.
    """
    k = jac.shape[1]
    if dof <= 0 or not np.all(np.isfinite(jac)) or not math.isfinite(rss):
        return np.full(k, np.nan)
    norms = np.linalg.norm(jac, axis=0)
    if np.any(norms == 0):
        return np.full(k, np.nan)
    try:
        _, singular, vt = np.linalg.svd(jac / norms, full_matrices=False)
    except (np.linalg.LinAlgError, ValueError):
        return np.full(k, np.nan)
    if singular[-1] <= singular[0] * k * np.finfo(float).eps:  # numerically singular: no inverse
        return np.full(k, np.nan)
    # (J^T J)^-1 = D^-1 V S^-2 V^T D^-1 for J = U S V^T D, D the column norms.
    variance = rss / dof * np.sum((vt.T / singular) ** 2, axis=1) / norms**2
    return np.sqrt(variance)


def scipy_fit(problem: NistProblem, start: int, max_nfev: int | None = 10_000, **options: Any) -> dict[str, Any]:
    """Fit with scipy's MINPACK Levenberg-Marquardt from NIST start 1 or 2, never raising.

    least_squares(method="lm") with its default tolerances and finite-difference Jacobian; only
    max_nfev is raised from its default (100 * k), so that no fit stops on budget. `options` go to
    least_squares as they are (TIGHT: the settings of older scipy's lmdif, at tolerance 1e-15).
    """
    from scipy.optimize import least_squares  # scipy is only needed for this baseline

    k = len(problem.params)
    x0 = np.array(problem.start(start), dtype=np.float64)
    try:
        with np.errstate(all="ignore"):  # starts far from the solution overflow exp(): MINPACK copes
            result = least_squares(problem.residuals, x0, method="lm", max_nfev=max_nfev, **options)
        values = result.x
        rss = float(result.fun @ result.fun)
        stderr = standard_errors(result.jac, rss, problem.dof)
        nfev, success = int(result.nfev), bool(result.success)
    except Exception:  # a baseline that breaks is a failed fit, not a crashed benchmark
        values, stderr, rss, nfev, success = np.full(k, np.nan), np.full(k, np.nan), math.nan, 0, False
    return {"values": [float(v) for v in values], "stderr": [float(s) for s in stderr],
            "rss": rss, "nfev": nfev, "success": success}

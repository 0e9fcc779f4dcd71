"""Write a synthetic dose-response screen: one four-parameter logistic per compound.

    python configs/make_screen.py [PATH] [--compounds N] [--seed S]

PATH ends in .csv (default: plates.csv beside this file), .npz or .parquet (needs pyarrow).
Each compound is measured at 8 to 12 doses between 1 nM and 100 uM (in uM), with noise of standard
deviation 3 on a 0-100 response: bottom ~ U(0, 10), top ~ U(90, 110), log10 ec50 ~ U(-2, 1),
hill ~ U(0.6, 2.5). With `--with-failures` (the default for the shipped example) the last four
compounds are ones a screen also holds: a flat response, a compound with 3 points, one whose
every response is missing, and one measured at a single dose. The same seed gives the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DOSES = np.logspace(-3, 2, 12)  # uM
NOISE = 3.0


def screen(compounds: int, seed: int = 0, failures: bool = False) -> dict[str, np.ndarray]:
    """Columns compound (int), dose and response, row by row; and the truth per compound."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 13, compounds)
    bottom = rng.uniform(0, 10, compounds)
    top = rng.uniform(90, 110, compounds)
    ec50 = 10 ** rng.uniform(-2, 1, compounds)
    hill = rng.uniform(0.6, 2.5, compounds)
    # each compound's doses: `size` of the 12, in order
    keys = rng.random((compounds, len(DOSES)))
    chosen = np.argsort(keys, axis=1)
    rows = np.repeat(np.arange(compounds), sizes)
    column = np.concatenate([np.sort(chosen[i, :k]) for i, k in enumerate(sizes)]) if compounds else np.zeros(0, int)
    dose = DOSES[column]
    f = bottom[rows] + (top[rows] - bottom[rows]) / (1 + (ec50[rows] / dose) ** hill[rows])
    response = f + rng.normal(0, NOISE, len(rows))
    compound = rows.astype(np.int64)
    if failures:
        extra = compounds
        flat = (np.full(8, extra), DOSES[:8], np.full(8, 100.0))
        few = (np.full(3, extra + 1), DOSES[[0, 5, 11]], np.array([2.0, 50.0, 98.0]))
        missing = (np.full(8, extra + 2), DOSES[:8], np.full(8, np.nan))
        single = (np.full(6, extra + 3), np.full(6, 1.0), rng.normal(50, NOISE, 6))
        compound = np.concatenate([compound, *(part[0] for part in (flat, few, missing, single))])
        dose = np.concatenate([dose, *(part[1] for part in (flat, few, missing, single))])
        response = np.concatenate([response, *(part[2] for part in (flat, few, missing, single))])
    truth = {"bottom": bottom, "top": top, "ec50": ec50, "hill": hill}
    return {"compound": compound, "dose": dose, "response": response}, truth


def write(path: Path, columns: dict[str, np.ndarray]) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, **columns)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)
    else:
        with open(path, "w", encoding="utf-8") as out:
            out.write("compound,dose,response\n")
            for c, d, r in zip(columns["compound"].tolist(), columns["dose"].tolist(), columns["response"].tolist()):
                out.write(f"{c},{d:.6g},{'nan' if r != r else f'{r:.6g}'}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(Path(__file__).with_name("plates.csv")))
    parser.add_argument("--compounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-failures", action="store_true", help="only well-posed compounds")
    args = parser.parse_args()
    columns, _ = screen(args.compounds, args.seed, failures=not args.no_failures)
    write(Path(args.path), columns)


if __name__ == "__main__":
    main()

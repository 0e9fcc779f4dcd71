"""Many fits at once (`gdfit run` with data.group): each group equals its fit run alone, bit for
bit; fits agree with scipy's least_squares; failed groups get their status and the others go on;
bad input exits 2 with nothing written; the output formats agree."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from helpers import dask_noise, holding_port, run_without_torch, sigint_as_at_a_terminal, sockets_off_loopback

sys.path.insert(0, str(ROOT / "configs"))
from make_screen import screen, write  # noqa: E402

EXPR = "bottom + (top - bottom) / (1 + (ec50 / dose) ** hill)"
PARAMS = {"bottom": 0, "top": 100, "ec50": 1, "hill": 1}
ORDER = tuple(PARAMS)


def job_config(folder: Path, data: str, **extra) -> Path:
    config = {"data": {"file": data, "group": "compound"}, "target": {"column": "response"},
              "model": {"expr": EXPR, "params": PARAMS}, "optimizer": "lm", "dtype": "float64", "max_iters": 200,
              **extra}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def varied_screen(folder: Path, groups: int, seed: int = 3, name: str = "plates.csv") -> Path:
    """`groups` compounds of 5 to 14 points (varied sizes), written with every digit."""
    rng = np.random.default_rng(seed)
    lines = ["compound,dose,response"]
    for g in range(groups):
        n = int(rng.integers(5, 15))
        dose = np.sort(10 ** rng.uniform(-3, 2, n))
        b, t, e, h = rng.uniform(0, 10), rng.uniform(90, 110), 10 ** rng.uniform(-2, 1), rng.uniform(0.5, 2)
        y = b + (t - b) / (1 + (e / dose) ** h) + rng.normal(0, 2, n)
        lines += [f"C{g},{d!r},{v!r}" for d, v in zip(dose.tolist(), y.tolist())]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def write_exact(path: Path, columns: dict[str, np.ndarray]) -> None:
    """A screen as CSV with every digit (make_screen's CSV keeps 6), so that scipy sees the same numbers."""
    lines = ["compound,dose,response"] + [f"{c},{d!r},{r!r}" for c, d, r in
                                          zip(*(columns[k].tolist() for k in ("compound", "dose", "response")))]
    path.write_text("\n".join(lines) + "\n")


def fit_alone(folder: Path, job: dict, header: str, lines: list[str]):
    """The single fit of one group's rows (CSV `lines` under `header`) with the job's settings:
    what each group of the job must equal."""
    from gdfit.config import load_config
    from gdfit.engine.descent import Descent, prepare

    (folder / "single.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    (folder / "single.yaml").write_text(yaml.safe_dump({**job, "data": {"file": "single.csv"}}, sort_keys=False))
    descent = Descent(prepare(load_config(str(folder / "single.yaml"))), advice=False)
    for _ in descent.steps():
        pass
    return descent.result


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- equality with single fits


@pytest.mark.parametrize("extra", [{}, {"max_iters": 6}, {"patience": 2, "min_rel_improvement": 0.2}],
                         ids=["default", "max_iters", "patience"])
def test_each_group_equals_its_single_fit_bit_for_bit(cli, tmp_path, monkeypatch, extra):
    """Many fits go at their own pace (a group's refused trial does not hold the others back) and
    single fits do not: each group's numbers are still its single fit's, bit for bit, and so are
    its stop rules' decisions (patience counts each group's own updates)."""
    from gdfit.fitting.lm import LevenbergMarquardt

    overlapped = []  # per update begun among many: whether another group was partway through its own
    begin = LevenbergMarquardt._begin

    def spy(self, runs, x):
        overlapped.append(self.own_pace and self.pending is not None and bool(self.pending.any()))
        return begin(self, runs, x)

    monkeypatch.setattr(LevenbergMarquardt, "_begin", spy)
    data = varied_screen(tmp_path, 50)
    result = cli("run", str(job_config(tmp_path, data.name, **extra)), "--json")
    assert result.exit_status in (0, 1), result.stderr
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    assert len(events) == 50
    sizes = set()
    rows: dict[str, list[str]] = {}
    for line in data.read_text().splitlines()[1:]:
        group, rest = line.split(",", 1)
        rows.setdefault(group, []).append(rest)
    for group, lines in rows.items():
        sizes.add(len(lines))
        job = yaml.safe_load(job_config(tmp_path, "single.csv", **extra).read_text())
        alone, event = fit_alone(tmp_path, job, "dose,response", lines), events[group]
        # a converged fit whose data leave a direction undetermined is `degenerate` among many
        assert event["status"] == alone.status or (event["status"] == "degenerate" and alone.status == "converged")
        assert (event["iters"], event["loss"]) == (alone.iters, alone.loss), group
        for name in ORDER:
            assert event["params"][name]["value"] == alone.params[name]["value"], (group, name)
            if event["status"] == "converged":
                assert event["params"][name]["stderr"] == alone.params[name]["stderr"], (group, name)
        for name, value in event["fit"].items():
            assert value == alone.fit[name], (group, name)
    assert len(sizes) >= 8  # groups of many sizes: each size its own batch
    assert any(overlapped)
    statuses = [e["status"] for e in events.values()]
    stopped_by = {"max_iters": "max_iters", "patience": "stalled"}
    assert statuses.count(stopped_by[next(iter(extra))]) >= 10 if extra else statuses.count("converged") >= 40


# ---------------------------------------------------------------- accuracy against scipy


def well_posed(groups: int, seed: int) -> dict[str, np.ndarray]:
    """Compounds at all 12 doses, their ec50 well inside the doses, moderate slopes and noise."""
    rng = np.random.default_rng(seed)
    dose = np.logspace(-3, 2, 12)
    b, t = rng.uniform(0, 10, groups), rng.uniform(90, 110, groups)
    e, h = 10 ** rng.uniform(-1.5, 0.5, groups), rng.uniform(0.8, 1.6, groups)
    f = b[:, None] + (t - b)[:, None] / (1 + (e[:, None] / dose) ** h[:, None])
    y = f + rng.normal(0, 2, f.shape)
    return {"compound": np.repeat(np.arange(groups), 12), "dose": np.tile(dose, groups), "response": y.ravel()}


def four_pl(x: np.ndarray, y: np.ndarray):
    """The residuals and their exact Jacobian, for scipy."""
    def residuals(p):
        with np.errstate(invalid="ignore"):  # scipy's trial steps may take ec50 below 0
            return p[0] + (p[1] - p[0]) / (1 + (p[2] / x) ** p[3]) - y

    def jacobian(p):
        u = (p[2] / x) ** p[3]
        share = 1 / (1 + u)
        slope = -(p[1] - p[0]) * share ** 2 * u
        return np.stack([1 - share, share, slope * p[3] / p[2], slope * np.log(p[2] / x)], axis=1)

    return residuals, jacobian


def test_five_hundred_groups_agree_with_least_squares(cli, tmp_path):
    from scipy.optimize import least_squares

    columns = well_posed(500, seed=11)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv", ftol=1e-13, xtol=1e-13, gtol=1e-13)
    result = cli("run", str(config), "--json", "--output", str(tmp_path / "results.csv"))
    assert result.exit_status == 0, result.lines[-1]
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    x, y = columns["dose"].reshape(500, 12), columns["response"].reshape(500, 12)
    for g in range(500):
        residuals, jacobian = four_pl(x[g], y[g])
        fit = least_squares(residuals, [0, 100, 1, 1], jac=jacobian, method="lm", ftol=1e-15, xtol=1e-15,
                            gtol=1e-15)
        J = jacobian(fit.x)
        stderr = np.sqrt(np.diag(np.linalg.inv(J.T @ J)) * (2 * fit.cost / (12 - 4)))
        event = events[g]
        for j, name in enumerate(ORDER):
            assert event["params"][name]["value"] == pytest.approx(fit.x[j], rel=1e-6), (g, name)
            assert event["params"][name]["stderr"] == pytest.approx(stderr[j], rel=1e-5), (g, name)
        assert event["fit"]["chi2"] == pytest.approx(2 * fit.cost, rel=1e-12)
    rows = read_rows(tmp_path / "results.csv")
    assert [int(r["group"]) for r in rows] == list(range(500))
    assert float(rows[7]["hill_stderr"]) == events[7]["params"]["hill"]["stderr"]


# ---------------------------------------------------------------- failed groups


def test_failed_groups_get_their_status_and_the_others_go_on(cli, tmp_path):
    columns, _ = screen(30, seed=5, failures=True)  # groups 30..33: flat, 3 points, all NaN, one dose
    write(tmp_path / "plates.csv", columns)
    with open(tmp_path / "plates.csv", "a") as handle:  # a missing dose at an observed point
        handle.write("34,0.1,5\n34,nan,7\n34,1,9\n34,10,50\n34,100,90\n34,3,70\n")
        handle.write("35,0.1,5\n35,1,9\n35,10,50\n35,100,90\n35,3,nan\n")  # as many points as parameters
    result = cli("run", str(job_config(tmp_path, "plates.csv")), "--json", "--output", str(tmp_path / "r.json"))
    assert result.exit_status == 1
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    expected = {30: "flat", 31: "too_few_points", 32: "no_data", 33: "degenerate", 34: "bad_data",
                35: "too_few_points"}
    assert {g: events[g]["status"] for g in expected} == expected
    for g in expected:
        assert all(p["stderr"] is None for p in events[g]["params"].values())
    assert events[31]["fit"]["n"] == 3 and events[32]["fit"]["n"] == 0
    assert events[35]["fit"]["dof"] == 0 and events[32]["fit"]["dof"] is None  # no negative degrees of freedom
    assert sum(events[g]["status"] == "converged" for g in range(30)) >= 28
    end = result.lines[-1]
    assert end["event"] == "end" and end["groups"] == 36
    assert sum(end["by_status"].values()) == 36 and end["by_status"]["flat"] == 1
    document = json.loads((tmp_path / "r.json").read_text())
    assert len(document["groups"]) == 36 and document["end"]["by_status"] == end["by_status"]


def test_every_group_converged_exits_0_and_json_is_strict(cli, tmp_path):
    columns, _ = screen(20, seed=2)
    write(tmp_path / "plates.csv", columns)
    result = cli("run", str(job_config(tmp_path, "plates.csv")), "--json")
    kinds = [e["event"] for e in result.lines]  # strict JSON: no NaN tokens
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("group") == 20
    if all(e["status"] == "converged" for e in result.lines if e["event"] == "group"):
        assert result.exit_status == 0
    else:
        assert result.exit_status == 1
    assert result.lines[-1]["fits_per_s"] > 0


# ---------------------------------------------------------------- formats


def test_csv_npz_and_parquet_inputs_and_outputs_agree(cli, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns, _ = screen(40, seed=8, failures=True)
    tables = {}
    for suffix in (".csv", ".npz", ".parquet"):
        name = f"plates{suffix}"
        if suffix == ".csv":  # every digit, so that the three hold the same numbers
            write_exact(tmp_path / name, columns)
        else:
            write(tmp_path / name, columns)
        out = tmp_path / f"from{suffix}.parquet"
        result = cli("run", str(job_config(tmp_path, name)), "--output", str(out))
        assert result.exit_status == 1, result.stderr
        tables[suffix] = pq.read_table(out).to_pylist()
    assert tables[".csv"] == tables[".npz"] == tables[".parquet"]
    rows = tables[".csv"]
    header = list(rows[0])
    assert header == ["group", "status", "iters", "loss", "bottom", "bottom_stderr", "top", "top_stderr", "ec50",
                      "ec50_stderr", "hill", "hill_stderr", "n", "dof", "chi2", "reduced_chi2", "r2", "aic", "bic"]
    for out in ("r.csv", "r.json"):
        assert cli("run", str(job_config(tmp_path, "plates.csv")), "--output", str(tmp_path / out)).exit_status == 1
    as_json = json.loads((tmp_path / "r.json").read_text())["groups"]
    assert as_json == rows
    for row, other in zip(read_rows(tmp_path / "r.csv"), rows):
        for key in header:
            value = other[key]
            assert row[key] == ("" if value is None else repr(value) if isinstance(value, float) else str(value)), key
    metadata = pq.read_schema(tmp_path / "from.csv.parquet").metadata
    assert json.loads(metadata[b"gdfit"])["end"]["groups"] == 44


def test_text_group_values_stay_text_and_keep_their_order(cli, tmp_path):
    data = varied_screen(tmp_path, 6)
    text = data.read_text().replace("C5,", "A5,").replace("C0,", "Z0,")
    data.write_text(text)
    out = tmp_path / "r.csv"
    cli("run", str(job_config(tmp_path, data.name)), "--output", str(out))
    rows = read_rows(out)
    assert [r["group"] for r in rows] == ["Z0", "C1", "C2", "C3", "C4", "A5"]  # as first seen
    counts = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert [int(r["n"]) for r in rows] == [counts.count(r["group"]) for r in rows]  # each its own rows
    assert json.loads(Path(str(out) + ".json").read_text())["data"] == str(data.resolve())


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".parquet"])
def test_a_text_column_the_model_does_not_read_is_left_alone(cli, tmp_path, suffix):
    """A plate or well ID beside the numbers: the job reads only the columns it fits, in every format."""
    data = varied_screen(tmp_path, 4)
    lines = data.read_text().splitlines()
    lines = [lines[0] + ",well"] + [f"{line},A{i % 12 + 1}" for i, line in enumerate(lines[1:])]
    data.write_text("\n".join(lines) + "\n")
    plain = cli("run", str(job_config(tmp_path, data.name)), "--output", str(tmp_path / "plain.csv"))
    if suffix != ".csv":
        pytest.importorskip("pyarrow")
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        table = pcsv.read_csv(data, convert_options=pcsv.ConvertOptions(column_types={"compound": pa.string()}))
        data = tmp_path / f"plates{suffix}"
        if suffix == ".npz":
            np.savez(data, **{name: table.column(name).to_numpy(zero_copy_only=False).astype(
                str if name in ("compound", "well") else float) for name in table.column_names})
        else:
            pq.write_table(table, data)
        plain = cli("run", str(job_config(tmp_path, data.name)), "--output", str(tmp_path / "plain.csv"))
    assert plain.exit_status in (0, 1), plain.stderr
    assert len(read_rows(tmp_path / "plain.csv")) == 4


@pytest.mark.parametrize("dialect", ["a byte-order mark", "semicolons", "tabs", "quoted cells"])
@pytest.mark.parametrize("pyarrow_reader", [True, False], ids=["pyarrow", "csv module"])
def test_a_spreadsheets_csv_reads_as_the_plain_one(cli, tmp_path, monkeypatch, dialect, pyarrow_reader):
    """The CSV dialects a single fit reads (files/dialect.py) read the same for many fits."""
    from gdfit.files import tables

    if pyarrow_reader:
        pytest.importorskip("pyarrow")
    monkeypatch.setattr(tables, "_has_pyarrow", lambda: pyarrow_reader)
    data = varied_screen(tmp_path, 4)
    plain = cli("run", str(job_config(tmp_path, data.name)), "--output", str(tmp_path / "plain.csv"))
    text = data.read_text()
    if dialect == "a byte-order mark":
        raw = b"\xef\xbb\xbf" + text.encode()
    elif dialect == "quoted cells":
        raw = "\n".join(",".join(f'"{cell}"' for cell in line.split(",")) for line in text.splitlines()).encode()
    else:
        raw = text.replace(",", ";" if dialect == "semicolons" else "\t").encode()
    other = tmp_path / "other.csv"
    other.write_bytes(raw)
    result = cli("run", str(job_config(tmp_path, other.name)), "--output", str(tmp_path / "other_out.csv"))
    assert result.exit_status == plain.exit_status, result.stderr
    assert (tmp_path / "other_out.csv").read_text() == (tmp_path / "plain.csv").read_text()


# ---------------------------------------------------------------- bad input


def _nothing_written(tmp_path: Path, before: set[str]) -> None:
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("case", ["missing group column", "text in a number column", "parquet without pyarrow",
                                  "unknown column in the expression", "a parameter named as a results column",
                                  "a parameter named as another's stderr", "a loss lm does not take",
                                  "the output is the data file", "the output is the config", "a row of no group",
                                  "a folder with another journal's file"])
def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, monkeypatch, case):
    data = varied_screen(tmp_path, 5)
    config = job_config(tmp_path, data.name)
    output = tmp_path / "r.csv"
    if case == "a parameter named as a results column":  # n: a Hill coefficient's usual name, and the points' count
        config.write_text(config.read_text().replace("hill", "n"))
        expect = "model.params.n: parameter 'n' has the name of a results column"
    elif case == "a parameter named as another's stderr":
        config.write_text(config.read_text().replace("hill", "top_stderr"))
        expect = "parameter 'top_stderr' has the name of a results column"
    elif case == "a loss lm does not take":
        config.write_text(config.read_text() + "loss: l1\n")
        expect = "lm minimises squared residuals"
    elif case == "a folder with another journal's file":
        (tmp_path / "job").mkdir()
        (tmp_path / "job" / "runs.jsonl").write_text('{"mine": 1}\n')
        expect = "already holds runs.jsonl, but no config.json"
    elif case == "a row of no group":  # not one group with a group named "nan"
        labels = np.array([1.0] * 4 + [np.nan] * 4)
        np.savez(tmp_path / "plates.npz", compound=labels, dose=np.tile([1.0, 2, 3, 4], 2),
                 response=np.arange(8.0))
        config = job_config(tmp_path, "plates.npz")
        expect = "data.group: the group column 'compound' has no value in data row 5"
    elif case == "the output is the data file":
        output = data
        expect = "data.file and --output name the same file"
    elif case == "the output is the config":
        config = config.rename(tmp_path / "r.csv.json")  # the JSON beside a CSV table
        expect = "CONFIG and --output name the same file"
    elif case == "missing group column":
        config.write_text(config.read_text().replace("group: compound", "group: plate"))
        expect = "no group column 'plate'; the columns are compound, dose, response"
    elif case == "text in a number column":
        lines = data.read_text().splitlines()
        lines[7] = lines[7].rsplit(",", 1)[0] + ",n/a?"
        data.write_text("\n".join(lines) + "\n")
        expect = f"line 8, column 'response' (group '{lines[7].split(',')[0]}'): 'n/a?' is not a number"
    elif case == "parquet without pyarrow":
        config.write_text(config.read_text().replace(data.name, "plates.parquet"))
        (tmp_path / "plates.parquet").write_bytes(b"PAR1")
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        expect = "reading .parquet needs pyarrow"
    else:
        config.write_text(config.read_text().replace("/ dose)", "/ conc)"))
        expect = "conc"
    before = {p.name for p in tmp_path.iterdir()}
    contents = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = cli("run", str(config), "--output", str(output), "--output-dir", str(tmp_path / "job"))
    assert result.exit_status == 2, result.stderr
    assert expect in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    _nothing_written(tmp_path, before)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == contents
    if (tmp_path / "job").exists():
        assert [p.name for p in (tmp_path / "job").iterdir()] == ["runs.jsonl"]
        assert (tmp_path / "job" / "runs.jsonl").read_text() == '{"mine": 1}\n'


def test_a_huber_loss_is_the_single_fits_and_mixed_labels_write_to_parquet(cli, tmp_path):
    """loss: huber is lm's robust huber for each group, values and standard errors as for one fit;
    labels of mixed kinds (7, a, 007) go into a Parquet table as their text, each its own group."""
    pytest.importorskip("pyarrow")
    data = varied_screen(tmp_path, 3)
    text = data.read_text().replace("C0,", "7,").replace("C1,", "a,").replace("C2,", "007,")
    data.write_text(text)
    config = job_config(tmp_path, data.name, loss={"name": "huber", "f_scale": 1.0})
    result = cli("run", str(config), "--json", "--output", str(tmp_path / "r.parquet"))
    assert result.exit_status in (0, 1), result.stderr
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    assert set(events) == {7, "a", "007"}
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "r.parquet").column("group").to_pylist() == ["7", "a", "007"]
    lines = [line.split(",", 1)[1] for line in text.splitlines()[1:] if line.startswith("a,")]
    alone = fit_alone(tmp_path, yaml.safe_load(config.read_text()), "dose,response", lines)
    assert (events["a"]["iters"], events["a"]["loss"]) == (alone.iters, alone.loss)
    assert events["a"]["status"] == alone.status == "converged"
    for name in ORDER:  # the robust fit's standard errors too, as curve_fit gives them (J scaled for the loss)
        assert events["a"]["params"][name]["value"] == alone.params[name]["value"], name
        assert events["a"]["params"][name]["stderr"] == alone.params[name]["stderr"], name


def test_float32_huber_groups_far_from_their_optimum_are_their_single_fits(cli, tmp_path):
    """lm in float32 with huber from a = tau = beta = 1: G2 starts with every residual beyond
    f_scale (where its trust radius met float32's resolution, lm.RESOLVABLE), G0 and G1 with a few
    inside. Each group is still its single fit, bit for bit, and gets to scipy's optimum, not to a
    convergence claimed on the way."""
    scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is the test-only oracle (extra `test`)")
    rng = np.random.default_rng(7)
    t = np.array([0.0, 0.07, 0.33, 0.56, 0.98, 1.6, 2.4, 3.7, 4.1, 4.4, 4.8])
    groups = {f"G{g}": a * np.exp(-(t / tau) ** beta) + 0.02 * rng.standard_normal(t.size)
              for g, (a, tau, beta) in enumerate([(4.1, 1.6, 1.4), (3.0, 0.8, 0.9), (5.0, 2.2, 1.8)])}
    lines = [f"{g},{ti!r},{yi!r}" for g, y in groups.items() for ti, yi in zip(t.tolist(), y.tolist())]
    (tmp_path / "decays.csv").write_text("sample,t,y\n" + "\n".join(lines) + "\n")
    model = {"expr": "a*exp(-(t/tau)**beta)", "params": {"a": 1, "tau": {"value": 1, "min": 0.01}, "beta": 1}}
    job = {"data": {"file": "decays.csv", "group": "sample"}, "target": {"column": "y"}, "model": model,
           "loss": {"name": "huber", "f_scale": 0.05}, "optimizer": "lm", "dtype": "float32"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    result = cli("run", str(tmp_path / "job.yaml"), "--json")
    assert result.exit_status == 0, result.stderr
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    for group, y in groups.items():
        rows = [f"{a!r},{b!r}" for a, b in zip(t.tolist(), y.tolist())]
        alone, event = fit_alone(tmp_path, job, "t,y", rows), events[group]
        assert (event["status"], event["iters"], event["loss"]) == (alone.status, alone.iters, alone.loss), group
        found = [event["params"][name]["value"] for name in ("a", "tau", "beta")]
        assert found == [alone.params[name]["value"] for name in ("a", "tau", "beta")], group
        expected = scipy_optimize.least_squares(lambda p: p[0] * np.exp(-(t / p[1]) ** p[2]) - y, [1.0, 1.0, 1.0],
                                                loss="huber", f_scale=0.05, bounds=([-np.inf, 0.01, -np.inf], np.inf),
                                                xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        # float32's rounded costs cannot place a minimum closer than about sqrt(eps32) = 3.5e-4
        np.testing.assert_allclose(found, expected, rtol=1e-3, err_msg=group)


def test_options_of_one_fit_are_refused(cli, tmp_path):
    data = varied_screen(tmp_path, 3)
    result = cli("run", str(job_config(tmp_path, data.name)), "--plot", str(tmp_path / "p.png"))
    assert result.exit_status == 2 and "--plot applies to one fit" in result.stderr


# ---------------------------------------------------------------- human view


def test_the_summary_counts_statuses_and_gives_medians_and_quartiles():
    from rich.console import Console

    from gdfit.render.groups_view import GroupHuman, parameter_summary
    from gdfit.sweeps.groups import GroupResults

    values = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, 1000.0]])
    results = GroupResults([0, 1, 2, 3, 4], ["converged"] * 4 + ["max_iters"], [3] * 5, [0.1] * 5, values,
                           np.ones_like(values), {})
    summary = {"params": parameter_summary(("a", "b"), results)}
    assert summary["params"]["a"] == {"median": 2.5, "q1": 1.75, "q3": 3.25}  # the max_iters group left out
    out = io.StringIO()
    view = GroupHuman(Console(file=out, width=100), clock=iter(range(100)).__next__)
    view.groups(["w", "x", "y", "z", "last"], ("a", "b"), results)
    view.end({"groups": 5, "by_status": {"converged": 4, "max_iters": 1}, "elapsed_s": 2.0, "fits_per_s": 2.5}, summary)
    text = out.getvalue()
    assert "│ converged │      4 │ 80.0% │" in text and "│ max_iters │      1 │ 20.0% │" in text
    assert "│ a         │    2.5 │ 1.75 │ 3.25 │ 1.5 │" in text and "│ b         │     25 │ 17.5 │ 32.5 │  15 │" in text
    assert "not converged: last (max_iters)" in text


# ---------------------------------------------------------------- resume and Dask


def paused_job(cli, tmp_path: Path, groups: int, seed: int):
    """A screen's job, its uninterrupted table in whole.csv, and the same job journaled into job/
    by a process paused right after its first batch is journaled: (config, folder, process)."""
    import os
    import subprocess

    columns, _ = screen(groups, seed=seed)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv")
    whole = cli("run", str(config), "--output", str(tmp_path / "whole.csv"))
    assert whole.exit_status in (0, 1)  # 1: some group did not converge
    folder = tmp_path / "job"
    env = {**os.environ, "GDFIT_PAUSE_AT": "groups", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", "run", str(config), "--output-dir", str(folder), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    assert "paused at groups" in proc.stderr.readline()
    return config, folder, proc


@pytest.mark.slow
def test_a_job_killed_mid_run_resumes_to_the_same_table(cli, tmp_path):
    import os
    import signal

    config, folder, proc = paused_job(cli, tmp_path, 64, seed=4)  # five sizes: five batches
    try:
        running = cli("run", str(config), "--resume", str(folder))  # while the job still runs: one writer
        assert running.exit_status == 2 and f"another gdfit process (PID {proc.pid})" in running.stderr
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    lines = (folder / "runs.jsonl").read_text().splitlines()
    assert 0 < len(lines) < 64 and not (folder / "summary.json").exists()
    with open(folder / "runs.jsonl", "a") as handle:
        handle.write('{"index": 5, "group": 5, "sta')  # a line cut short by the kill
    resumed = cli("run", str(config), "--resume", str(folder), "--output", str(tmp_path / "resumed.csv"), "--json")
    assert resumed.exit_status == 0, resumed.stderr  # every one of these 64 groups converges
    assert len([e for e in resumed.lines if e["event"] == "group"]) == 64 - len(lines)
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "whole.csv").read_text()
    journaled = [json.loads(line)["index"] for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert sorted(journaled) == list(range(64))  # each group exactly once
    assert json.loads((folder / "summary.json").read_text())["end"]["groups"] == 64
    again = cli("run", str(config), "--output-dir", str(folder))
    assert again.exit_status == 2 and "gdfit run CONFIG --resume" in again.stderr


@pytest.mark.slow
def test_ctrl_c_stops_every_running_batch_and_a_resume_finishes_the_table(cli, tmp_path):
    """Ctrl-C while batches run (on threads where the CPUs allow): exit 130 with `end` last and no
    traceback, one event per group (those not reached `interrupted`); the journal holds finished
    groups only, and a resume gives the uninterrupted table."""
    import signal

    config, folder, proc = paused_job(cli, tmp_path, 6000, seed=9)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    events = [json.loads(line) for line in out.splitlines()]
    end = events[-1]
    assert end["event"] == "end" and end["by_status"].get("interrupted", 0) > 0
    groups = [e for e in events if e["event"] == "group"]  # every group has its event, interrupted or not
    assert sorted(e["group"] for e in groups) == list(range(6000))
    assert sum(e["status"] == "interrupted" for e in groups) == end["by_status"]["interrupted"]
    journaled = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert 0 < len(journaled) < 6000 and all(line["status"] != "interrupted" for line in journaled)
    resumed = cli("run", str(config), "--resume", str(folder), "--output", str(tmp_path / "resumed.csv"))
    assert resumed.exit_status == 1, resumed.stderr
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "whole.csv").read_text()


def test_a_resume_refuses_a_changed_config_or_data_file(cli, tmp_path):
    data = varied_screen(tmp_path, 4)
    folder, config = tmp_path / "job", job_config(tmp_path, data.name)
    assert cli("run", str(config), "--output-dir", str(folder)).exit_status in (0, 1)
    other = cli("run", str(config), "--resume", str(folder), "--set", "max_iters=50")
    assert other.exit_status == 2 and "config max_iters differs: the journal has 200, now 50" in other.stderr
    assert "belongs to a different many-fits job" in other.stderr and "with the config the job started" in other.stderr
    both = cli("run", str(config), "--resume", str(folder), "--output-dir", str(tmp_path / "elsewhere"))
    assert both.exit_status == 2 and "leave out --output-dir" in both.stderr and not (tmp_path / "elsewhere").exists()
    data.write_text(data.read_text() + "C0,1.0,50.0\n")
    result = cli("run", str(config), "--resume", str(folder))
    assert result.exit_status == 2 and "the data file has changed" in result.stderr


@pytest.mark.slow
def test_dask_gives_the_local_table_on_loopback_only(cli, tmp_path, monkeypatch):
    import threading
    import time

    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    columns, _ = screen(80, seed=6, failures=True)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv")
    assert cli("run", str(config), "--output", str(tmp_path / "local.csv")).exit_status == 1
    me, seen, bad, done = psutil.Process(), set(), [], threading.Event()

    def watch() -> None:
        while not done.is_set():
            pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
            seen.update(pids)
            bad.extend(sockets_off_loopback(pids))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = cli("run", str(config), "--backend", "dask", "--output", str(tmp_path / "dask.csv"))
    finally:
        done.set()
        watcher.join()
    assert result.exit_status == 1, result.stderr
    assert not bad, "\n".join(sorted(set(bad)))
    assert len(seen) > 3, "the watcher never saw the cluster's processes"
    assert (tmp_path / "dask.csv").read_text() == (tmp_path / "local.csv").read_text()


def two_cpus() -> None:
    """In the child before it runs: SIGINT as at a terminal, and two CPUs, so that its local
    cluster has two workers and each task a known share of the job, whatever the machine."""
    import os

    sigint_as_at_a_terminal()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])


@pytest.mark.slow
def test_ctrl_c_of_a_dask_job_shows_gdfit_s_words_only(tmp_path):
    """Ctrl-C as soon as the first task's groups are in, while the workers run the next ones: the
    job ends as interrupted (130, its table with the groups not reached), and Dask's own lines
    about the tasks it cancels (a warning from each worker) stay off the terminal."""
    import os
    import signal
    import subprocess

    pytest.importorskip("distributed")
    columns, _ = screen(10_000, seed=8)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv")
    env = {key: value for key, value in os.environ.items() if key != "DASK_SCHEDULER_ADDRESS"}
    env.update({"GDFIT_PAUSE_AT": "groups", "NO_COLOR": "1", "COLUMNS": "100"})
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", "run", str(config), "--backend", "dask", "--output",
                             str(tmp_path / "r.csv")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=two_cpus)
    try:
        assert "paused at groups" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out and "10,000 groups in" in out
    statuses = [row["status"] for row in csv.DictReader(open(tmp_path / "r.csv"))]
    assert len(statuses) == 10_000 and 0 < statuses.count("interrupted") < 10_000
    assert not dask_noise(err), err
    # gdfit itself has nothing to add on stderr (its words are the table's), but for the pause
    # point's own line, which a batch that ends after the Ctrl-C prints again on its way past
    assert [line for line in err.splitlines() if line != "gdfit: paused at groups"] == [], err


@pytest.mark.slow
def test_a_dask_job_beside_a_taken_dashboard_port_prints_nothing_of_it(tmp_path):
    """127.0.0.1:8787, Dask's dashboard port, taken (a second gdfit job, any other cluster): the
    job's cluster serves its HTTP routes on a free port of 127.0.0.1 and says nothing about it."""
    pytest.importorskip("distributed")
    from conftest import run_process

    columns, _ = screen(40, seed=6)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv")
    with holding_port(8787):
        result = run_process("run", str(config), "--backend", "dask", "--output", str(tmp_path / "r.csv"),
                             env={"DASK_SCHEDULER_ADDRESS": ""})
    assert result.exit_status in (0, 1), result.stderr
    assert len(list(csv.DictReader(open(tmp_path / "r.csv")))) == 40
    assert not dask_noise(result.stderr), result.stderr


# ---------------------------------------------------------------- plot


def test_plot_draws_histograms_and_one_group_from_each_format(cli, tmp_path):
    pytest.importorskip("matplotlib")
    from gdfit.pictures.groups_plot import parameter_names, read_results

    columns, _ = screen(30, seed=9, failures=True)
    write_exact(tmp_path / "plates.csv", columns)
    config = job_config(tmp_path, "plates.csv")
    for suffix in (".csv", ".json", ".parquet"):
        results = tmp_path / f"r{suffix}"
        assert cli("run", str(config), "--output", str(results)).exit_status == 1
        rows, document = read_results(results)
        assert parameter_names(rows) == list(ORDER) and len(rows) == 34
        assert document["data"] == str((tmp_path / "plates.csv").resolve())
        for extra, image in (((), "hist.png"), (("--group", "7"), "g7.svg")):
            drawn = cli("plot", str(results), *extra, "-o", str(tmp_path / image))
            assert drawn.exit_status == 0, drawn.stderr
            assert (tmp_path / image).stat().st_size > 1000
            (tmp_path / image).unlink()
    missing = cli("plot", str(tmp_path / "r.csv"), "--group", "nope", "-o", str(tmp_path / "x.png"))
    assert missing.exit_status == 2 and "no group 'nope'" in missing.stderr and not (tmp_path / "x.png").exists()
    text = (tmp_path / "plates.csv").read_text().splitlines()  # a group whose label is empty: --group ""
    (tmp_path / "plates.csv").write_text("\n".join([text[0]] + [line.replace("7,", ",", 1) if line.startswith("7,")
                                                             else line for line in text[1:]]) + "\n")
    assert cli("run", str(config), "--output", str(tmp_path / "e.csv")).exit_status == 1
    drawn = cli("plot", str(tmp_path / "e.csv"), "--group", "", "-o", str(tmp_path / "e.png"))
    assert drawn.exit_status == 0, drawn.stderr
    text = (tmp_path / "plates.csv").read_text().splitlines()  # labels 09 and 9: two groups, each found
    (tmp_path / "plates.csv").write_text("\n".join([text[0]] + [line.replace("8,", "09,", 1) if line.startswith("8,")
                                                             else line for line in text[1:]]) + "\n")
    assert cli("run", str(config), "--output", str(tmp_path / "o.csv")).exit_status == 1
    for label in ("09", "9"):
        drawn = cli("plot", str(tmp_path / "o.csv"), "--group", label, "-o", str(tmp_path / f"o{label}.png"))
        assert drawn.exit_status == 0, drawn.stderr


def test_without_pyarrow_csvs_read_the_same_with_the_csv_module(monkeypatch, tmp_path):
    pytest.importorskip("pyarrow")
    from gdfit.files import tables

    data = varied_screen(tmp_path, 12)
    text = data.read_text().replace("C3,", "007,").replace("C4,", "12,").replace("C5,", "+5,")
    lines = text.splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ","  # an empty cell: missing
    data.write_text("\n".join(lines) + "\n")
    def read():
        table = tables.read_grouped(data, "compound", lambda n: None)
        table.require_numbers(["dose", "response"])
        return table

    fast = read()
    monkeypatch.setattr(tables, "_has_pyarrow", lambda: False)
    slow = read()
    assert fast.labels == slow.labels and fast.labels[3:6] == ["007", 12, "+5"]
    assert fast.bounds.tolist() == slow.bounds.tolist()
    for name in ("dose", "response"):
        assert np.array_equal(fast.columns[name], slow.columns[name], equal_nan=True)
    assert np.isnan(fast.columns["response"][3]) and np.isnan(slow.columns["response"][3])
    lines[9] = lines[9].rsplit(",", 1)[0] + ",oops"
    data.write_text("\n".join(lines) + "\n")
    group = lines[9].split(",")[0]
    for reader in (True, False):
        monkeypatch.setattr(tables, "_has_pyarrow", lambda: reader)
        with pytest.raises(tables.InputFileError, match=rf"line 10, column 'response' \(group '{group}'\): 'oops'"):
            read()


def test_gdfit_config_validates_a_grouped_config_as_run_does(cli, tmp_path):
    data = varied_screen(tmp_path, 3)
    config = job_config(tmp_path, data.name)
    shown = cli("config", str(config), "--json")
    assert shown.exit_status == 0, shown.stderr
    assert shown.lines[0]["data"] == {"file": data.name, "group": "compound"}
    wrong = cli("config", str(config), "--set", "data.group=plate")
    assert wrong.exit_status == 2 and "plate" in wrong.stderr
    advise = cli("config", str(config), "--advise")
    assert advise.exit_status == 2 and "--advise is for a single fit" in advise.stderr


def test_other_commands_refuse_a_grouped_config(cli, tmp_path):
    data = varied_screen(tmp_path, 3)
    result = cli("sweep", str(job_config(tmp_path, data.name)), "--grid", "max_iters=5,10")
    assert result.exit_status == 2 and "data.group makes one fit per group: run the config with gdfit run" in result.stderr


@pytest.mark.slow
def test_a_job_on_the_cpu_never_imports_torch(tmp_path):
    """lm's many fits on the CPU compute in numpy from the table to the results, as a single
    curve fit does: the process never loads torch (seconds of start-up, and memory)."""
    data = varied_screen(tmp_path, 30)
    config = job_config(tmp_path, data.name)
    proc = run_without_torch("run", str(config), "--json", "--output", str(tmp_path / "r.csv"), cwd=tmp_path)
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert len(read_rows(tmp_path / "r.csv")) == 30


def test_the_tensor_path_gives_the_hosts_table_bit_for_bit(cli, tmp_path, monkeypatch):
    """An equivalence check: a job whose config needs torch (another device, a robust loss) runs
    its groups as tensors; lm's algebra is the same numpy either way, so on the CPU the table is
    the one of the numpy path."""
    import torch

    from gdfit.sweeps import groups

    data = varied_screen(tmp_path, 40, seed=8)
    config = job_config(tmp_path, data.name)
    cli("run", str(config), "--output", str(tmp_path / "host.csv"))
    devices = []
    monkeypatch.setattr(groups, "job_device", lambda config: devices.append(1) or torch.device("cpu"))
    cli("run", str(config), "--output", str(tmp_path / "tensors.csv"))
    assert devices  # the tensor path ran
    assert (tmp_path / "tensors.csv").read_text() == (tmp_path / "host.csv").read_text()


def test_batches_on_threads_give_the_stream_of_one_thread(cli, tmp_path, monkeypatch):
    """An equivalence check: batches run on several threads at once (one per usable CPU) yield
    the same group events, in the same order, and the same journal as one thread."""
    import threading

    from gdfit.sweeps import groups

    data = varied_screen(tmp_path, 60, seed=11)  # groups of 10 sizes: 10 batches
    config = job_config(tmp_path, data.name)
    streams, journals, threads = {}, {}, set()
    run_batch = groups.run_group_batch

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return run_batch(*args, **kwargs)

    monkeypatch.setattr(groups, "run_group_batch", spy)
    for workers in (1, 3):
        monkeypatch.setattr(groups, "local_workers", lambda config, workers=workers: workers)
        folder = tmp_path / f"journal{workers}"
        result = cli("run", str(config), "--json", "--output-dir", str(folder))
        assert result.exit_status in (0, 1), result.stderr
        streams[workers] = [line for line in result.lines if line["event"] == "group"]
        # each line as written, less its digest (keyed to its own folder's random id)
        journals[workers] = [re.sub(r',"sha256":"[0-9a-f]{64}"}$', "}", line)
                             for line in (folder / "runs.jsonl").read_text().splitlines()]
    assert len(streams[1]) == 60 and streams[3] == streams[1]
    assert journals[1] and journals[3] == journals[1]
    assert any(name.startswith("gdfit-batch") for name in threads)  # the second run's batches ran on threads


def test_a_group_without_a_finite_derivative_stalls_alone(cli, tmp_path):
    """sqrt(t - c) from c = 0 has an infinite slope in c at t = 0: the group holding t = 0 has no
    step and stops `stalled`; the others converge (LAPACK's SVD, given an inf, would not end)."""
    lines = ["g,t,y"]
    for g in range(6):
        t = np.linspace(0.0 if g == 0 else 0.1, 5, 12)
        lines += [f"G{g},{a!r},{b!r}" for a, b in zip(t.tolist(), (2 * np.sqrt(t) + 1 + 0.1 * g).tolist())]
    (tmp_path / "curves.csv").write_text("\n".join(lines) + "\n")
    config = {"data": {"file": "curves.csv", "group": "g"}, "target": {"column": "y"},
              "model": {"expr": "a * (t - c) ** 0.5 + d", "params": {"a": 1, "c": 0, "d": 0}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", str(tmp_path / "job.yaml"), "--json")
    assert result.exit_status == 1, result.stderr
    statuses = {e["group"]: e["status"] for e in result.lines if e["event"] == "group"}
    assert statuses == {"G0": "stalled", **{f"G{g}": "converged" for g in range(1, 6)}}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_built_in_curve_guesses_each_groups_starts_as_its_single_fit_does(cli, tmp_path, dtype):
    """`model: {name: logistic4, x: dose}` with no values: each group starts from the guess made
    from its own data, so each group equals the single fit of the same built-in curve on that
    group alone (which guesses from the same points, as its dtype holds them), bit for bit."""
    model = {"name": "logistic4", "x": "dose", "params": {"ec50": {"min": 1e-6}, "hill": {"min": 0.1, "max": 10}}}
    data = varied_screen(tmp_path, 12, seed=5)
    job = {"data": {"file": data.name, "group": "compound"}, "target": {"column": "response"}, "model": model,
           "max_iters": 200, "dtype": dtype}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    result = cli("run", str(tmp_path / "job.yaml"), "--json")
    assert result.exit_status in (0, 1), result.stderr
    events = {e["group"]: e for e in result.lines if e["event"] == "group"}
    rows: dict[str, list[str]] = {}
    for line in data.read_text().splitlines()[1:]:
        group, rest = line.split(",", 1)
        rows.setdefault(group, []).append(rest)
    assert len(events) == len(rows) == 12
    for group, lines in rows.items():
        alone, event = fit_alone(tmp_path, job, "dose,response", lines), events[group]
        assert (event["iters"], event["loss"]) == (alone.iters, alone.loss), group
        for name in ORDER:
            assert event["params"][name]["value"] == alone.params[name]["value"], (group, name)

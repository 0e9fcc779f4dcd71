"""`gdfit landscape`: the plane, the grid against direct loss evaluations with
torch.nn.functional, the paths against the runs' own histories (single `Descent`s), the text
picture in a fixed-width console, and the command's exit codes and refusals."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, SEED_TARGET
from rich.console import Console

from gdfit.sweeps import landscape as L
from gdfit.config import build_config
from gdfit.engine.descent import Descent, every_n, prepare
from gdfit.errors import ConfigError
from gdfit.sweeps.grid import Run, expand

SEED = str(ROOT / "configs" / "seed.yaml")
# Misra1a (NIST StRD, public domain), as in test_curvefit
X = [77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8, 593.1, 689.1, 760.0]
Y = [10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01, 66.40, 75.47, 81.78]


def misra_config(folder: Path, **extra) -> dict:
    (folder / "misra1a.csv").write_text("x,y\n" + "".join(f"{x!r},{y!r}\n" for x, y in zip(X, Y)))
    config = {"data": {"file": "misra1a.csv"}, "target": {"column": "y"}, "dtype": "float64", "device": "cpu",
              "model": {"expr": "b1 * (1 - exp(-b2 * x))", "params": {"b1": 500, "b2": 1e-4}},
              "optimizer": "lm", "max_iters": 200}
    config.update(extra)
    return config


def runs_of(data: dict, folder: Path, grid: dict | None = None) -> list[Run]:
    if not grid:
        return [Run({}, build_config(data, source=str(folder / "c.yaml"), base_dir=folder))]
    return list(expand(data, grid, str(folder / "c.yaml"), folder))


def seed_data(**extra) -> dict:
    return {"target": SEED_TARGET, "seed": 0, "device": "cpu", "threshold": 1e-5, **extra}


def single(data: dict, folder: Path):
    """The oracle: the same run alone, through `Descent`, reporting every update."""
    descent = Descent(prepare(build_config(data, source="t", base_dir=folder)), report=every_n(1), advice=False)
    steps = list(descent.steps())
    return steps, descent.result


# ---------------------------------------------------------------- the plane


def test_slice_plane_is_orthogonal_normalised_and_through_start_and_end():
    g = torch.Generator().manual_seed(1)
    start, end = torch.rand(3, 3, generator=g), torch.rand(3, 3, generator=g)
    plane = L.slice_plane(start, end, seed=7)
    u, v = plane.u, plane.v
    assert abs(float(u @ v)) <= 1e-12 * float(u @ u)
    assert math.isclose(float(v.norm()), float(u.norm()), rel_tol=1e-12)
    assert torch.equal(u, (end - start).double().flatten())
    ends = plane.coords(torch.stack([start.flatten(), end.flatten()]).double())
    assert torch.allclose(ends, torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64), atol=1e-12)
    # a point off the plane projects orthogonally: its residual is orthogonal to u and v
    p = torch.rand(9, generator=g, dtype=torch.float64)
    a, b = plane.coords(p[None])[0]
    residual = p - plane.points(a[None], b[None])[0]
    assert abs(float(residual @ u)) < 1e-12 and abs(float(residual @ v)) < 1e-12
    assert torch.equal(L.slice_plane(start, end, seed=7).v, v)  # the seed picks the direction


def test_slice_plane_of_a_run_that_never_moved_is_still_a_plane():
    start = torch.ones(4)
    plane = L.slice_plane(start, start, seed=0)
    assert float(plane.u.norm()) > 0 and abs(float(plane.u @ plane.v)) < 1e-12
    assert math.isclose(float(plane.u.norm()), float(plane.v.norm()), rel_tol=1e-12)


def test_one_value_has_no_plane():
    with pytest.raises(ConfigError, match="at least two"):
        L.slice_plane(torch.zeros(1), torch.ones(1), seed=0)


# ---------------------------------------------------------------- the grid against F.mse_loss


def test_grid_on_two_parameters_equals_direct_losses(tmp_path):
    picture = L.build(runs_of(misra_config(tmp_path), tmp_path), size=(37, 23))
    assert picture.plane.kind == "params" and picture.plane.labels == ("b1", "b2")
    x, y = torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64)
    grid = picture.grid
    assert grid.loss.shape == (23, 37)
    for j, i in [(0, 0), (22, 36), (5, 30), (11, 18), (17, 2)]:
        b1, b2 = grid.a[i], grid.b[j]
        assert math.isclose(float(grid.loss[j, i]), float(F.mse_loss(b1 * (1 - torch.exp(-b2 * x)), y)),
                            rel_tol=1e-13)


def test_grid_on_two_of_three_parameters_holds_the_third_at_its_fitted_value(tmp_path):
    data = misra_config(tmp_path, model={"expr": "b1 * (1 - exp(-b2 * x)) + b3",
                                         "params": {"b1": 500, "b2": 1e-4, "b3": 0.5}})
    picture = L.build(runs_of(data, tmp_path), params=["b1", "b2"], size=(15, 11))
    steps, result = single(data, tmp_path)
    b3 = result.params["b3"]["value"]
    assert picture.held == {"b3": b3}
    x, y = torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64)
    for j, i in [(0, 0), (10, 14), (4, 9)]:
        b1, b2 = picture.grid.a[i], picture.grid.b[j]
        direct = F.mse_loss(b1 * (1 - torch.exp(-b2 * x)) + b3, y)
        assert math.isclose(float(picture.grid.loss[j, i]), float(direct), rel_tol=1e-13)


def test_grid_on_a_slice_equals_direct_losses_in_float32(tmp_path):
    picture = L.build(runs_of(seed_data(), tmp_path), size=(21, 19))
    plane, grid = picture.plane, picture.grid
    target = torch.tensor(SEED_TARGET)
    for j, i in [(0, 0), (18, 20), (9, 10), (3, 15)]:
        point = plane.origin + grid.a[i] * plane.u + grid.b[j] * plane.v
        direct = F.mse_loss(point.to(torch.float32).view(3, 3), target)
        assert float(grid.loss[j, i]) == float(direct)


# ---------------------------------------------------------------- the paths against the runs' histories


def test_lr_series_paths_equal_single_runs(tmp_path):
    rates = [1.0, 4.5, 8.9, 9.1]
    picture = L.build(runs_of(seed_data(), tmp_path, {"learning_rate": rates}), size=(11, 11))
    statuses = []
    for trace, lr in zip(picture.traces, rates):
        steps, result = single(seed_data(learning_rate=lr), tmp_path)
        statuses.append(trace.status)
        assert (trace.status, trace.iters) == (result.status, result.iters)
        assert trace.updates == list(range(result.iters + 1))
        assert torch.equal(trace.points[1:], torch.stack([s.x.flatten() for s in steps]))
        assert trace.losses.tolist() == pytest.approx(result.history, rel=1e-6)
        assert trace.losses[1:].tolist() == [s.loss for s in steps]
    assert statuses == ["converged", "converged", "converged", "diverged"]
    assert picture.traces[1].iters == 1  # lr = n / 2 solves mse on 9 elements in one update
    assert picture.best[3] == "learning_rate=4.5"


def test_optimizer_paths_on_a_curve_fit_equal_single_runs(tmp_path):
    data = misra_config(tmp_path, max_iters=40, learning_rate=1e-11)
    grid = {"optimizer": ["gd", "momentum", "adam", "lm"]}
    picture = L.build(runs_of(data, tmp_path, grid), size=(9, 9))
    for trace, name in zip(picture.traces, grid["optimizer"]):
        steps, result = single({**data, "optimizer": name}, tmp_path)
        assert (trace.status, trace.iters) == (result.status, result.iters)
        assert trace.points[1:].tolist() == [[s.params["b1"], s.params["b2"]] for s in steps]
        assert trace.losses.tolist() == pytest.approx(result.history, rel=1e-12)
        assert trace.coords.tolist() == trace.points.tolist()  # the plane of b1 and b2


def test_long_paths_are_thinned_evenly_and_keep_the_end(tmp_path):
    data = seed_data(learning_rate=0.05, max_iters=100, threshold=0)
    trace = L.run_paths(runs_of(data, tmp_path), cap=16)[0]
    steps, result = single(data, tmp_path)
    assert trace.updates[-1] == result.iters == 100 and len(trace.updates) <= 17
    gaps = {b - a for a, b in zip(trace.updates[:-1], trace.updates[1:-1])}
    assert len(gaps) == 1
    history = [None] + [s.x.flatten() for s in steps]
    for k, point in zip(trace.updates[1:], trace.points[1:]):
        assert torch.equal(point, history[k])


def test_frame_holds_every_path_that_stays_finite(tmp_path):
    picture = L.build(runs_of(seed_data(), tmp_path, {"learning_rate": [1.0, 8.9]}), size=(9, 9))
    a, b = picture.grid.a, picture.grid.b
    for trace in picture.traces:
        assert bool((trace.coords[:, 0] > a[0]).all() and (trace.coords[:, 0] < a[-1]).all())
        assert bool((trace.coords[:, 1] > b[0]).all() and (trace.coords[:, 1] < b[-1]).all())


# ---------------------------------------------------------------- the text picture


def test_text_picture_marks_start_paths_and_best():
    from gdfit.pictures.landscape_view import RAMP, show_text

    picture = L.build(runs_of(seed_data(), Path("."), {"learning_rate": [1.0, 4.5]}), size=(41, 21))
    out = io.StringIO()
    show_text(picture, Console(file=out, width=60, color_system=None))
    lines = out.getvalue().splitlines()
    rows = lines[1:22]
    assert all(len(row) == 41 for row in rows)
    assert set("".join(rows)) <= set(RAMP) | set("abAB*o?")
    middle = rows[10]  # the slice's axis b = 0: the start, the paths, the best point
    assert "o" in middle and "a" in middle and "*" in middle
    assert any(line.startswith("a/A learning_rate=1: converged, 19 updates") for line in lines)
    assert any(line.startswith("*  best: loss") for line in lines)


# ---------------------------------------------------------------- the command


def test_cli_text_picture_exits_0(cli):
    result = cli("landscape", SEED, "--compare", "learning_rate=1,4.5", "--device", "cpu")
    assert result.exit_status == 0, result.stderr
    assert "a/A learning_rate=1: converged" in result.stdout and "b/B learning_rate=4.5" in result.stdout


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".gif", b"GIF8")])
def test_cli_writes_pictures(cli, tmp_path, suffix, magic):
    out = tmp_path / f"land{suffix}"
    result = cli("landscape", SEED, "--compare", "learning_rate=1,4.5", "--size", "20", "-o", str(out),
                 "--device", "cpu", "--max-iters", "8")
    assert result.exit_status == 0, result.stderr
    assert out.read_bytes().startswith(magic)
    assert "wrote" in result.stderr


def test_cli_gif_is_an_animation_written_through_a_symlink(cli, tmp_path):
    from PIL import Image

    real = tmp_path / "real.gif"
    real.write_bytes(b"old")
    link = tmp_path / "link.gif"
    link.symlink_to(real)
    result = cli("landscape", SEED, "--size", "12", "-o", str(link), "--device", "cpu", "--max-iters", "5",
                 "--set", "threshold=0")
    assert result.exit_status == 0, result.stderr
    assert link.is_symlink()
    with Image.open(real) as image:
        assert image.n_frames > 1


def test_cli_refuses_other_suffixes_before_running(cli, tmp_path):
    result = cli("landscape", SEED, "-o", str(tmp_path / "x.pdf"))
    assert result.exit_status == 2
    assert "x.pdf" in result.stderr and ".png, .svg, .gif" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refuses_a_fifo(cli, tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = cli("landscape", SEED, "-o", str(fifo))
    assert result.exit_status == 2 and "not a regular file" in result.stderr


def test_cli_bad_params_names_exit_2_naming_them(cli, tmp_path):
    import json

    (tmp_path / "fit.yaml").write_text(json.dumps(misra_config(tmp_path)))
    result = cli("landscape", str(tmp_path / "fit.yaml"), "--params", "b1,b9,c")
    assert result.exit_status == 2
    assert "'b9', 'c'" in result.stderr and "b1, b2" in result.stderr and "Traceback" not in result.stderr
    result = cli("landscape", str(tmp_path / "fit.yaml"), "--params", "b1")
    assert result.exit_status == 2 and "two different parameters" in result.stderr
    result = cli("landscape", SEED, "--params", "x,y")
    assert result.exit_status == 2 and "fits x itself" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--compare", "loss=mse,l1"], "share one loss surface"),
    (["--compare", "learnig_rate=1,2"], "did you mean 'learning_rate'"),
    (["--compare", "optimizer=gd,adam", "--compare", "learning_rate=1", "--paired"], "lists of one length"),
    (["--paired"], "give --compare"),
    (["--compare", "seed=0..20"], "at most 12"),
])
def test_cli_bad_compare_exit_2(cli, args, message):
    result = cli("landscape", SEED, *args)
    assert result.exit_status == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_paired_gives_each_optimizer_its_rate(cli, tmp_path):
    result = cli("landscape", SEED, "--compare", "optimizer=gd,adam", "--compare", "learning_rate=4.5,0.1",
                 "--paired", "--device", "cpu", "--max-iters", "50")
    assert result.exit_status == 0, result.stderr
    assert "optimizer=gd, learning_rate=4.5: converged, 1 update," in result.stdout
    assert "optimizer=adam, learning_rate=0.1" in result.stdout

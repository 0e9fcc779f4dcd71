"""Pictures: real image files, the plotted series equal the run's history, a clear missing-extra error."""

from __future__ import annotations

import math
import sys

import pytest
from conftest import ROOT, strict_json

from gdfit.pictures.plotting import loss_series, sweep_series
from gdfit.render.human import SPARK, sparkline

SEED = str(ROOT / "configs" / "seed.yaml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_run_plot_is_a_real_png(cli, tmp_path):
    image = tmp_path / "loss.png"
    result = cli("run", SEED, "--every", "0", "--plot", str(image))
    assert result.exit_status == 0
    data = image.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 200


def test_plot_command_overlays_saved_runs_as_svg(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    cli("run", SEED, "--every", "0", "--output", str(a))
    b.write_text(cli("run", SEED, "--json", "--set", "learning_rate=0.5").stdout)
    image = tmp_path / "both.svg"
    result = cli("plot", str(a), str(b), "-o", str(image))
    assert result.exit_status == 0, result.stderr
    text = image.read_text()
    assert "<svg" in text and text.rstrip().endswith("</svg>")
    assert "lr 0.5" in text or "lr&#160;0.5" in text or "0.5" in text


def test_plotted_series_is_the_history(cli, tmp_path):
    out = tmp_path / "r.json"
    cli("run", SEED, "--every", "0", "--output", str(out))
    doc = strict_json(out.read_text())
    iters, losses = loss_series(doc["history"])
    assert iters == doc["history"]["iter"] and losses == doc["history"]["loss"]
    assert iters[-1] == doc["iters"]


def test_series_from_json_lines_equals_the_step_events(cli, tmp_path):
    from gdfit.pictures.plotting import read_saved

    path = tmp_path / "run.jsonl"
    events = cli("run", SEED, "--json", "--every", "1")
    path.write_text(events.stdout)
    [doc] = read_saved(path)
    steps = [e for e in events.lines if e["event"] == "step"]
    assert doc["history"]["loss"] == [events.lines[0]["loss"]] + [s["loss"] for s in steps]


def test_an_every_0_capture_has_its_start_and_end_and_says_so(cli, tmp_path):
    from gdfit.pictures.plotting import read_saved

    path = tmp_path / "run.jsonl"
    events = cli("run", SEED, "--json", "--every", "0")
    path.write_text(events.stdout)
    [doc] = read_saved(path)
    start, end = events.lines[0], events.lines[-1]
    assert doc["history"] == {"iter": [0, end["iters"]], "loss": [start["loss"], end["loss"]]}
    assert doc["start_end_only"]


def test_runs_appended_to_one_file_are_split(cli, tmp_path):
    from gdfit.pictures.plotting import read_saved

    path = tmp_path / "runs.jsonl"
    first = cli("run", SEED, "--json", "--every", "1")
    second = cli("run", SEED, "--json", "--every", "1", "--set", "learning_rate=0.5")
    path.write_text(first.stdout + second.stdout)
    docs = read_saved(path)
    assert [d["iters"] for d in docs] == [first.lines[-1]["iters"], second.lines[-1]["iters"]]
    assert [d["config"]["learning_rate"] for d in docs] == [1.0, 0.5]
    assert len(docs[1]["history"]["loss"]) == second.lines[-1]["iters"] + 1
    image = tmp_path / "both.png"
    assert cli("plot", str(path), "-o", str(image)).exit_status == 0


def test_log_axis_drops_points_it_cannot_show():
    assert loss_series([1.0, 0.5, 0.0, float("nan"), math.inf, 0.25]) == ([0, 1, 5], [1.0, 0.5, 0.25])


def test_sweep_plot_and_series(cli, tmp_path):
    out, image = tmp_path / "s.json", tmp_path / "s.png"
    result = cli("sweep", SEED, "--grid", "learning_rate=logspace(1e-2,10,16)", "-o", str(out), "--plot", str(image))
    assert result.exit_status == 0, result.stderr
    assert image.read_bytes().startswith(PNG_SIGNATURE)
    doc = strict_json(out.read_text())
    series = sweep_series(doc)
    assert series["key"] == "learning_rate" and series["log_x"]
    converged = {r["params"]["learning_rate"]: r["iters"] for r in doc["runs"] if r["status"] == "converged"}
    assert dict(zip(*series["converged"])) == converged
    assert series["diverged"] == [10.0]
    again = tmp_path / "again.pdf"
    assert cli("plot", str(out), "-o", str(again)).exit_status == 0
    assert again.read_bytes().startswith(b"%PDF")


def test_missing_matplotlib_gives_exit_2_and_the_install_command(cli, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = cli("run", SEED, "--plot", str(tmp_path / "x.png"))
    assert result.exit_status == 2
    assert "pip install 'gdfit[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["x.gif", "x"])
def test_unknown_image_format(cli, tmp_path, name):
    result = cli("run", SEED, "--plot", str(tmp_path / name))
    assert result.exit_status == 2 and "image format" in result.stderr


def test_plot_of_a_file_that_is_not_a_result(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json\n")
    result = cli("plot", str(bad), "-o", str(tmp_path / "o.png"))
    assert result.exit_status == 2 and "line 1 is not JSON" in result.stderr


def test_sparkline_follows_the_log_loss():
    line = sparkline([1.0, 0.1, 0.01, 0.001])
    assert line == SPARK[-1] + SPARK[5] + SPARK[2] + SPARK[0]
    assert len(sparkline([10.0 ** -i for i in range(500)], width=40)) == 40
    assert sparkline([0.0, float("nan")]) == ""

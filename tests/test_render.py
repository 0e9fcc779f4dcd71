"""Renderers on fixed-width consoles and string buffers: what people and scripts actually see."""

from __future__ import annotations

import io
from pathlib import Path
import math

import pytest
import torch
from conftest import COUNT_1, SEED_TARGET, strict_json
from helpers import fit, render_human
from rich.console import Console

from gdfit import records
from gdfit.render.human import HumanRenderer, format_tensor
from gdfit.render.jsonl import JsonLinesRenderer, dumps


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=100, color_system=None, force_terminal=False), buffer


def _render(every: int = 1, **config):
    steps, result, descent = fit(every=every, **config)
    console, buffer = _console()
    renderer = HumanRenderer(console)
    renderer.start(descent.start)
    for step in steps:
        renderer.step(step)
    renderer.end(result)
    return buffer.getvalue(), steps, result


def test_table_rows_show_iteration_loss_and_x_like_the_tutorial():
    text, steps, result = _render(target=SEED_TARGET, init=COUNT_1)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("│    1 │"))
    assert repr(steps[0].loss) in row and "[[0.2511, 0.1371, 0.6754]," in row  # the tutorial's count 2
    assert "│   19 │" in text
    assert "converged" in text and "final loss" in text and repr(result.loss) in text
    assert "updates/s" in text and "loss (log)" in text
    assert "gd is stable for lr < 9" in text


def test_long_runs_keep_the_first_and_last_rows():
    text, steps, _ = _render(target=SEED_TARGET, learning_rate=0.05, threshold=0, max_iters=100)
    assert "│    1 │" in text and "│   20 │" in text and "│  100 │" in text
    assert "(60 rows)" in text and "│   50 │" not in text


def test_big_tensors_are_summarised():
    text, _, _ = _render(target={"random": {"shape": [20, 20]}}, max_iters=2, threshold=0)
    assert "shape [20, 20]" in text and "max|x - target|" in text


def test_scheduled_rates_get_a_column():
    steps, result, descent = fit(target=SEED_TARGET, schedule={"name": "exponential", "gamma": 0.5}, max_iters=3,
                                 threshold=0)
    console, buffer = _console()
    renderer = HumanRenderer(console, show_lr=True)
    renderer.start(descent.start)
    for step in steps:
        renderer.step(step)
    renderer.end(result)
    text = buffer.getvalue()
    assert "exponential (gamma=0.5)" in text and "│ 0.25 │" in text


def test_format_tensor_matches_torch_printing():
    assert format_tensor(torch.tensor([[0.29434, 1.0]])) == "[[0.2943, 1.0000]]"
    assert format_tensor(None) == ""


def test_json_lines_are_strict_and_flushed():
    buffer = io.StringIO()
    renderer = JsonLinesRenderer(buffer)
    renderer.step(records.StepRecord(3, math.nan, 0.1, math.inf, torch.tensor([1.0, math.nan])))
    event = strict_json(buffer.getvalue())
    assert event == {"event": "step", "iter": 3, "loss": None, "lr": 0.1, "grad_norm": None, "x": [1.0, None]}
    assert dumps({"a": (1, 2), "b": -math.inf}) == '{"a":[1,2],"b":null}'


def test_history_is_thinned_evenly_past_100000_points():
    from gdfit.render.document import thin

    history = [float(i) for i in range(250_001)]
    thinned = thin(history)
    assert len(thinned["iter"]) == 100_000
    assert thinned["iter"][0] == 0 and thinned["iter"][-1] == 250_000
    assert thinned["loss"] == [history[i] for i in thinned["iter"]]
    gaps = {b - a for a, b in zip(thinned["iter"], thinned["iter"][1:])}
    assert gaps <= {2, 3}
    assert thin([1.0, 0.5]) == {"iter": [0, 1], "loss": [1.0, 0.5]}


def test_the_best_so_far_line_names_the_run_and_its_outcome():
    from gdfit.records import RunRecord
    from gdfit.render.sweep_view import best_line

    best = RunRecord({"optimizer": "adam", "learning_rate": 0.25}, "converged", 42, 1.234567e-06, None)
    assert best_line(best) == "best so far: optimizer=adam, learning_rate=0.25: converged after 42 updates, loss 1.23e-06"
    assert best_line(None) == ""


def test_outputs_write_through_symlinks_and_never_replace_special_files(tmp_path):
    import os

    import pytest

    from gdfit.errors import OutputError
    from gdfit.render.document import check_writable, write_atomic

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for call in (lambda: check_writable(fifo, "--checkpoint"), lambda: write_atomic(fifo, "x", "--checkpoint")):
        with pytest.raises(OutputError, match="not a regular file"):
            call()
    assert fifo.is_fifo()
    with pytest.raises(OutputError, match="not a regular file"):
        check_writable(Path("/dev/null"))


def test_a_curve_fits_summary_has_no_error_against_the_target():
    assert format_tensor({"shape": [500], "min": 0.5, "max": 2.0}) == "shape [500]  min 0.5  max 2"


def test_parameter_columns_fit_the_console_and_the_rest_are_named_in_a_caption():
    from gdfit.render.human import PARAM_COLUMNS, param_columns_that_fit

    assert param_columns_that_fit(40) == 1 and param_columns_that_fit(1000) == PARAM_COLUMNS
    assert param_columns_that_fit(80) < param_columns_that_fit(120)
    params = {f"p{i}": i + 1 for i in range(4)}
    steps, result, descent = fit(data={"file": str(Path(__file__).parent.parent / "configs" / "peaks.csv")},
                                 target={"column": "y"}, optimizer="lm", dtype="float64", max_iters=2,
                                 model={"expr": "p0 + p1 * x + p2 * x**2 + p3 * x**3", "params": params})
    buffer = io.StringIO()
    renderer = HumanRenderer(Console(file=buffer, width=70, color_system=None, force_terminal=False))
    renderer.start(descent.start)
    for step in steps:
        renderer.step(step)
    renderer.end(result)
    text = buffer.getvalue()
    header = next(line for line in text.splitlines() if "┃ iter" in line)
    shown = param_columns_that_fit(70)
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["iter", "loss", *list(params)[:shown]]
    assert f"{4 - shown} more parameter" in text


@pytest.mark.parametrize("width", [40, 30])
def test_a_narrow_screen_keeps_every_loss_exponent(width):
    steps, result, descent = fit(target=SEED_TARGET, learning_rate=0.3, threshold=1e-9)
    text = render_human(width, steps, result, descent)
    last = steps[-3:]  # the table's tail rows, with losses of order 1e-09
    assert all(s.loss < 1e-8 for s in last)
    for step in last:
        assert f"{step.iter} │ {step.loss:.6g} │" in text  # exponent and all, not 9.18e…
    assert "e…" not in text


def test_a_wide_screen_shows_every_digit_of_the_loss():
    text, steps, _ = _render(target=SEED_TARGET, learning_rate=0.3, threshold=1e-9)
    assert all(repr(s.loss) in text for s in steps[-3:])


def test_counts_agree_with_their_nouns():
    from gdfit.words import article, plural

    assert [plural(1, "update"), plural(2, "update"), plural(0, "run"), plural(1, "loss", "losses"),
            plural(3, "loss", "losses")] == ["1 update", "2 updates", "0 runs", "1 loss", "3 losses"]
    assert [article("optimizer"), article("unsigned 16-bit"), article("meta"), article("int"), article("uint32")] == \
        ["an optimizer", "an unsigned 16-bit", "a meta", "an int", "a uint32"]

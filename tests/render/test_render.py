"""Renderers on fixed-width consoles and string buffers: what people and scripts actually see."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import COUNT_1, SEED_TARGET, strict_json
from helpers import fit, render_human
from rich.console import Console

from gdfit import records
from gdfit.render.human import HumanRenderer, format_tensor
from gdfit.render.jsonl import JsonLinesRenderer, dumps, step_event, step_line


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


def _spec_line(rec: records.StepRecord) -> str:
    """The step event as SPEC writes it, built by hand and encoded by the json module: the oracle."""
    def number(v):
        return v if v is None or math.isfinite(v) else None

    def nested(v):
        return [nested(e) for e in v] if isinstance(v, list) else number(v)

    event = {"event": "step", "iter": rec.iter, "loss": number(rec.loss), "lr": number(rec.lr),
             "grad_norm": number(rec.grad_norm)}
    if rec.holdout_rmse is not None:
        event["holdout_rmse"] = number(rec.holdout_rmse)
    if rec.params is not None:
        event["params"] = {name: number(v) for name, v in rec.params.items()}
    if isinstance(rec.x, dict):
        event["x_summary"] = {k: nested(v) for k, v in rec.x.items()}
    elif rec.x is not None:
        event["x"] = nested(rec.x.tolist())
    return json.dumps(event, separators=(",", ":"), allow_nan=False)


_numbers = st.one_of(st.floats(), st.floats(width=32), st.floats(-1e-4, 1e-4),
                     st.sampled_from([0.0, -0.0, 1e-5, 1e-4, 1e16, 5e-324, 1.7976931348623157e308, 10.00001]))


@settings(max_examples=300, deadline=None)
@given(k=st.integers(0, 10**9), loss=_numbers, lr=_numbers, norm=st.none() | _numbers,
       shape=st.sampled_from([None, "summary", (), (0,), (3,), (3, 3), (2, 0), (2, 3, 2), (1, 1, 1, 2)]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]), data=st.data(),
       params=st.none() | st.dictionaries(st.sampled_from(["a", "tau"]), _numbers, min_size=1),
       holdout=st.none() | _numbers, numpy=st.booleans())
def test_step_lines_are_the_events_bytes(k, loss, lr, norm, shape, dtype, data, params, holdout, numpy):
    if shape == "summary":
        x = {"shape": [20, 20], "min": data.draw(_numbers), "max": 2.0, "max_abs_error": 0.5}
    elif shape is None:
        x = None
    else:
        x = torch.tensor(data.draw(st.lists(_numbers, min_size=math.prod(shape), max_size=math.prod(shape))),
                         dtype=torch.float64).to(dtype).reshape(shape)
        if numpy:  # a fit computed on the host reports numpy arrays
            x = x.numpy()
    rec = records.StepRecord(k, loss, lr, norm, x, params, holdout)
    line = step_line(rec)
    assert line == _spec_line(rec) == dumps(step_event(rec))
    strict_json(line)


@pytest.mark.parametrize("field", ["loss", "lr", "grad_norm", "x"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_a_step_line_is_null(field, value):
    values = {"loss": 0.5, "lr": 1.0, "grad_norm": 0.25, "x": 2.0, field: value}
    x = torch.tensor([[1.0, values["x"]]], dtype=torch.float64)
    line = step_line(records.StepRecord(2, values["loss"], values["lr"], values["grad_norm"], x))
    event = strict_json(line)
    assert (event["x"][0][1] if field == "x" else event[field]) is None
    assert line == dumps(step_event(records.StepRecord(2, values["loss"], values["lr"], values["grad_norm"], x)))


def test_numbers_of_other_types_in_a_step_line_are_written_as_json_writes_them():
    import numpy as np

    for loss, lr, norm in [(np.float64(0.5), 1.0, None), (0.5, np.float32(0.25), 1.0), (0.5, 1.0, np.float64(2.0)),
                           (1, 1.0, None), (0.5, 1.0, torch.tensor(3.0)), (np.float64(1e-5), 1.0, 2e-5)]:
        rec = records.StepRecord(np.int64(4), loss, lr, norm, torch.tensor([0.5]))
        assert step_line(rec) == dumps(step_event(rec))
        assert strict_json(step_line(rec))["iter"] == 4
    for x in [torch.tensor([[1, -2]]), torch.tensor([True, False]), np.array([3, 2**63], dtype=np.uint64),
              torch.tensor(0.5), np.float32(0.25), [0.5, 1.0]]:  # tensors of other types, 0-dim ones, a list
        rec = records.StepRecord(4, 0.5, 1.0, 0.25, x)
        shown = x.tolist() if hasattr(x, "tolist") else x
        expected = {"event": "step", "iter": 4, "loss": 0.5, "lr": 1.0, "grad_norm": 0.25, "x": shown}
        assert step_line(rec) == dumps(step_event(rec)) == json.dumps(expected, separators=(",", ":"))


@pytest.mark.parametrize("small", [1e-05, -2.5e-05, 9.999999999999999e-05, 1.5e-07, 1e-09, 3e-10, -1e-100, 5e-324,
                                   1.0000000000000001e-05])
def test_numbers_below_1e_4_are_spelled_as_json_spells_them(small):
    x = torch.tensor([[small, 10.00001, 1e-4]], dtype=torch.float64)
    rec = records.StepRecord(12, small, small, small, x)
    line = step_line(rec)
    assert line == json.dumps({"event": "step", "iter": 12, "loss": small, "lr": small, "grad_norm": small,
                               "x": [[small, 10.00001, 1e-4]]}, separators=(",", ":"))
    assert strict_json(line)["x"][0][0] == small


def test_an_iteration_past_64_bits_is_written_as_json_writes_it():
    rec = records.StepRecord(2**70, 0.5, 1.0, 0.25, torch.tensor([0.5]))
    assert step_line(rec) == '{"event":"step","iter":1180591620717411303424,"loss":0.5,"lr":1.0,"grad_norm":0.25,"x":[0.5]}'


def test_a_step_line_is_the_seeds_numbers_in_json():
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float32)
    line = step_line(records.StepRecord(7, 0.25, 1.0, None, x))
    assert line == ('{"event":"step","iter":7,"loss":0.25,"lr":1.0,"grad_norm":null,'
                    '"x":[[0.10000000149011612,0.20000000298023224,0.30000001192092896]]}')


class Writes(io.StringIO):
    """Keeps each write call's text apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def _step(k: int) -> records.StepRecord:
    return records.StepRecord(k, 0.5, 1.0, 0.25, torch.tensor([float(k)]))


def test_json_lines_are_held_until_a_line_comes_flush_s_after_the_last_write_out():
    now = [100.0]
    out = Writes()
    renderer = JsonLinesRenderer(out, flush_s=0.5, clock=lambda: now[0])
    renderer.step(_step(1))  # the first line goes out at once
    assert len(out.calls) == 1
    for k in range(2, 6):  # lines coming faster than flush_s are held
        now[0] += 0.125 if k < 5 else 0.0625
        renderer.step(_step(k))
    assert len(out.calls) == 1
    now[0] += 0.0625  # flush_s after the last write-out: this line takes the held ones with it
    renderer.step(_step(6))
    assert len(out.calls) == 2 and [strict_json(line)["iter"] for line in out.calls[1].splitlines()] == [2, 3, 4, 5, 6]
    now[0] += 10.0  # a line after a quiet spell goes out at once
    renderer.step(_step(7))
    assert len(out.calls) == 3 and strict_json(out.calls[2])["iter"] == 7


def test_start_end_and_abort_write_out_what_is_held():
    steps, result, descent = fit(target=SEED_TARGET, init=COUNT_1, max_iters=3, threshold=0)
    out = Writes()
    renderer = JsonLinesRenderer(out, flush_s=3600.0, clock=lambda: 0.0)
    renderer.start(descent.start)
    for step in steps:
        renderer.step(step)
    assert len(out.calls) == 1  # the start; the steps are held
    renderer.end(result)
    events = [strict_json(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["start", "step", "step", "step", "end"] and len(out.calls) == 2
    renderer.step(steps[0])
    renderer.abort()
    assert len(out.calls) == 3 and strict_json(out.calls[2])["event"] == "step"


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
    from gdfit.files.writing import check_writable, write_atomic

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
    steps, result, descent = fit(data={"file": str(Path(__file__).parents[2] / "configs" / "peaks.csv")},
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

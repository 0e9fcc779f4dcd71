"""--tensorboard on run and sweep: the events read back with TensorBoard's own reader (no server)
match the JSON stream, the --output documents and torch's StepLR, as float32 as TensorBoard stores them."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from gdfit import records

SEED = str(ROOT / "configs" / "seed.yaml")
# gd on the tutorial's target with a step schedule; 12 updates do not reach the threshold.
STEP_CONFIG = """\
target: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
seed: 0
optimizer: gd
learning_rate: 0.5
schedule: {name: step, step_size: 3, gamma: 0.5}
threshold: 1.0e-12
max_iters: 12
"""
# Adam on the same target: with these grids some runs converge and some stop at max_iters.
ADAM_CONFIG = """\
target: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
seed: 0
optimizer: {name: adam, betas: [0.9, 0.999]}
learning_rate: 0.1
threshold: 1.0e-6
max_iters: 60
"""


@pytest.fixture
def read_events():
    """A folder's events through tensorboard's EventAccumulator, every event kept."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read(path):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        return events

    return read


def f32(values) -> list[float]:
    """What TensorBoard keeps of a float: its float32 rounding."""
    return [float(np.float32(v)) for v in values]


def scalars(events, tag: str) -> tuple[list[int], list[float]]:
    points = events.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def text(events, tag: str) -> str:
    [event] = events.Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def step_lr_oracle(lr: float, step_size: int, gamma: float, n: int) -> list[float]:
    """The rate of updates 1..n: what torch's StepLR holds before each optimizer step."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    rates = []
    for _ in range(n):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_run_logs_loss_lr_grad_norm_and_config(cli, write_config, tmp_path, read_events):
    log_dir, output = tmp_path / "tb", tmp_path / "result.json"
    result = cli("run", write_config(STEP_CONFIG), "--json", "--every", "1", "--tensorboard", str(log_dir),
                 "--output", str(output))
    assert result.exit_status == 1, result.stderr  # max_iters
    start, *steps, end = result.lines
    history = json.loads(output.read_text())["history"]
    events = read_events(log_dir)

    n = end["iters"]
    assert n == 12 and [s["iter"] for s in steps] == list(range(1, n + 1))
    iters, losses = scalars(events, "loss")
    assert iters == list(range(0, n + 1))
    assert losses == f32([start["loss"]] + [s["loss"] for s in steps])
    assert history["iter"] == iters and losses == f32(history["loss"])
    iters, rates = scalars(events, "lr")
    assert iters == list(range(1, n + 1))
    assert rates == f32(step_lr_oracle(0.5, 3, 0.5, n)) == f32([0.5] * 3 + [0.25] * 3 + [0.125] * 3 + [0.0625] * 3)
    iters, norms = scalars(events, "grad_norm")
    assert iters == list(range(1, n + 1))
    assert norms == f32([s["grad_norm"] for s in steps]) and all(v > 0 for v in norms)

    config = text(events, "config")
    assert config.startswith("```yaml\n") and config.endswith("```")
    assert yaml.safe_load(config[len("```yaml\n"):-3]) == start["config"]
    assert "max_iters" in text(events, "result") and "12 updates" in text(events, "result")


def test_unreported_last_update_is_still_logged(cli, tmp_path, read_events):
    """With --every 0 nothing is reported but the end: the curve still has its start and its end."""
    log_dir, output = tmp_path / "tb", tmp_path / "result.json"
    result = cli("run", SEED, "--json", "--every", "0", "--tensorboard", str(log_dir), "--output", str(output))
    assert result.exit_status == 0, result.stderr
    document = json.loads(output.read_text())
    events = read_events(log_dir)
    assert scalars(events, "loss") == ([0, document["iters"]], f32([document["history"]["loss"][0], document["loss"]]))
    assert "lr" not in events.Tags()["scalars"]


def test_table_mode_logs_too(cli, tmp_path, read_events):
    log_dir = tmp_path / "tb"
    result = cli("run", SEED, "--every", "5", "--tensorboard", str(log_dir))
    assert result.exit_status == 0, result.stderr
    iters, _ = scalars(read_events(log_dir), "loss")
    assert iters == [0, 5, 10, 15, 19]  # seed.yaml converges after 19 updates; the last one is reported


def test_sweep_logs_hparams_per_run(cli, write_config, tmp_path, read_events):
    from tensorboard.plugins.hparams import metadata

    log_dir, output = tmp_path / "tb", tmp_path / "sweep.json"
    result = cli("sweep", write_config(ADAM_CONFIG), "--grid", "optimizer.betas=[0.9,0.999],[0.8,0.99]",
                 "--grid", "init=zeros,random", "--grid", "learning_rate=0.1", "--json",
                 "--tensorboard", str(log_dir), "--output", str(output))
    assert result.exit_status == 0, result.stderr
    document = json.loads(output.read_text())
    runs = document["runs"]
    assert {r["status"] for r in runs} == {"converged", "max_iters"}  # both kinds of outcome are covered

    folders = sorted(p for p in log_dir.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [
        "run0_optimizer.betas=[0.9,0.999],init=zeros,learning_rate=0.1",
        "run1_optimizer.betas=[0.9,0.999],init=random,learning_rate=0.1",
        "run2_optimizer.betas=[0.8,0.99],init=zeros,learning_rate=0.1",
        "run3_optimizer.betas=[0.8,0.99],init=random,learning_rate=0.1",
    ]
    for folder, run in zip(folders, runs):
        events = read_events(folder)
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["optimizer.betas"].string_value == json.dumps(run["params"]["optimizer.betas"],
                                                                           separators=(",", ":"))
        assert start.hparams["init"].string_value == run["params"]["init"]
        assert start.hparams["learning_rate"].number_value == 0.1
        assert scalars(events, "hparam/loss")[1] == f32([run["loss"]])
        assert scalars(events, "hparam/iters")[1] == [run["iters"]]
        assert scalars(events, "hparam/converged")[1] == [1.0 if run["status"] == "converged" else 0.0]
        experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        assert [h.name for h in experiment.hparam_infos] == ["optimizer.betas", "init", "learning_rate"]
        assert [m.name.tag for m in experiment.metric_infos] == ["hparam/loss", "hparam/iters", "hparam/converged"]
    config = text(read_events(log_dir), "config")
    assert yaml.safe_load(config[len("```yaml\n"):-3]) == document["config"]


def test_non_finite_final_loss_is_nan(tmp_path, read_events):
    from gdfit.render.tensorboard import log_sweep

    results = [records.RunRecord({"learning_rate": 30}, records.DIVERGED, 7, math.inf, None),
               records.RunRecord({"learning_rate": 0.5}, records.CONVERGED, 40, 1e-6, None)]
    log_sweep(tmp_path, {"learning_rate": 1.0}, results)
    diverged = read_events(tmp_path / "run0_learning_rate=30")
    assert math.isnan(scalars(diverged, "hparam/loss")[1][0])
    assert scalars(diverged, "hparam/converged")[1] == [0.0]


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_missing_extra_exits_2_with_install_command(cli, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    log_dir = tmp_path / "tb"
    args = ("run", SEED) if command == "run" else ("sweep", SEED, "--grid", "learning_rate=0.5,1")
    result = cli(*args, "--tensorboard", str(log_dir))
    assert result.exit_status == 2
    assert "pip install 'gdfit[tensorboard]'" in result.stderr and "--tensorboard" in result.stderr
    assert "Traceback" not in result.stderr and not log_dir.exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_unwritable_log_dir_exits_2(cli, tmp_path, read_events, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder under a plain file cannot be made, even by root
    args = ("run", SEED) if command == "run" else ("sweep", SEED, "--grid", "learning_rate=0.5,1")
    result = cli(*args, "--tensorboard", str(blocker / "tb"), "--json")
    assert result.exit_status == 2
    assert f"--tensorboard: '{blocker}' is not a writable folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert [e["event"] for e in result.lines] == ["error"]  # refused before the first run starts


def test_a_resumed_run_goes_on_from_its_checkpoint_step(cli, tmp_path, read_events):
    """Steps a killed run logged after its last checkpoint are dropped (purge_step), and the
    resumed run does not log its start again."""
    log_dir, ckpt = tmp_path / "tb", tmp_path / "run.ckpt"
    base = ("run", SEED, "--set", "learning_rate=0.01", "--set", "threshold=0", "--every", "1",
            "--tensorboard", str(log_dir))
    assert cli(*base, "--max-iters", "5", "--checkpoint", str(ckpt)).exit_status == 1
    # a resumed run that logs 6..8 and dies before its next checkpoint
    assert cli(*base, "--max-iters", "8", "--resume", str(ckpt)).exit_status == 1
    assert cli(*base, "--max-iters", "12", "--resume", str(ckpt)).exit_status == 1
    steps, _ = scalars(read_events(log_dir), "loss")
    assert steps == list(range(0, 13))


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_log_dir_holding_earlier_logs_is_refused_so_curves_do_not_mix(cli, tmp_path, read_events, command):
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "tb"
    args = ("run", SEED) if command == "run" else ("sweep", SEED, "--grid", "learning_rate=0.5,1")
    assert cli(*args, "--tensorboard", str(log_dir)).exit_status == 0
    before = sorted((p.relative_to(log_dir), p.stat().st_size) for p in log_dir.rglob("*") if p.is_file())
    again = cli(*args, "--tensorboard", str(log_dir), "--json")
    assert again.exit_status == 2 and [e["event"] for e in again.lines] == ["error"]
    assert "--tensorboard: already holds TensorBoard logs" in again.stderr
    assert sorted((p.relative_to(log_dir), p.stat().st_size) for p in log_dir.rglob("*") if p.is_file()) == before
    (tmp_path / "empty").mkdir()  # a folder without logs is taken as it is
    assert cli(*args, "--tensorboard", str(tmp_path / "empty")).exit_status == 0

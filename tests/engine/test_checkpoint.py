"""Checkpoints: a resumed run ends bit for bit where the uninterrupted run does; bad ones are refused."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SEED_TARGET
from helpers import resolved

from gdfit.engine.checkpoint import Checkpointer, load, seal
from gdfit.engine.descent import Descent, every_n, prepare
from gdfit.errors import OutputError

OPTIMIZERS = ["gd", {"name": "momentum", "momentum": 0.8, "dampening": 0.1}, {"name": "nesterov", "momentum": 0.7},
              "adam", {"name": "rmsprop", "alpha": 0.9}]
SCHEDULES = ["constant", {"name": "step", "step_size": 7, "gamma": 0.8}, {"name": "exponential", "gamma": 0.995},
             {"name": "cosine", "t_max": 150}]
RATES = {"gd": 0.4, "momentum": 0.2, "nesterov": 0.2, "adam": 0.02, "rmsprop": 0.005}


def _name(spec) -> str:
    return spec if isinstance(spec, str) else spec["name"]


def whole_run(**data):
    descent = Descent(prepare(resolved(**data)), report=every_n(0), advice=False)
    list(descent.steps())
    return descent.result


def crash_then_resume(tmp_path: Path, stop_after: list[int], **data):
    """Run with a checkpoint at every look, drop the run after `stop_after[i]` reported updates
    (as a crash would), and go on from the file each time; the last part runs to the end."""
    path = tmp_path / "run.ckpt"
    resume = None
    for updates in stop_after + [None]:
        descent = Descent(prepare(resolved(**data)), report=every_n(1), advice=False, resume=resume,
                          checkpointer=Checkpointer(path, 0.0))
        steps = descent.steps()
        if updates is None:
            list(steps)
            return descent.result
        for _ in itertools.islice(steps, updates):
            pass
        del descent, steps  # nothing in memory survives the crash
        resume = load(path)


def assert_identical(resumed, whole):
    assert (resumed.status, resumed.iters, resumed.stop_rule) == (whole.status, whole.iters, whole.stop_rule)
    assert repr(resumed.loss) == repr(whole.loss)
    assert torch.equal(resumed.x, whole.x)
    assert resumed.history == whole.history


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=_name)
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=_name)
def test_resume_is_exact_for_every_optimizer_and_schedule(tmp_path, optimizer, schedule, dtype):
    data = dict(target=SEED_TARGET, optimizer=optimizer, schedule=schedule, dtype=dtype,
                learning_rate=RATES[_name(optimizer)], threshold=1e-9, max_iters=150, loss="huber")
    whole = whole_run(**data)
    resumed = crash_then_resume(tmp_path, [17, 40, 3], **data)
    assert resumed.resumed_from == min(17 + 40 + 3, whole.iters)
    assert_identical(resumed, whole)


@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_resume_is_exact_with_patience_and_in_both_engines(tmp_path, engine):
    data = dict(target=SEED_TARGET, loss="l1", learning_rate=0.5, patience=12, threshold=0, max_iters=2000,
                engine=engine)
    whole = whole_run(**data)
    assert whole.status == "stalled"
    assert_identical(crash_then_resume(tmp_path, [5, whole.iters - 10], **data), whole)


def test_a_larger_max_iters_goes_on_from_a_finished_run(tmp_path):
    data = dict(target=SEED_TARGET, optimizer="adam", learning_rate=0.01, threshold=1e-8, dtype="float64")
    path = tmp_path / "run.ckpt"
    short = Descent(prepare(resolved(max_iters=100, **data)), checkpointer=Checkpointer(path, 3600.0))
    list(short.steps())  # the checkpoint at the end
    assert short.result.status == "max_iters"
    longer = Descent(prepare(resolved(max_iters=900, **data)), resume=load(path))
    assert longer.start.loss == short.start.loss  # the run's own start, not where it was resumed
    list(longer.steps())
    assert_identical(longer.result, whole_run(max_iters=900, **data))


def test_the_timeout_budget_carries_over(tmp_path):
    ticks = itertools.count(0.0, 1.0)  # every read of the clock: one more second
    data = dict(target=SEED_TARGET, learning_rate=1e-4, threshold=0, timeout_s=10)
    path = tmp_path / "run.ckpt"
    first = Descent(prepare(resolved(**data)), clock=lambda: next(ticks), checkpointer=Checkpointer(path, 0.0),
                    report=every_n(1))
    for _ in itertools.islice(first.steps(), 4):
        pass
    saved = load(path)
    assert saved.state.elapsed_s == 4.0  # started at 0 s, looked at 1, 2, 3 and 4 s
    ticks = itertools.count(0.0, 1.0)
    resumed = Descent(prepare(resolved(**data)), clock=lambda: next(ticks), resume=saved)
    list(resumed.steps())
    # 6 s left: looks at 1, 2, ... 6 s after the restart, as the whole run looks until 10 s
    assert (resumed.result.status, resumed.result.iters) == ("timeout", 4 + 6)
    ticks = itertools.count(0.0, 1.0)
    whole = Descent(prepare(resolved(**data)), clock=lambda: next(ticks))
    list(whole.steps())
    assert (whole.result.status, whole.result.iters) == ("timeout", 10)


def test_the_checkpoint_reads_back_with_weights_only(tmp_path):
    path = tmp_path / "run.ckpt"
    descent = Descent(prepare(resolved(target=SEED_TARGET, optimizer="adam")), checkpointer=Checkpointer(path, 0.0))
    list(descent.steps())
    document = torch.load(path, weights_only=True)
    assert document["iters"] == descent.result.iters
    assert set(document["optimizer"]["x"]) == {"m", "v"}
    assert set(document["rules"]) == {"ceiling", "active", "updates", "stalled", "best", "best_iter", "previous", "fired"}
    assert document["history"].tolist() == descent.result.history
    assert document["config"] == descent.start.config


# ---------------------------------------------------------------- bad checkpoints, through the CLI


@pytest.fixture
def saved(tmp_path, write_config, cli):
    (tmp_path / "t.csv").write_text("0.1,0.2,0.3\n0.4,0.5,0.6\n")
    config = write_config("target: {file: t.csv}\nlearning_rate: 0.5\nmax_iters: 5\nthreshold: 0\ndevice: cpu\n")
    path = tmp_path / "run.ckpt"
    assert cli("run", config, "--checkpoint", str(path), "--every", "0").exit_status == 1
    return config, path


def test_a_truncated_checkpoint_is_refused(cli, saved):
    config, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = cli("run", config, "--resume", str(path))
    assert result.exit_status == 2
    assert "cannot read the checkpoint: it is not a whole torch archive (truncated, damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_checkpoint_of_another_config_says_what_differs(cli, saved):
    config, path = saved
    result = cli("run", config, "--resume", str(path), "--set", "learning_rate=0.25", "--set", "loss=l1")
    assert result.exit_status == 2
    assert ("the config differs in learning_rate (checkpoint 0.5, now 0.25), loss (checkpoint {'name': 'mse'}, "
            "now {'name': 'l1'})") in result.stderr


def test_a_checkpoint_of_another_target_is_refused(cli, saved, tmp_path):
    config, path = saved
    (tmp_path / "t.csv").write_text("0.1,0.2,0.3\n0.4,0.5,0.7\n")  # same config, other values
    result = cli("run", config, "--resume", str(path))
    assert result.exit_status == 2
    assert "the input file target.file" in result.stderr and "changed since it was saved" in result.stderr


def test_a_checkpoint_of_another_version_is_refused(cli, saved):
    config, path = saved
    document = torch.load(path, weights_only=True)
    document["versions"]["gdfit"] = "0.0.1"
    torch.save(seal(document), path)
    result = cli("run", config, "--resume", str(path))
    assert result.exit_status == 2
    assert "written by gdfit 0.0.1" in result.stderr


def test_max_iters_and_device_may_change(cli, saved):
    config, path = saved
    result = cli("run", config, "--resume", str(path), "--max-iters", "8", "--device", "cpu", "--json", "--every", "1")
    assert result.exit_status == 1
    steps = [e["iter"] for e in result.lines if e["event"] == "step"]
    assert steps == [6, 7, 8]  # the stream goes on at the next update
    assert result.lines[-1]["resumed_from"] == 5


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + bytes(range(256)) * 4])
def test_garbage_is_refused(cli, saved, content):
    config, path = saved
    path.write_bytes(content)
    result = cli("run", config, "--resume", str(path))
    assert result.exit_status == 2 and "--resume" in result.stderr and "Traceback" not in result.stderr


def test_code_in_a_checkpoint_never_runs(cli, saved, tmp_path):
    config, path = saved
    marker = tmp_path / "ran"
    torch.save({"gdfit_checkpoint": 1, "evil": Path(marker)}, path)  # any non-tensor class
    result = cli("run", config, "--resume", str(path))
    assert result.exit_status == 2
    assert "never loaded (they could run code)" in result.stderr


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    descent = Descent(prepare(resolved(target=SEED_TARGET)), checkpointer=Checkpointer(path, 0.0))
    list(descent.steps())
    good = path.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        Checkpointer(path, 0.0).save(descent.checkpoint(descent.result.history))
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary left behind


# ---------------------------------------------------------------- SIGKILL, as a real process

KILL_CONFIG = {  # together: every optimizer and every schedule, both dtypes, and the patience rule
    "gd-step-float64": "learning_rate: 0.02\nschedule: {name: step, step_size: 500, gamma: 0.9}\ndtype: float64\n",
    "momentum-exponential-float32": "optimizer: {name: momentum, momentum: 0.5}\nlearning_rate: 0.005\n"
                                    "schedule: {name: exponential, gamma: 0.9999}\n",
    "nesterov-cosine-float64": "optimizer: nesterov\nlearning_rate: 0.001\nschedule: cosine\ndtype: float64\n",
    "adam-constant-patience-float32": "optimizer: adam\nlearning_rate: 0.001\npatience: 200\n"
                                      "min_rel_improvement: 1.0e-9\n",
    "rmsprop-step-float32": "optimizer: rmsprop\nlearning_rate: 0.0003\nschedule: {name: step, step_size: 300, gamma: 0.8}\n",
}


def _gdfit(*args: str) -> list[str]:
    return [sys.executable, "-m", "gdfit", *args]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KILL_CONFIG))
def test_sigkill_at_three_random_moments_then_resume(tmp_path, name):
    config = tmp_path / "c.yaml"
    config.write_text("target: {random: {shape: [30, 30], seed: 2}}\nthreshold: 1.0e-12\nmax_iters: 40000\n"
                      "device: cpu\n" + KILL_CONFIG[name])
    env = {**os.environ, "NO_COLOR": "1"}
    whole = tmp_path / "whole.json"
    subprocess.run(_gdfit("run", str(config), "--every", "0", "--output", str(whole)), cwd=ROOT, env=env, check=False,
                   capture_output=True, timeout=300)
    ckpt, rng = tmp_path / "run.ckpt", random.Random(name)
    for attempt in range(3):
        args = ["run", str(config), "--every", "0", "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
        if ckpt.exists():
            args += ["--resume", str(ckpt)]
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
        proc = subprocess.Popen(_gdfit(*args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while (not ckpt.exists() or ckpt.stat().st_mtime_ns == before) and time.monotonic() < deadline:
            time.sleep(0.01)  # wait for this process's first checkpoint: it is past its start-up
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"attempt {attempt}: the run ended before the kill"
    resumed = tmp_path / "resumed.json"
    subprocess.run(_gdfit("run", str(config), "--every", "0", "--resume", str(ckpt), "--output", str(resumed)),
                   cwd=ROOT, env=env, check=False, capture_output=True, timeout=300)
    a, b = json.loads(whole.read_text()), json.loads(resumed.read_text())
    assert b["resumed_from"] > 0
    for key in ("status", "iters", "loss", "x_summary", "history", "stop_rule"):
        assert a[key] == b[key], key


def test_an_interrupt_writes_a_checkpoint_to_go_on_from(tmp_path):
    data = dict(target=SEED_TARGET, learning_rate=0.05, threshold=1e-6, dtype="float64")
    looks = itertools.count()
    path = tmp_path / "run.ckpt"
    first = Descent(prepare(resolved(**data)), should_stop=lambda: next(looks) >= 9,
                    checkpointer=Checkpointer(path, 3600.0))  # only the save at the end
    list(first.steps())
    assert (first.result.status, first.result.iters) == ("interrupted", 10)
    assert load(path).state.iters == 10
    resumed = Descent(prepare(resolved(**data)), resume=load(path))
    list(resumed.steps())
    assert_identical(resumed.result, whole_run(**data))


def test_resume_refusals_that_would_break_exactness(cli, saved, tmp_path, write_config):
    config, path = saved
    below = cli("run", config, "--resume", str(path), "--max-iters", "3")
    assert below.exit_status == 2 and "max_iters 3 is below the checkpoint's 5 updates" in below.stderr
    cosine = write_config("target: {file: t.csv}\nlearning_rate: 0.5\nmax_iters: 5\nthreshold: 0\ndevice: cpu\n"
                          "schedule: cosine\n", name="cosine.yaml")
    ckpt = tmp_path / "cosine.ckpt"
    assert cli("run", cosine, "--checkpoint", str(ckpt), "--every", "0").exit_status == 1
    longer = cli("run", cosine, "--resume", str(ckpt), "--max-iters", "9")
    assert longer.exit_status == 2 and "t_max defaults to max_iters" in longer.stderr
    same = cli("run", config, "--checkpoint", str(path), "--output", str(path))
    assert same.exit_status == 2 and "--output and --checkpoint name the same file" in same.stderr
    not_archive = tmp_path / "c.yaml"
    not_archive.write_text("target: [1]\n")
    result = cli("run", config, "--resume", str(not_archive))
    assert result.exit_status == 2 and "not a whole torch archive" in result.stderr


def test_a_run_resumed_with_its_time_used_up_makes_no_update(tmp_path):
    ticks = itertools.count(0.0, 1.0)
    data = dict(target=SEED_TARGET, learning_rate=1e-4, threshold=0, timeout_s=3)
    path = tmp_path / "run.ckpt"
    first = Descent(prepare(resolved(**data)), clock=lambda: next(ticks), checkpointer=Checkpointer(path, 3600.0))
    list(first.steps())
    assert first.result.status == "timeout"
    resumed = Descent(prepare(resolved(**data)), clock=lambda: next(ticks), resume=load(path))
    steps = list(resumed.steps())
    assert (resumed.result.status, resumed.result.iters, steps) == ("timeout", first.result.iters, [])


def test_a_run_that_ended_at_max_iters_resumes_with_the_same_max_iters(cli, saved):
    """max_iters equal to the checkpoint's count is allowed: the run is already at its limit."""
    config, path = saved
    result = cli("run", config, "--resume", str(path), "--json", "--every", "1")
    assert result.exit_status == 1
    end = result.lines[-1]
    assert (end["status"], end["iters"], end["resumed_from"]) == ("max_iters", 5, 5)
    assert [e["event"] for e in result.lines] == ["start", "end"]  # no update made, none repeated

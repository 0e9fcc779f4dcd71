"""Ctrl-C in every phase: exit 130, no traceback, and under --json an `end` or `error` event last.

Each test runs the real CLI as a process with GDFIT_PAUSE_AT naming a phase: the process says
"paused at PHASE" on stderr and waits there, so the SIGINT lands in that phase and nowhere else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, strict_json
from helpers import sigint_as_at_a_terminal

SEED = "configs/seed.yaml"


def interrupted_at(phase: str, *args: str) -> tuple[int, list[dict], str]:
    """Run `gdfit ARGS` paused at `phase`, send one SIGINT there; exit status, JSON lines, stderr."""
    env = {**os.environ, "NO_COLOR": "1", "GDFIT_PAUSE_AT": phase}
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_at_a_terminal)
    try:
        first = proc.stderr.readline()  # blocks until the process is in the phase
        assert first.strip() == f"gdfit: paused at {phase}", first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [strict_json(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, lines, err


@pytest.mark.parametrize("phase", ["import", "config", "prepare"])
def test_ctrl_c_at_start_up_gives_130_and_an_error_event(phase):
    status, lines, err = interrupted_at(phase, "run", SEED, "--json")
    assert status == 130
    assert lines == [{"event": "error", "kind": "interrupted", "message": "interrupted by Ctrl-C (SIGINT)"}]
    assert err.splitlines()[-1] == "gdfit: interrupted" and "Traceback" not in err


def test_ctrl_c_at_start_up_in_human_mode_says_so_plainly():
    status, lines, err = interrupted_at("config", "run", SEED)
    assert (status, lines) == (130, [])
    assert err.splitlines()[-1] == "gdfit: interrupted"


def test_ctrl_c_while_writing_a_checkpoint_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    status, lines, err = interrupted_at("checkpoint", "run", SEED, "--json", "--every", "0",
                                        "--checkpoint", str(ckpt), "--checkpoint-every", "0")
    assert status == 130
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == "interrupted"
    assert ckpt.exists() and "Traceback" not in err
    resumed = subprocess.run([sys.executable, "-m", "gdfit", "run", SEED, "--resume", str(ckpt), "--json",
                              "--every", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0  # the checkpoint written on the interrupt is whole


def test_ctrl_c_while_plotting_finishes_the_files_then_gives_130(tmp_path):
    """The run had converged: its end event keeps that status, the plot and the document are still
    written, then an error event says interrupted."""
    pytest.importorskip("matplotlib")
    status, lines, err = interrupted_at("plot", "run", SEED, "--json", "--every", "0", "--plot",
                                        str(tmp_path / "loss.png"), "--output", str(tmp_path / "r.json"),
                                        "--save", str(tmp_path / "x.npz"))
    assert status == 130
    assert [e["event"] for e in lines] == ["start", "end", "error"]
    assert lines[1]["status"] == "converged" and lines[-1]["kind"] == "interrupted"
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert strict_json((tmp_path / "r.json").read_text())["status"] == "converged"
    assert (tmp_path / "x.npz").stat().st_size > 0  # --save comes after the plot: written too
    assert err.splitlines()[-1] == "gdfit: interrupted" and "Traceback" not in err


def test_a_second_ctrl_c_while_plotting_stops_at_once(tmp_path):
    """One Ctrl-C stopped the run; the next, while it draws, aborts the drawing: 130, no plot."""
    pytest.importorskip("matplotlib")
    env = {**os.environ, "NO_COLOR": "1", "GDFIT_PAUSE_AT": "plot"}
    args = ["run", SEED, "--set", "threshold=0", "--max-iters", "100000000", "--json", "--every", "0",
            "--plot", str(tmp_path / "loss.png")]
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_at_a_terminal)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "start"
        proc.send_signal(signal.SIGINT)  # stops the run after its update
        said = [proc.stderr.readline().strip() for _ in range(3)]  # a warning, "interrupted after N updates"
        assert said[-1] == "gdfit: paused at plot", said
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    events = [strict_json(line) for line in out.splitlines()]
    assert proc.returncode == 130
    assert [(e["event"], e.get("status", e.get("kind"))) for e in events] == [("end", "interrupted"),
                                                                              ("error", "interrupted")]
    assert not (tmp_path / "loss.png").exists() and "Traceback" not in err


@pytest.mark.parametrize("mode", ["--json", "--no-json"])
def test_ctrl_c_in_a_single_batch_sweep_stops_it_with_130(tmp_path, mode):
    out = tmp_path / "sweep.json"
    args = ["sweep", SEED, "--grid", "learning_rate=0.1,0.2", "--output", str(out)] + ([mode] if mode == "--json" else [])
    status, lines, err = interrupted_at("sweep", *args)
    assert status == 130
    if mode == "--json":
        assert lines[-1]["event"] == "end" and lines[-1]["counts"] == {"interrupted": 2}
        assert (lines[-1]["status"], lines[-1]["runs"], lines[-1]["missing"]) == ("interrupted", 2, 2)
    assert "interrupted after 0 of 2 runs" in err and "Traceback" not in err
    document = strict_json(out.read_text())
    assert {r["status"] for r in document["runs"]} == {"interrupted"}
    assert (document["status"], document["missing"]) == ("interrupted", 2)


def test_without_the_variable_pause_point_does_nothing(monkeypatch):
    from gdfit.engine.interrupts import PAUSE_ENV, pause_point

    monkeypatch.delenv(PAUSE_ENV, raising=False)
    pause_point("config")  # returns at once; a wait here would hang the test


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_ctrl_c_mid_run_writes_every_held_step_line_then_the_end_event(unbuffered):
    """Step lines are held and written out together: Ctrl-C while some are held writes them all,
    in order, before the end event."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": unbuffered}
    args = ["run", SEED, "--set", "threshold=0", "--set", "learning_rate=1e-4", "--max-iters", "100000000",
            "--json", "--every", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_at_a_terminal)
    try:
        head = [proc.stdout.readline() for _ in range(1001)]  # the start and 1000 updates: the run is under way
        proc.send_signal(signal.SIGINT)
        rest, err = proc.stdout.read(), proc.stderr.read()  # what readline holds, then the pipe (communicate reads the pipe only)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    lines = [strict_json(line) for line in head + rest.splitlines()]
    end = lines[-1]
    assert proc.returncode == 130 and "Traceback" not in err
    assert lines[0]["event"] == "start" and (end["event"], end["status"]) == ("end", "interrupted")
    assert 1000 <= end["iters"] < 100_000_000
    assert [event["iter"] for event in lines[1:-1]] == list(range(1, end["iters"] + 1))
    assert all(event["event"] == "step" for event in lines[1:-1])


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
    """A shell without job control starts `gdfit run ... &` with SIGINT ignored, so that a Ctrl-C
    meant for the script spares it (Python leaves such a signal ignored): gdfit does too, and
    still stops on SIGTERM."""
    env = {**os.environ, "NO_COLOR": "1", "GDFIT_PAUSE_AT": "checkpoint"}
    args = ["run", SEED, "--json", "--every", "0", "--checkpoint", str(tmp_path / "run.ckpt"), "--checkpoint-every", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stderr.readline().strip() == "gdfit: paused at checkpoint"
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):  # ignored: the run waits on
            proc.wait(timeout=1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    events = [strict_json(line) for line in out.splitlines()]
    assert (events[-1]["event"], events[-1]["status"]) == ("end", "interrupted")

"""A failing stdout (closed pipe, full disk, closed descriptor) never loses --output and never
shows a traceback: 141 for a closed pipe in every command and mode, 2 for any other failure."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT

SEED = str(ROOT / "configs" / "seed.yaml")
LONG = ["--set", "threshold=0", "--set", "learning_rate=1e-4", "--max-iters", "1000000", "--every", "1"]


class FailingStdout(io.StringIO):
    """Takes `room` characters, then fails every write and flush with `error`."""

    def __init__(self, error: OSError, room: int = 0) -> None:
        super().__init__()
        self.error, self.room = error, room

    def write(self, text: str) -> int:
        if self.tell() + len(text) > self.room:
            raise self.error
        return super().write(text)

    def flush(self) -> None:
        if self.tell() >= self.room:
            raise self.error


def run_into(stream, *args: str):
    from gdfit.cli.app import main

    err = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stream, err
    try:
        status = main(list(args))
    finally:
        sys.stdout, sys.stderr = saved
    return status, err.getvalue()


def commands(tmp_path):
    out = str(tmp_path / "r.json")
    return {
        "run": ["run", SEED, "--output", out],
        "run --json": ["run", SEED, "--json", "--output", out],
        "sweep": ["sweep", SEED, "--grid", "learning_rate=0.5,1", "--output", out],
        "sweep --json": ["sweep", SEED, "--grid", "learning_rate=0.5,1", "--json", "--output", out],
        "config": ["config", SEED],
        "config --json": ["config", SEED, "--json"],
        "grad-demo": ["grad-demo"],
        "grad-demo --json": ["grad-demo", "--json"],
        "--help": ["--help"],
        "--version": ["--version"],
        "run --help": ["run", "--help"],
    }


@pytest.mark.parametrize("name", list(commands(ROOT)))
def test_a_closed_pipe_exits_141_in_every_command_and_mode(tmp_path, name):
    args = commands(tmp_path)[name]
    status, err = run_into(FailingStdout(BrokenPipeError(errno.EPIPE, "Broken pipe")), *args)
    assert status == 141, err
    assert err.strip() == "" or "warning" in err  # quiet: no error, no "interrupted"
    if "--output" in args:
        document = json.loads((tmp_path / "r.json").read_text())
        assert "status" in document or "runs" in document


@pytest.mark.parametrize("name", list(commands(ROOT)))
def test_a_full_stdout_is_an_output_error_and_saves_the_result(tmp_path, name):
    args = commands(tmp_path)[name]
    status, err = run_into(FailingStdout(OSError(errno.ENOSPC, "No space left on device")), *args)
    assert status == 2
    assert err.strip().endswith("gdfit: error: standard output: cannot write: No space left on device")
    assert "Traceback" not in err
    if "--output" in args:
        assert (tmp_path / "r.json").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(room=st.integers(0, 4000), code=st.sampled_from([errno.EPIPE, errno.ENOSPC, errno.EIO]),
       json_mode=st.booleans())
def test_stdout_failing_anywhere_keeps_the_result(tmp_path, room, code, json_mode):
    out = tmp_path / "r.json"
    out.unlink(missing_ok=True)
    error = BrokenPipeError(code, "Broken pipe") if code == errno.EPIPE else OSError(code, os.strerror(code))
    args = ["run", SEED, "--every", "1", "--output", str(out)] + (["--json"] if json_mode else [])
    status, err = run_into(FailingStdout(error, room), *args)
    assert status == (141 if code == errno.EPIPE else 2) or (status == 0 and room > 0)
    assert "Traceback" not in err and "internal error" not in err
    assert json.loads(out.read_text())["status"] in ("converged", "interrupted")


def _guarded_file(path):
    from gdfit.files.stdout import GuardedStdout

    return GuardedStdout(open(path, "w", encoding="utf-8"))


def test_write_all_goes_on_where_a_short_write_stopped(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))  # as a signal would cut it
    out = _guarded_file(tmp_path / "out")
    out.write("held by the stream\n")
    lines = "".join(f'{{"event":"step","iter":{k}}}\n' for k in range(50))
    out.write_all(lines)
    assert (tmp_path / "out").read_text() == "held by the stream\n" + lines and out.problem is None


@pytest.mark.parametrize("cut", ["inside a line", "at a line's end"])
def test_a_second_ctrl_c_during_write_all_still_finishes_the_line_it_cut(tmp_path, monkeypatch, cut):
    first, second = '{"event":"step","iter":1,"loss":0.25}\n', '{"event":"step","iter":2,"loss":0.125}\n'
    size = 10 if cut == "inside a line" else len(first) // 2  # bytes per write call: 2 calls make the line
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 3:  # as a second Ctrl-C, while the pipe is full
            raise KeyboardInterrupt
        return real_write(fd, bytes(data[:size]))

    monkeypatch.setattr(os, "write", write)
    out = _guarded_file(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        out.write_all(first + second)
    assert (tmp_path / "out").read_text() == first


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "Broken pipe"), OSError(errno.ENOSPC, "No space")])
def test_write_all_hands_a_failed_write_to_the_guard(tmp_path, monkeypatch, error):
    from gdfit.files import stdout

    real_write = os.write

    def fail(fd, data):
        raise error

    told = []
    remove = stdout.on_failure(lambda: told.append(True))
    monkeypatch.setattr(stdout, "silence", lambda stream: None)  # the file stays a file
    try:
        out = _guarded_file(tmp_path / "out")
        monkeypatch.setattr(os, "write", fail)
        out.write_all("line\n")
        monkeypatch.setattr(os, "write", real_write)
        out.write_all("after\n")  # dropped, as every write after a failure
        out.stream.flush()
    finally:
        remove()
    assert out.problem is error and told == [True] and (tmp_path / "out").read_text() == ""
    assert out.broken_pipe == isinstance(error, BrokenPipeError)


# ------------------------------------------------------------------ real processes


def _process(args: list[str], **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gdfit", *args], cwd=ROOT, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_head_closing_the_pipe_stops_the_run_saves_it_and_exits_141(tmp_path, mode):
    out = tmp_path / "r.json"
    proc = _process(["run", SEED, *LONG, *mode, "--output", str(out)], stdout=subprocess.PIPE)
    assert proc.stdout.readline()
    if not mode:  # read the whole start (panel and start x): from there human mode writes nothing until
        while not proc.stdout.readline().startswith("start x"):  # the end, and must see the reader go
            pass
        for _ in range(3):
            proc.stdout.readline()
    proc.stdout.close()  # what `| head` does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "interrupted" not in err
    assert json.loads(out.read_text())["status"] == "interrupted"


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_step_lines_reach_a_pipe_reader_while_the_run_goes_on(unbuffered):
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": unbuffered}
    proc = subprocess.Popen([sys.executable, "-m", "gdfit", "run", SEED, *LONG, "--json"], cwd=ROOT, text=True,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "start"
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "step" and first["iter"] == 1
        for k in range(2, 2001):  # held lines are written out as the run goes, not at its end
            assert json.loads(proc.stdout.readline())["iter"] == k
        assert proc.poll() is None  # a million updates: far from done
    finally:
        proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err


@pytest.mark.parametrize("args", [["run", SEED, "--json"], ["run", SEED], ["--help"], ["--version"]])
def test_dev_full_gives_a_message_not_a_traceback(tmp_path, args):
    out = tmp_path / "r.json"
    extra = ["--output", str(out)] if args[0] == "run" else []
    with open("/dev/full", "w") as full:
        proc = _process(args + extra, stdout=full)
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 2
    assert "Traceback" not in err and "No space left on device" in err
    if extra:  # stopped at the first failed write, or done before the buffer was flushed
        assert json.loads(out.read_text())["status"] in ("interrupted", "converged")


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_a_closed_stdout_is_like_dev_null(tmp_path, mode):
    out = tmp_path / "r.json"
    proc = _process(["run", SEED, *mode, "--output", str(out)], stdout=subprocess.DEVNULL,
                    preexec_fn=lambda: os.close(1))
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err
    assert json.loads(out.read_text())["status"] == "converged"

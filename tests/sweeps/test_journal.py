"""Sweep folders through the real CLI: the journal, --resume after an interruption or SIGKILL, --show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, strict_json
from helpers import sigint_as_at_a_terminal

SEED = str(ROOT / "configs" / "seed.yaml")
GRID = ["--grid", "optimizer=gd,adam", "--grid", "learning_rate=0.5,1,4.5,20"]  # 8 runs, 2 batches
BIG = ["--grid", "optimizer=gd,momentum,adam", "--grid", "learning_rate=logspace(1e-3,10,32)", "--max-iters", "3000"]


def without_elapsed(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "elapsed_s"}


def journal_lines(folder) -> list[dict]:
    """The journal's whole lines: a SIGKILL can land mid-write and leave half a line after them."""
    text = (folder / "runs.jsonl").read_text()
    return [strict_json(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.fixture
def finished(cli, tmp_path):
    """A finished 8-run sweep folder and the one-document result of the same sweep."""
    folder, document = tmp_path / "demo", tmp_path / "whole.json"
    assert cli("sweep", SEED, *GRID, "--output", str(folder)).exit_status == 0
    assert cli("sweep", SEED, *GRID, "--output", str(document)).exit_status == 0
    return folder, strict_json(document.read_text())


def test_folder_holds_config_runs_and_summary(finished):
    folder, document = finished
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "config.json", "inputs.json", "runs.jsonl", "summary.json"]
    saved = strict_json((folder / "config.json").read_text())
    assert saved["grid"] == {"optimizer": ["gd", "adam"], "learning_rate": [0.5, 1, 4.5, 20]}
    assert saved["config"] == document["config"] and saved["runs"] == 8
    assert saved["raw"]["learning_rate"] == 1.0  # the merged mapping the runs are rebuilt from
    lines = journal_lines(folder)
    assert sorted(line["index"] for line in lines) == list(range(8))
    by_index = {line.pop("index"): line for line in lines}
    assert [{k: v for k, v in by_index[i].items() if k not in ("event", "sha256")} for i in range(8)] == document["runs"]
    assert saved["format"] == 2 and len(saved["id"]) == 32
    assert without_elapsed(strict_json((folder / "summary.json").read_text())) == without_elapsed(document)


@pytest.mark.parametrize("kept", [0, 3, 5])
def test_resume_after_interruption_is_identical(cli, finished, kept):
    folder, document = finished
    lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
    partial = lines[kept][: len(lines[kept]) // 2]  # killed mid-write: no newline, half a line
    (folder / "runs.jsonl").write_text("".join(lines[:kept]) + partial)
    (folder / "summary.json").unlink()
    result = cli("sweep", "--resume", str(folder), "--json")
    assert result.exit_status == 0
    assert [e["event"] for e in result.lines] == ["start"] + ["run"] * 8 + ["end"]
    assert without_elapsed(strict_json((folder / "summary.json").read_text())) == without_elapsed(document)
    assert sorted(line["index"] for line in journal_lines(folder)) == list(range(8))  # each run once


def test_resume_of_a_finished_sweep_leaves_its_summary_as_it_was(cli, finished, tmp_path):
    """A resume that runs nothing changes nothing: summary.json keeps its bytes (elapsed_s too), and
    the events and the --output document report that summary, not the resume's own few milliseconds."""
    folder, _ = finished
    before, inode = (folder / "summary.json").read_bytes(), (folder / "summary.json").stat().st_ino
    again = tmp_path / "again.json"
    result = cli("sweep", "--resume", str(folder), "--json", "--output", str(again))
    assert result.exit_status == 0
    assert (folder / "summary.json").read_bytes() == before
    assert (folder / "summary.json").stat().st_ino == inode  # not even rewritten (write_atomic renames)
    summary = strict_json(before.decode())
    assert strict_json(again.read_text()) == summary
    assert result.lines[-1] == {"event": "end", **{k: summary[k] for k in ("counts", "best", "elapsed_s")}}


def test_resume_json_events_equal_an_uninterrupted_sweep(cli, finished):
    folder, _ = finished
    whole = cli("sweep", SEED, *GRID, "--json").lines
    lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
    (folder / "runs.jsonl").write_text("".join(lines[:4]))
    resumed = cli("sweep", "--resume", str(folder), "--json").lines
    assert [without_elapsed(e) for e in resumed] == [without_elapsed(e) for e in whole]


def stopped_sweep(tmp_path, sig: int):
    """A real `python -m gdfit sweep --output DIR` process sent `sig` once a batch is journaled and
    before the sweep is done; returns the folder and the exit status."""
    for attempt in range(3):  # a fast machine can finish before the signal lands; try a new folder
        folder = tmp_path / f"stopped{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "gdfit", "sweep", SEED, *BIG, "--output", str(folder)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "NO_COLOR": "1"}, preexec_fn=sigint_as_at_a_terminal)
        deadline, journal = time.monotonic() + 60, folder / "runs.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.005)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if not (folder / "summary.json").exists():
            return folder, proc.returncode
    pytest.fail("the sweep always finished before the signal")


@pytest.mark.parametrize("sig,status", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)])
def test_resume_after_kill_or_ctrl_c_is_identical(cli, tmp_path, sig, status):
    whole = tmp_path / "whole.json"
    assert cli("sweep", SEED, *BIG, "--output", str(whole)).exit_status == 0
    folder, returncode = stopped_sweep(tmp_path, sig)
    assert returncode == status
    assert 1 <= len(journal_lines(folder)) < 96
    result = cli("sweep", "--resume", str(folder))
    assert result.exit_status == 0
    assert without_elapsed(strict_json((folder / "summary.json").read_text())) == \
        without_elapsed(strict_json(whole.read_text()))
    assert sorted(line["index"] for line in journal_lines(folder)) == list(range(96))  # each run once


@pytest.mark.parametrize(
    "args,fragment",
    [
        ([SEED, "--grid", "optimizer=gd,adam", "--grid", "learning_rate=0.5,1"],
         "grid learning_rate differs: the journal has [0.5,1,4.5,20], now [0.5,1]"),
        ([SEED, *GRID, "--set", "threshold=1e-3"], "config threshold differs: the journal has 1e-05, now 0.001"),
        (["--max-iters", "7"], "config max_iters differs: the journal has (unset), now 7"),
        ([str(ROOT / "configs" / "momentum.yaml"), *GRID], "config optimizer"),
    ],
)
def test_resume_refuses_a_different_sweep(cli, finished, args, fragment):
    folder, _ = finished
    result = cli("sweep", "--resume", str(folder), *args)
    assert result.exit_status == 2
    assert "belongs to a different sweep" in result.stderr and fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_accepts_the_same_config_and_grid(cli, finished):
    folder, _ = finished
    assert cli("sweep", "--resume", str(folder), SEED, *GRID).exit_status == 0


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--resume", "nowhere"], "nowhere: does not exist"),
        (["--show", "nowhere"], "nowhere: does not exist"),
        (["--resume", "empty"], "not a sweep folder (no config.json)"),
        ([], "give CONFIG, or --resume DIR or --show DIR"),
    ],
)
def test_bad_journal_use_exits_2(cli, tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    result = cli("sweep", *[str(tmp_path / a) if a in ("nowhere", "empty") else a for a in args])
    assert result.exit_status == 2 and fragment in result.stderr


def test_output_folder_in_use_is_refused(cli, finished):
    folder, _ = finished
    result = cli("sweep", SEED, *GRID, "--output", str(folder))
    assert result.exit_status == 2 and "already holds a sweep" in result.stderr and "--resume" in result.stderr


def test_show_finished_human_and_json(cli, finished):
    folder, document = finished
    human = cli("sweep", "--show", str(folder), "--sort", "loss")
    assert human.exit_status == 0
    assert "8 runs, sorted by loss" in human.stdout and "best: optimizer=gd, learning_rate=4.5" in human.stdout
    assert "missing" not in human.stdout
    events = cli("sweep", "--show", str(folder), "--json").lines  # strict JSON, each line
    assert [e["event"] for e in events] == ["run"] * 8 + ["end"]
    assert events[-1]["counts"] == document["counts"] and events[-1]["best"] == document["best"]
    assert events[-1]["elapsed_s"] == strict_json((folder / "summary.json").read_text())["elapsed_s"]


def test_show_partial_says_what_is_missing(cli, finished):
    folder, _ = finished
    lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
    (folder / "runs.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
    (folder / "summary.json").unlink()
    human = cli("sweep", "--show", str(folder))
    assert "3 runs, sorted by iters" in human.stdout and "5 of 8 runs missing" in human.stdout
    events = cli("sweep", "--show", str(folder), "--json").lines
    assert [e["event"] for e in events] == ["run"] * 3 + ["end"]
    assert events[-1]["missing"] == 5 and events[-1]["runs"] == 8 and events[-1]["elapsed_s"] is None


def test_nonfinite_loss_comes_back_exactly(cli, tmp_path):
    folder = tmp_path / "inf"
    args = ["--grid", "learning_rate=1,1e30", "--set", "divergence_factor=1e300"]
    first = cli("sweep", SEED, *args, "--output", str(folder), "--json").lines
    shown = cli("sweep", "--show", str(folder), "--json").lines
    assert [without_elapsed(e) for e in shown] == [without_elapsed(e) for e in first[1:]]
    human = cli("sweep", "--show", str(folder))
    assert human.exit_status == 0 and "inf" in human.stdout  # the table prints the loss as a float

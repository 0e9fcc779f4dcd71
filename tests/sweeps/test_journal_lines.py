"""Sweep journals: each line checked against the grid, the first record of a run kept, the folder
written by one process at a time, and every limit held on --resume."""

from __future__ import annotations

import itertools
import json
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from gdfit import records
from gdfit.files.locks import hold, lock_path
from gdfit.sweeps import journal as journals
from gdfit.sweeps.lines import BadLine, params_at, read_line

SEED = str(ROOT / "configs" / "seed.yaml")
GRID = ["--grid", "learning_rate=0.5,1,2"]


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "sweep"
    assert run_cli("sweep", SEED, *GRID, "--output", str(path), "--json").exit_status == 0
    return path


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]


def _write(folder: Path, events: list[dict]) -> None:
    """Lines as gdfit would have signed them: a line that passes its digest is still checked."""
    text = "".join(json.dumps({k: v for k, v in e.items() if k != "sha256"}, separators=(",", ":")) + "\n"
                   for e in events)
    (folder / "runs.jsonl").write_text(journals.sign(text, journals.folder_key(folder)))


def test_params_at_is_the_grid_order_of_itertools_product():
    grid = {"a": [1, 2], "b": ["x", "y", "z"], "c": [0.5, 7]}
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    assert [params_at(grid, i) for i in range(len(combos))] == combos


@pytest.mark.parametrize("change,words", [
    ({"iters": "abc"}, "iters 'abc' is not a whole number"),
    ({"iters": -1}, "iters -1"),
    ({"iters": 2.5}, "iters 2.5"),
    ({"status": "weird"}, "status 'weird'"),
    ({"status": records.INTERRUPTED}, "status 'interrupted'"),
    ({"params": {"learning_rate": 9}}, "params {'learning_rate': 9} are not run 0's"),
    ({"index": 3}, "run index 3 is outside the grid's 3 runs"),  # the run count itself
    ({"index": -1}, "run index -1"),
    ({"index": "0"}, "index '0' is not a whole number"),
    ({"loss": "low"}, "loss 'low' is not a number"),
    ({"event": "step"}, "not a run event"),
])
def test_a_bad_line_is_left_out_and_reported_and_its_run_runs_again(folder, change, words):
    events = _events(folder)
    _write(folder, [{**events[0], **change}] + events[1:])
    shown = run_cli("sweep", "--show", str(folder), "--json")
    assert shown.exit_status == 0 and words in shown.stderr and "1 line left out" in shown.stderr
    resumed = run_cli("sweep", "--resume", str(folder), "--json")
    assert resumed.exit_status == 0
    runs = [e for e in resumed.lines if e["event"] == "run"]
    assert len(runs) == 3 and {r["params"]["learning_rate"] for r in runs} == {0.5, 1, 2}


def test_a_repeated_run_counts_once_and_the_first_record_is_kept(folder):
    events = _events(folder)
    _write(folder, events + [{**events[1], "loss": 123.0}])
    journal = journals.load(folder)
    assert len(journal.done) == 3 and journal.done[1].loss == events[1]["loss"]
    assert journal.left_out == ["line 4: run 1 again"]
    shown = run_cli("sweep", "--show", str(folder), "--json")
    assert "line 4: run 1 again" in shown.stderr
    assert [e for e in shown.lines if e["event"] == "end"][0]["counts"] == {"converged": 3}


def test_read_line_accepts_what_the_journal_writes(folder):
    saved = json.loads((folder / "config.json").read_text())
    for event in _events(folder):
        assert read_line(event, saved["grid"], saved["runs"])[0] == event["index"]
    with pytest.raises(BadLine):
        read_line([], saved["grid"], saved["runs"])


def test_a_second_process_on_a_sweep_folder_is_refused_with_the_holders_pid(folder):
    before = (folder / "runs.jsonl").read_bytes()
    (folder / "runs.jsonl").write_text("")
    with hold(folder, "--resume", folder=True):
        result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2
    assert f"is being written by another gdfit process (PID {os.getpid()})" in result.stderr
    assert (folder / "runs.jsonl").read_text() == ""  # nothing ran
    assert run_cli("sweep", "--resume", str(folder), "--json").exit_status == 0  # released: it goes on
    assert len(_events(folder)) == len(before.splitlines())


@pytest.mark.parametrize("flag", ["--output", "--checkpoint", "--save"])
def test_a_second_process_on_an_output_is_refused(tmp_path, flag):
    path = tmp_path / ("out.npz" if flag == "--save" else "out.json")
    with hold(path, flag):
        result = run_cli("run", SEED, flag, str(path))
    assert result.exit_status == 2 and f"PID {os.getpid()}" in result.stderr and not path.exists()
    assert run_cli("run", SEED, flag, str(path), "--json").exit_status == 0
    assert not lock_path(path).exists()


def test_one_file_under_two_names_shares_one_lock(tmp_path):
    os.symlink(tmp_path / "real.json", tmp_path / "alias.json")
    with hold(tmp_path / "real.json", "--output"):
        result = run_cli("run", SEED, "--output", str(tmp_path / "alias.json"))
    assert result.exit_status == 2 and "another gdfit process" in result.stderr


def test_sweep_resume_of_a_huge_saved_grid_holds_the_run_limit(folder):
    saved = json.loads((folder / "config.json").read_text())
    saved["grid"] = {"learning_rate": list(range(1200)), "seed": list(range(1000))}
    saved["runs"] = 1_200_000
    (folder / "config.json").write_text(json.dumps(saved))
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "the grid has 1,200,000 runs; at most 100,000" in result.stderr


def test_a_saved_run_count_that_disagrees_with_the_grid_is_refused(folder):
    saved = json.loads((folder / "config.json").read_text())
    saved["runs"] = 2
    (folder / "config.json").write_text(json.dumps(saved))
    result = run_cli("sweep", "--show", str(folder))
    assert result.exit_status == 2 and "runs is 2, but its grid has 3 runs" in result.stderr


def test_each_appended_batch_is_fsynced_before_the_next(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    folder = tmp_path / "s"
    with ExitStack() as locks:
        journals.create(folder, {}, "test", tmp_path, {"a": [1]}, {}, 100, 1, locks)
        synced.clear()
        appender = journals.Appender(folder)
        record = records.RunRecord({"a": 1}, records.CONVERGED, 3, 0.5, None)
        appender.add([0], [record])
        assert synced == [appender._handle.fileno()]
        appender.close()

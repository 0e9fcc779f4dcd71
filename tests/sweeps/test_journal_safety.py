"""Nothing lost, nothing mixed: one writer per new journal folder, no output inside a journal
folder, a damaged config.json or line refused by name (exit 2, never an internal error), lines
keyed to their folder by a digest, and the sweep command refusing what it would ignore."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, strict_json
from gdfit.errors import OutputError
from gdfit.files.locks import hold
from gdfit.sweeps import journal as journals
from test_groups import job_config, varied_screen

SEED = str(ROOT / "configs" / "seed.yaml")
GRID = ["--grid", "learning_rate=0.5,1,4.5"]


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "sweep"
    assert run_cli("sweep", SEED, *GRID, "--output", str(path), "--json").exit_status == 0
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _lines(folder: Path) -> list[str]:
    return (folder / "runs.jsonl").read_text().splitlines(keepends=True)


# ---------------------------------------------------------------- one writer for a new folder


def test_a_new_folder_whose_lock_is_held_is_refused_before_anything_is_written(tmp_path):
    """The lock comes first: a sweep that finds the lock held writes nothing into the folder (had
    it checked and written first, its config.json would be there, mixed with the holder's)."""
    target = tmp_path / "race"
    target.mkdir()
    with hold(target, "--output", folder=True):
        result = run_cli("sweep", SEED, *GRID, "--output", str(target))
    assert result.exit_status == 2
    assert f"is being written by another gdfit process (PID {os.getpid()})" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == [".lock"]


def test_create_takes_the_lock_and_keeps_it_in_the_callers_stack(tmp_path):
    target = tmp_path / "new" / "sweep"
    with ExitStack() as locks:
        journals.create(target, {}, "test", tmp_path, {"a": [1]}, {}, 100, 1, locks)
        with pytest.raises(OutputError, match="another gdfit process"):  # the second of two at once
            with ExitStack() as other:
                journals.create(target, {}, "test", tmp_path, {"a": [2]}, {}, 100, 1, other)
    assert strict_json((target / "config.json").read_text())["grid"] == {"a": [1]}
    with ExitStack() as locks:  # the first has ended: its folder is there to resume, not to replace
        with pytest.raises(OutputError, match="already holds a sweep"):
            journals.create(target, {}, "test", tmp_path, {"a": [2]}, {}, 100, 1, locks)


def test_a_folder_refused_under_its_lock_is_left_as_it_was_found(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "runs.jsonl").write_text('{"mine": 1}\n')
    result = run_cli("sweep", SEED, *GRID, "--output", str(target))
    assert result.exit_status == 2 and "already holds runs.jsonl, but no config.json" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["runs.jsonl"]
    assert (target / "runs.jsonl").read_text() == '{"mine": 1}\n'


def test_a_many_fits_folder_whose_lock_is_held_is_refused_before_anything_is_written(tmp_path):
    data = varied_screen(tmp_path, 3)
    config, target = job_config(tmp_path, data.name), tmp_path / "job"
    target.mkdir()
    with hold(target, "--output-dir", folder=True):
        result = run_cli("run", str(config), "--output-dir", str(target))
    assert result.exit_status == 2 and f"(PID {os.getpid()})" in result.stderr and "--output-dir" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == [".lock"]


# ---------------------------------------------------------------- no output inside a journal folder


@pytest.mark.parametrize("args", [
    ["sweep", SEED, "--grid", "learning_rate=1,2", "--output", "{f}/summary.json"],
    ["sweep", SEED, "--grid", "learning_rate=1,2", "--output", "{f}/more.json"],
    ["sweep", SEED, "--grid", "learning_rate=1,2", "--output", "{f}/nested"],
    ["sweep", SEED, "--grid", "learning_rate=1,2", "--tensorboard", "{f}"],
    ["sweep", SEED, "--grid", "learning_rate=1,2", "--tensorboard", "{f}/tb"],
    ["run", SEED, "--every", "0", "--output", "{f}/runs.jsonl"],
    ["run", SEED, "--every", "0", "--output", "{f}/config.json"],
    ["run", SEED, "--every", "0", "--tensorboard", "{f}/tb"],
])
def test_an_output_inside_a_sweep_folder_is_refused_and_the_folder_kept(folder, args):
    before = _snapshot(folder)
    result = run_cli(*[a.replace("{f}", str(folder)) for a in args])
    assert result.exit_status == 2 and "the journal of a sweep or many-fits job" in result.stderr, result.stderr
    assert _snapshot(folder) == before
    assert run_cli("sweep", "--show", str(folder)).exit_status == 0


def test_an_output_inside_a_many_fits_folder_is_refused(tmp_path):
    data = varied_screen(tmp_path, 3)
    config, job = job_config(tmp_path, data.name), tmp_path / "job"
    assert run_cli("run", str(config), "--output-dir", str(job)).exit_status in (0, 1)
    before = _snapshot(job)
    result = run_cli("run", str(config), "--output", str(job / "runs.csv"))
    assert result.exit_status == 2 and "the journal of a sweep or many-fits job" in result.stderr
    assert _snapshot(job) == before


def test_another_tools_config_and_runs_files_do_not_make_a_journal_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"epochs": 3}')
    (tmp_path / "runs.jsonl").write_text('{"epoch": 1}\n')
    assert run_cli("run", SEED, "--every", "0", "--output", str(tmp_path / "fit.json")).exit_status == 0
    (tmp_path / "config.json").write_text('{"format": 2, "grid": {"seed": [0')  # a damaged journal's: kept safe
    result = run_cli("run", SEED, "--every", "0", "--output", str(tmp_path / "again.json"))
    assert result.exit_status == 2 and not (tmp_path / "again.json").exists()


def test_an_output_beside_a_sweep_folder_is_written(folder, tmp_path):
    assert run_cli("run", SEED, "--every", "0", "--output", str(tmp_path / "next.json")).exit_status == 0


# ---------------------------------------------------------------- config.json of any shape


def _edit_config(folder: Path, change) -> None:
    saved = json.loads((folder / "config.json").read_text())
    saved = change(saved)
    (folder / "config.json").write_text(json.dumps(saved))


@pytest.mark.parametrize("change,words", [
    (lambda d: {**d, "raw": [1, 2]}, "raw is [1,2], not a mapping"),
    (lambda d: {**d, "raw": "text"}, 'raw is "text", not a mapping'),
    (lambda d: {**d, "source": 5}, "source is 5, not text"),
    (lambda d: {**d, "base_dir": None}, "base_dir is null, not text"),
    (lambda d: {**d, "config": []}, "config is [], not a mapping"),
    (lambda d: {**d, "x_limit": "100"}, 'x_limit is "100", not a whole number'),
    (lambda d: {**d, "runs": True}, "runs is true, not a whole number"),
    (lambda d: {**d, "format": "2"}, 'format is "2", not a whole number'),
    (lambda d: {k: v for k, v in d.items() if k != "raw"}, "it lacks the field 'raw'"),
    (lambda d: {k: v for k, v in d.items() if k != "id"}, "it lacks the field 'id' (the folder id)"),
    (lambda d: {**d, "id": 5}, "id is 5, not text"),
    (lambda d: {**d, "kind": 5}, "kind 5 is not sweep or groups"),
    (lambda d: [d], "a JSON list, not a mapping"),
    (lambda d: "text", "a JSON str, not a mapping"),
])
def test_a_damaged_config_json_is_refused_by_field(folder, change, words):
    _edit_config(folder, change)
    for command in (["--resume", str(folder), "--json"], ["--show", str(folder), "--json"]):
        result = run_cli("sweep", *command)
        assert result.exit_status == 2, result.stderr
        assert "config.json: is not the folder description gdfit writes: " + words in result.stderr
        assert [e["event"] for e in result.lines] == ["error"] and "Traceback" not in result.stderr


def test_a_future_format_is_refused(folder):
    _edit_config(folder, lambda d: {**d, "format": 99})
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "has format 99; this gdfit reads formats 1 to 2" in result.stderr
    assert "a newer gdfit wrote it" in result.stderr


def test_a_sweep_folder_with_a_many_fits_kind_points_to_the_other_command(folder):
    _edit_config(folder, lambda d: {**d, "kind": "groups"})
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "is the folder of a many-fits job" in result.stderr
    assert "gdfit run CONFIG --resume" in result.stderr


# ---------------------------------------------------------------- each line keyed to its folder


def test_each_line_digest_is_sha256_of_the_config_digest_and_the_line(folder):
    """An independent recomputation with hashlib: key = SHA-256(config.json as written), digest =
    SHA-256(key, newline, the line without its digest field)."""
    key = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    lines = _lines(folder)
    assert len(lines) == 3
    for line in lines:
        event = json.loads(line)
        body = line.rstrip("\n")[: -len(f',"sha256":"{event["sha256"]}"}}')] + "}"
        assert json.loads(body) == {k: v for k, v in event.items() if k != "sha256"}
        assert event["sha256"] == hashlib.sha256(f"{key}\n{body}".encode()).hexdigest()


def _flip(folder: Path, needle: bytes, offset: int = 0) -> None:
    data = bytearray((folder / "runs.jsonl").read_bytes())
    data[data.index(needle) + len(needle) + offset] ^= 1
    (folder / "runs.jsonl").write_bytes(bytes(data))


@pytest.mark.parametrize("needle", [b'"iters":', b'"loss":', b'"x":[['])
def test_one_flipped_bit_in_a_line_is_refused_with_its_line_number(folder, needle):
    lines = _lines(folder)
    number = next(i for i, line in enumerate(lines, start=1) if needle in line.encode())
    summary = (folder / "summary.json").read_bytes()
    _flip(folder, needle)
    for command in ("--resume", "--show"):
        result = run_cli("sweep", command, str(folder))
        assert result.exit_status == 2
        assert f"runs.jsonl:{number}: does not match its digest: the sweep folder was changed outside gdfit" \
            in result.stderr
    assert (folder / "summary.json").read_bytes() == summary  # the finished summary is left as it was


def test_another_sweeps_journal_is_refused_even_of_the_same_grid(folder, tmp_path):
    other = tmp_path / "other"
    assert run_cli("sweep", SEED, *GRID, "--set", "threshold=1e-3", "--output", str(other)).exit_status == 0
    (folder / "summary.json").unlink()
    (folder / "runs.jsonl").write_bytes((other / "runs.jsonl").read_bytes())
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "runs.jsonl:1: does not match its digest" in result.stderr
    assert not (folder / "summary.json").exists()


def test_a_config_json_edited_after_runs_were_journaled_is_refused(folder):
    (folder / "summary.json").unlink()
    (folder / "runs.jsonl").write_text("".join(_lines(folder)[:1]))
    _edit_config(folder, lambda d: {**d, "raw": {**d["raw"], "threshold": 1e-3}})
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "runs.jsonl:1: does not match its digest" in result.stderr


def test_a_line_without_its_digest_is_refused(folder):
    line = json.loads(_lines(folder)[0])
    del line["sha256"]
    (folder / "runs.jsonl").write_text(json.dumps(line) + "\n")
    result = run_cli("sweep", "--show", str(folder))
    assert result.exit_status == 2 and "runs.jsonl:1: has no digest" in result.stderr


def _signed(folder: Path, events: list[dict]) -> None:
    text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    (folder / "runs.jsonl").write_text(journals.sign(text, journals.folder_key(folder)))


@pytest.mark.parametrize("change,words", [
    ({"loss": None}, "loss is null, and there is no loss_text"),
    ({"loss": -5}, "loss -5 is below 0"),
    ({"iters": 10**30}, "is more than the run's max_iters 10000"),
    ({"iters": 10001}, "iters 10001 is more than the run's max_iters 10000"),
    ({"x": "hello"}, "x is not an array of numbers"),
    ({"x": [[1, 2], [3]]}, "x is not an array of numbers"),
    ({"x": [[1, "a"]]}, "x is not an array of numbers"),
    ({"x_summary": [1]}, "x_summary is not a mapping"),
    ({"loss": None, "loss_text": "nan"}, "a converged run has the loss nan"),
    ({"loss": None, "loss_text": "1.5"}, "loss_text '1.5' is not the text of an infinite or NaN loss"),
    ({"loss": 2.0, "loss_text": "inf"}, "loss_text 'inf' is not the text"),
    ({"loss": None, "loss_text": "-inf", "status": "diverged"}, "loss_text '-inf' is a negative loss"),
])
def test_an_implausible_signed_line_is_left_out_and_its_run_runs_again(folder, change, words):
    events = [json.loads(line) for line in _lines(folder)]
    _signed(folder, [{**{k: v for k, v in events[0].items() if k != "sha256"}, **change}]
            + [{k: v for k, v in e.items() if k != "sha256"} for e in events[1:]])
    (folder / "summary.json").unlink()
    shown = run_cli("sweep", "--show", str(folder), "--json")
    assert shown.exit_status == 0 and words in shown.stderr and "1 line left out" in shown.stderr
    resumed = run_cli("sweep", "--resume", str(folder), "--json")
    assert resumed.exit_status == 0 and len([e for e in resumed.lines if e["event"] == "run"]) == 3


def test_a_diverged_run_with_an_infinite_loss_is_plausible(folder):
    events = [{k: v for k, v in json.loads(line).items() if k != "sha256"} for line in _lines(folder)]
    events[0].update(status="diverged", loss=None, loss_text="inf")
    _signed(folder, events)
    shown = run_cli("sweep", "--show", str(folder), "--json")
    assert shown.exit_status == 0 and "left out" not in shown.stderr
    assert [e for e in shown.lines if e["event"] == "end"][0]["counts"] == {"converged": 2, "diverged": 1}


def test_a_folder_of_the_format_before_digests_still_resumes(folder, tmp_path):
    """A sweep folder written before line digests (format 1, no id) goes on where it stopped: its
    runs were finished by gdfit, and refusing it would throw them away. Its lines get the checks
    every line gets."""
    whole = strict_json((folder / "summary.json").read_text())
    events = [{k: v for k, v in json.loads(line).items() if k != "sha256"} for line in _lines(folder)]
    _edit_config(folder, lambda d: {**{k: v for k, v in d.items() if k != "id"}, "format": 1})
    (folder / "runs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[:2]))
    (folder / "summary.json").unlink()
    resumed = run_cli("sweep", "--resume", str(folder), "--json")
    assert resumed.exit_status == 0 and len([e for e in resumed.lines if e["event"] == "run"]) == 3
    lines = [json.loads(line) for line in _lines(folder)]
    assert len(lines) == 3 and "sha256" not in lines[2]  # the old folder stays of its format
    summary = strict_json((folder / "summary.json").read_text())
    assert summary["runs"] == whole["runs"]


# ---------------------------------------------------------------- resume and --show options


def test_resume_with_config_and_no_grid_uses_the_folders_grid(folder):
    (folder / "summary.json").unlink()
    (folder / "runs.jsonl").write_text("".join(_lines(folder)[:1]))
    result = run_cli("sweep", SEED, "--resume", str(folder), "--json")
    assert result.exit_status == 0, result.stderr
    assert len([e for e in result.lines if e["event"] == "run"]) == 3


@pytest.mark.parametrize("args", [["--set", "threshold=1e-3"], [SEED, "--set", "threshold=1e-3"]])
def test_resume_with_a_differing_set_says_differs(folder, args):
    result = run_cli("sweep", "--resume", str(folder), *args)
    assert result.exit_status == 2
    assert "config threshold differs: the journal has 1e-05, now 0.001" in result.stderr


@pytest.mark.parametrize("extra,named", [
    (["--resume", "{f}"], "--resume"),
    (["--grid", "learning_rate=9"], "--grid"),
    (["--output", "{t}/z.json"], "--output"),
    (["--tensorboard", "{t}/tb"], "--tensorboard"),
    (["--backend", "dask"], "--backend"),
    (["--plot", "{t}/p.png"], "--plot"),
    (["--set", "threshold=1"], "--set"),
    (["--max-iters", "5"], "--max-iters"),
    (["--device", "cpu"], "--device"),
    (["--x-limit", "3"], "--x-limit"),
    (["--address", "tcp://127.0.0.1:1"], "--address"),
    ([SEED], "CONFIG"),
])
def test_show_refuses_each_option_it_would_ignore(folder, tmp_path, extra, named):
    args = [a.replace("{f}", str(folder)).replace("{t}", str(tmp_path)) for a in extra]
    result = run_cli("sweep", "--show", str(folder), *args)
    assert result.exit_status == 2 and f"runs nothing, so it would ignore {named}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # nothing written


def test_show_takes_sort_and_json(folder):
    assert run_cli("sweep", "--show", str(folder), "--sort", "loss", "--json").exit_status == 0


def test_resume_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    result = run_cli("sweep", "--resume", str(tmp_path / "nope"))
    assert result.exit_status == 2 and "nope: does not exist" in result.stderr
    assert not (tmp_path / "nope").exists()

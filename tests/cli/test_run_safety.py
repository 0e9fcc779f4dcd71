"""`gdfit run` loses nothing and mixes nothing: an earlier checkpoint is never replaced by a new run,
a damaged checkpoint is bad input, and scripts reading --json learn of every ending."""

from __future__ import annotations

import hashlib

import pytest

from conftest import SEED_TARGET, run_cli


@pytest.fixture
def seed(tmp_path):
    config = tmp_path / "seed.yaml"
    config.write_text(f"target: {SEED_TARGET}\noptimizer: adam\nlearning_rate: 0.05\n")
    return config


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_earlier_checkpoint_is_never_replaced_by_a_new_run(seed, tmp_path):
    path = tmp_path / "run.ckpt"
    assert run_cli("run", str(seed), "--checkpoint", str(path), "--max-iters", "5", "--every", "0").exit_status == 1
    before = _digest(path)
    again = run_cli("run", str(seed), "--checkpoint", str(path), "--max-iters", "7", "--json")
    assert again.exit_status == 2
    assert [e["event"] for e in again.lines] == ["error"]  # refused before anything ran
    assert (f"{path}: --checkpoint: already holds a checkpoint; continue it with "
            f"`gdfit run {seed} --resume {path} --checkpoint {path}`") in again.stderr
    assert _digest(path) == before
    # the remedy it names works: the run goes on from update 5 and saves over its own checkpoint
    resumed = run_cli("run", str(seed), "--resume", str(path), "--checkpoint", str(path), "--max-iters", "7", "--json")
    assert resumed.exit_status == 1 and resumed.lines[-1]["resumed_from"] == 5 and _digest(path) != before


def test_a_resumed_run_may_not_save_over_another_checkpoint(seed, tmp_path):
    first, second = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    for path in (first, second):
        assert run_cli("run", str(seed), "--checkpoint", str(path), "--max-iters", "3", "--every", "0").exit_status == 1
    before = _digest(second)
    result = run_cli("run", str(seed), "--resume", str(first), "--checkpoint", str(second), "--max-iters", "6")
    assert result.exit_status == 2 and "b.ckpt: --checkpoint: already holds a checkpoint" in result.stderr
    assert _digest(second) == before


def test_any_file_with_content_is_kept_and_an_empty_one_is_used(seed, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    kept = run_cli("run", str(seed), "--checkpoint", str(notes), "--max-iters", "3")
    assert kept.exit_status == 2 and "already exists (and is not empty)" in kept.stderr
    assert notes.read_text() == "my notes\n"
    empty = tmp_path / "made-by-mktemp"
    empty.touch()
    assert run_cli("run", str(seed), "--checkpoint", str(empty), "--max-iters", "3").exit_status == 1
    assert empty.stat().st_size > 0


def _bug(*args, **kwargs):
    raise ZeroDivisionError("a bug planted by the test")


@pytest.mark.parametrize("where", ["check_paths", "_save"])
def test_an_internal_error_ends_the_json_stream_with_an_error_event(seed, monkeypatch, where):
    """Before the run (nothing on stdout yet) and after its end event: the last line says why."""
    import gdfit.cli.run

    monkeypatch.setattr(gdfit.cli.run, where, _bug)
    result = run_cli("run", str(seed), "--json", "--every", "0", "--max-iters", "3")
    assert result.exit_status == 70
    events = result.lines  # strict JSON Lines throughout
    assert [e["event"] for e in events] == (["error"] if where == "check_paths" else ["start", "end", "error"])
    assert events[-1]["kind"] == "internal"
    assert events[-1]["message"].startswith("internal error: ZeroDivisionError: a bug planted by the test")
    assert "internal error: ZeroDivisionError" in result.stderr and "Traceback" not in result.stderr


def test_an_internal_error_without_json_leaves_stdout_alone(seed, monkeypatch):
    import gdfit.cli.run

    monkeypatch.setattr(gdfit.cli.run, "check_paths", _bug)
    result = run_cli("run", str(seed), "--max-iters", "3")
    assert result.exit_status == 70 and result.stdout == ""


def test_a_checkpoint_of_another_config_names_the_keys_not_an_input_file(seed, tmp_path):
    """The checkpoint never read data.file: what differs is the config (model, data, target)."""
    path = tmp_path / "seed.ckpt"
    assert run_cli("run", str(seed), "--checkpoint", str(path), "--max-iters", "3", "--every", "0").exit_status == 1
    (tmp_path / "decay.csv").write_text("t,y\n0,5.5\n1,3.9\n2,2.7\n3,2.0\n4,1.4\n")
    decay = tmp_path / "decay.yaml"
    decay.write_text("data: {file: decay.csv}\ntarget: {column: y}\nmodel: {expr: 'a * exp(-t / tau) + c', "
                     "params: {a: 1, tau: 1, c: 0}}\noptimizer: adam\n")
    result = run_cli("run", str(decay), "--resume", str(path), "--every", "0")
    assert result.exit_status == 2
    assert "the input file" not in result.stderr and "changed since it was saved" not in result.stderr
    differs = result.stderr.split("the config differs in ", 1)[1]
    named = [part.split(" (")[0] for part in differs.split("), ")]
    assert {"data", "model", "target"} <= set(named) and "optimizer" not in named  # adam on both sides


def test_another_data_file_by_name_is_a_config_difference(tmp_path):
    """Both configs read a data.file, but not the same one: the config says so, not "it changed"."""
    for name, scale in (("a.csv", 1), ("b.csv", 2)):
        (tmp_path / name).write_text("t,y\n" + "".join(f"{t},{scale * (5 - t)}\n" for t in range(5)))
        (tmp_path / name.replace(".csv", ".yaml")).write_text(
            f"data: {{file: {name}}}\ntarget: {{column: y}}\nmodel: {{expr: 'a * t + b', params: {{a: 0, b: 0}}}}\n"
            "optimizer: adam\n")
    path = tmp_path / "a.ckpt"
    assert run_cli("run", str(tmp_path / "a.yaml"), "--checkpoint", str(path), "--max-iters", "3",
                   "--every", "0").exit_status == 1
    result = run_cli("run", str(tmp_path / "b.yaml"), "--resume", str(path), "--every", "0")
    assert result.exit_status == 2 and "changed since it was saved" not in result.stderr
    assert "the config differs in data (checkpoint {'file': 'a.csv'" in result.stderr


@pytest.fixture
def wide(tmp_path):
    """adam on a 300 x 300 target: the loss sums 90,000 elements, which torch splits among its threads."""
    config = tmp_path / "wide.yaml"
    config.write_text("target: {random: {shape: [300, 300], seed: 1, low: -1.0, high: 1.0}}\ninit: zeros\n"
                      "optimizer: adam\nlearning_rate: 0.01\nthreshold: 0\nmax_iters: 60\n")
    return config


def _history(result) -> list:
    return [e["loss"] for e in result.lines if e["event"] == "step"]


def test_a_resume_keeps_the_checkpoints_thread_count(wide, tmp_path):
    one = run_cli("run", str(wide), "--json", "--threads", "1")
    two = run_cli("run", str(wide), "--json", "--threads", "2")
    assert _history(one) != _history(two)  # the count changes the arithmetic: the check has teeth
    path = tmp_path / "two.ckpt"
    assert run_cli("run", str(wide), "--every", "0", "--threads", "2", "--max-iters", "30",
                   "--checkpoint", str(path)).exit_status == 1
    resumed = run_cli("run", str(wide), "--json", "--resume", str(path))  # no --threads: the checkpoint's 2
    assert resumed.lines[0]["threads"]["count"] == 2
    assert _history(resumed) == _history(two)[30:] and resumed.lines[-1]["loss"] == two.lines[-1]["loss"]
    refused = run_cli("run", str(wide), "--json", "--resume", str(path), "--threads", "1")
    assert refused.exit_status == 2 and [e["event"] for e in refused.lines] == ["error"]
    assert "--threads: 1 differs from the checkpoint's 2" in refused.stderr
    assert "give --threads 2" in refused.stderr


@pytest.mark.parametrize("args", [["run", "configs/seed.yaml", "--output", ""], ["run", "configs/seed.yaml", "-o", ""],
                                  ["run", "configs/seed.yaml", "--checkpoint="], ["sweep", "--show", ""]])
def test_an_empty_path_is_refused_as_empty_not_as_the_current_folder(args, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    result = run_cli(*args, "--json")
    flag = "--checkpoint" if "--checkpoint=" in args else "--show" if "--show" in args else "--output"
    assert result.exit_status == 2 and result.lines[-1]["kind"] == "usage"
    assert f"gdfit: error: {flag}: is empty; give a file or folder path" in result.stderr
    assert f"see 'gdfit {args[0]} --help'" in result.stderr


def test_a_checkpoint_given_as_config_is_named_as_one(seed, tmp_path):
    path = tmp_path / "run.ckpt"
    assert run_cli("run", str(seed), "--checkpoint", str(path), "--max-iters", "3", "--every", "0").exit_status == 1
    result = run_cli("run", str(path))
    assert result.exit_status == 2 and "not UTF-8" not in result.stderr
    assert f"{path}: is a ZIP archive (a gdfit checkpoint?), not a YAML config" in result.stderr
    assert f"gdfit run CONFIG --resume {path} --checkpoint {path}" in result.stderr

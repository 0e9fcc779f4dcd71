"""Messages a user can act on: no exception class names, the right reason for a symlink, a folder
or a nonsense document, and nothing from matplotlib on stderr."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, run_cli, run_process

SEED = str(ROOT / "configs" / "seed.yaml")


def test_save_on_a_directory_says_so(tmp_path):
    result = run_cli("run", SEED, "--save", str(tmp_path))
    assert result.exit_status == 2 and "is a directory; give a file name ending in .npz or .pt" in result.stderr


@pytest.fixture
def loop(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    return tmp_path / "a"


def test_a_symlink_loop_is_named_as_one(tmp_path, loop):
    (tmp_path / "t.yaml").write_text(f"target: {{file: {loop}}}\n")
    for args in (["run", str(tmp_path / "t.yaml")], ["run", SEED, "--resume", str(loop)],
                 ["run", SEED, "--output", str(loop)]):
        result = run_cli(*args)
        assert result.exit_status == 2 and "is a symlink loop" in result.stderr, args
        assert "no such file" not in result.stderr


def test_a_dangling_symlink_names_its_target(tmp_path):
    os.symlink(tmp_path / "gone.csv", tmp_path / "t.csv")
    (tmp_path / "t.yaml").write_text("target: {file: t.csv}\n")
    result = run_cli("run", str(tmp_path / "t.yaml"))
    assert result.exit_status == 2 and "is a symlink to" in result.stderr and "which does not exist" in result.stderr


@pytest.mark.parametrize("document,words", [
    ({"history": ["a", "b"]}, "history holds 'a'; expected losses"),
    ({"history": {"iter": [0, 1], "loss": [math_nan := float("nan"), math_nan]}}, "no finite loss above 0"),
    ({"history": {"iter": ["x"], "loss": [1.0]}}, "history.iter holds 'x'"),
    ({"history": 5}, "history is int"),
    ({"history": {"iter": [0, 1], "loss": [1.0]}}, "lists iter and loss of one length"),
    ({"runs": [{"params": {"lr": 1}, "status": "converged", "iters": "x"}], "grid": {"lr": [1]}, "config": {}},
     "iters is 'x'"),
    ({"runs": [{"params": {}, "status": "converged", "iters": 3}], "grid": {"lr": [1]}, "config": {}},
     "params lack the swept key 'lr'"),
])
def test_plot_refuses_nonsense_documents_plainly(tmp_path, document, words):
    pytest.importorskip("matplotlib")
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document))
    result = run_process("plot", str(path), "-o", str(tmp_path / "p.png"))
    assert result.exit_status == 2 and words in result.stderr
    assert "Warning" not in result.stderr and not (tmp_path / "p.png").exists()


def test_plot_of_a_run_with_a_diverged_tail_draws_quietly(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "doc.json"
    path.write_text('{"history": {"iter": [0, 1, 2], "loss": [1.0, 1e300, Infinity]}, "status": "diverged"}')
    result = run_process("plot", str(path), "-o", str(tmp_path / "p.png"))
    assert result.exit_status == 0 and "Warning" not in result.stderr and (tmp_path / "p.png").exists()

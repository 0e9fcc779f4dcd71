"""No output overwrites another input or output: every pair of paths compared by file identity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from gdfit.errors import OutputError
from gdfit.files.paths import config_inputs, reads, refuse_clashes, writes

SEED = str(ROOT / "configs" / "seed.yaml")


def _seed(tmp_path: Path) -> str:
    path = tmp_path / "seed.yaml"
    path.write_text(Path(SEED).read_text())
    return str(path)


def test_resume_and_output_on_one_file_is_refused_and_the_checkpoint_kept(tmp_path):
    config, ckpt = _seed(tmp_path), tmp_path / "c.ckpt"
    assert run_cli("run", config, "--checkpoint", str(ckpt), "--max-iters", "5", "--json").exit_status == 1
    before = ckpt.read_bytes()
    result = run_cli("run", config, "--resume", str(ckpt), "--output", str(ckpt), "--max-iters", "10")
    assert result.exit_status == 2
    assert "--resume and --output name the same file" in result.stderr
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("first,second", [("--save", "--output"), ("--save", "--checkpoint"),
                                          ("--output", "--plot"), ("--checkpoint", "--output")])
def test_two_outputs_on_one_file_are_refused(tmp_path, first, second):
    target = tmp_path / "same.npz"
    result = run_cli("run", _seed(tmp_path), first, str(target), second, str(target))
    assert result.exit_status == 2, result.stderr
    assert "name the same file" in result.stderr and not target.exists()


def test_an_output_onto_the_config_through_a_hard_link_is_refused(tmp_path):
    config = _seed(tmp_path)
    os.link(config, tmp_path / "other-name.json")
    result = run_cli("run", config, "--output", str(tmp_path / "other-name.json"))
    assert result.exit_status == 2 and "CONFIG and --output name the same file" in result.stderr
    assert Path(config).read_text() == Path(SEED).read_text()


def test_an_output_onto_a_data_file_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text((ROOT / "configs" / "decay.csv").read_text())
    (tmp_path / "fit.yaml").write_text((ROOT / "configs" / "decay.yaml").read_text().replace("decay.csv", "d.csv"))
    os.symlink(tmp_path / "d.csv", tmp_path / "link.npz")
    result = run_cli("run", str(tmp_path / "fit.yaml"), "--save", str(tmp_path / "link.npz"))
    assert result.exit_status == 2 and "data.file and --save name the same file" in result.stderr


def test_resume_and_checkpoint_may_name_one_file(tmp_path):
    config, ckpt = _seed(tmp_path), str(tmp_path / "c.ckpt")
    assert run_cli("run", config, "--checkpoint", ckpt, "--max-iters", "5", "--json").exit_status == 1
    assert run_cli("run", config, "--resume", ckpt, "--checkpoint", ckpt, "--json").exit_status == 0


def test_a_sweep_document_inside_its_own_folder_is_refused(tmp_path):
    config, folder = _seed(tmp_path), tmp_path / "sw"
    assert run_cli("sweep", config, "--grid", "learning_rate=0.5,1", "--output", str(folder), "--json").exit_status == 0
    saved = (folder / "config.json").read_bytes()
    result = run_cli("sweep", "--resume", str(folder), "--output", str(folder / "config.json"))
    assert result.exit_status == 2 and "holds the journal of a sweep or many-fits job" in result.stderr
    assert (folder / "config.json").read_bytes() == saved


def test_plot_may_not_replace_what_it_draws(tmp_path):
    document = tmp_path / "a.json"
    assert run_cli("run", _seed(tmp_path), "--output", str(document), "--json").exit_status == 0
    result = run_cli("plot", str(document), "-o", str(document))
    assert result.exit_status == 2 and "FILE and --output name the same file" in result.stderr


def test_reads_may_share_a_file_and_writes_elsewhere_pass(tmp_path):
    refuse_clashes(reads("CONFIG", tmp_path / "a") + reads("target.file", tmp_path / "a")
                   + writes("--output", tmp_path / "b"))
    with pytest.raises(OutputError):
        refuse_clashes(reads("target.file", tmp_path / "x" / ".." / "a") + writes("--output", tmp_path / "a"))


def test_config_inputs_finds_every_file_key_relative_to_the_config(tmp_path):
    config = {"target": {"file": "t.csv"}, "model": {"inputs": {"file": "/abs/a.csv"}},
              "datasets": [{"data": {"file": "d.csv"}}], "init": "random"}
    found = {use.key: use.path for use in config_inputs(config, tmp_path)}
    assert found == {"target.file": tmp_path / "t.csv", "model.inputs.file": Path("/abs/a.csv"),
                     "datasets.0.data.file": tmp_path / "d.csv"}

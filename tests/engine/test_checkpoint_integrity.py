"""A checkpoint resumes only when it is intact, its fields are what gdfit writes, and the files the
run reads are the ones it was made from."""

from __future__ import annotations

import math
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SEED_TARGET, run_cli
from gdfit.engine.checkpoint import content_digest, seal, target_digest


@pytest.fixture
def saved(tmp_path):
    """A seed run with adam, stopped after 5 updates, and its checkpoint."""
    config = tmp_path / "seed.yaml"
    config.write_text(f"target: {SEED_TARGET}\noptimizer: adam\nlearning_rate: 0.05\n")
    path = tmp_path / "run.ckpt"
    assert run_cli("run", str(config), "--checkpoint", str(path), "--max-iters", "5", "--json").exit_status == 1
    return str(config), path


def _resume(config: str, path: Path, *extra: str):
    result = run_cli("run", config, "--resume", str(path), "--max-iters", "10", *extra)
    assert "Error:" not in result.stderr and "Traceback" not in result.stderr
    return result


def _rezip_with_flip(path: Path, member_index: int) -> None:
    """Flip one bit of one tensor's bytes and write a zip with correct CRCs: what torch.load cannot see."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    tensors = sorted((n for n in members if "/data/" in n and not n.endswith(".pkl")), key=lambda n: int(n.rsplit("/", 1)[1]))
    name = tensors[member_index]
    flipped = bytearray(members[name])
    flipped[len(flipped) // 2] ^= 0x40
    members[name] = bytes(flipped)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)


@pytest.mark.parametrize("member", [0, 1, -1])  # the parameters, the optimizer's state, the history
def test_a_flipped_byte_in_any_tensor_is_refused(saved, member):
    config, path = saved
    _rezip_with_flip(path, member)
    result = _resume(config, path)
    assert result.exit_status == 2
    assert "its content does not match its SHA-256" in result.stderr


def _crafted(path: Path, change) -> None:
    """Rewrite the checkpoint with one field changed and its digest made to match."""
    document = torch.load(path, weights_only=True)
    change(document)
    torch.save(seal(document), path)


def _set(key, value):
    def change(document):
        document[key] = value
    return change


@pytest.mark.parametrize("change,words", [
    (_set("elapsed_s", math.nan), "elapsed_s is nan, expected a finite number of seconds >= 0"),
    (_set("elapsed_s", -1.0), "elapsed_s is -1.0"),
    (_set("iters", 2.5), "iters is 2.5, expected a whole number >= 0"),
    (_set("iters", "abc"), "iters is 'abc'"),
    (_set("iters", 4), "its history has 6 losses for 4 updates"),
    (lambda d: d["rules"].update(best=torch.zeros(3, dtype=torch.float64)), "rules entry 'best' is [3], expected a tensor of shape [1]"),
    (lambda d: d["rules"].update(nonsense=torch.zeros(1)), "rules has unknown entries nonsense"),
    (lambda d: d["params"]["x"].fill_(math.nan), "params entry 'x' holds NaN or infinite values"),
    (lambda d: d["optimizer"]["x"].update(m=torch.zeros(1, 2, 2)), "the optimizer state of 'x' is"),
    (lambda d: d["optimizer"]["x"].pop("v"), "the optimizer state of 'x' is"),
    (lambda d: d["optimizer"]["x"].update(v=d["optimizer"]["x"]["v"].double()), "the optimizer state of 'x' is"),
    (lambda d: d.pop("versions"), "it lacks the field versions"),
    (lambda d: d.pop("threads"), "it lacks the field threads"),
    (_set("threads", 0), "threads is 0, expected a whole number >= 1"),
    (_set("threads", True), "threads is True, expected a whole number >= 1"),
    (_set("gdfit_checkpoint", 2), "format 2, this gdfit reads format 3"),
    (_set("config", ["not", "a", "mapping"]), "config is list, expected a mapping"),
])
def test_every_field_is_checked_with_a_plain_message(saved, change, words):
    config, path = saved
    _crafted(path, change)
    result = _resume(config, path)
    assert result.exit_status == 2, result.stderr
    assert words in result.stderr
    for leak in ("KeyError", "AttributeError", "ValueError", "TypeError"):
        assert leak not in result.stderr


def test_the_seed_may_not_change_on_resume(saved):
    config, path = saved
    result = _resume(config, path, "--seed", "7")
    assert result.exit_status == 2 and "seed (checkpoint 0, now 7)" in result.stderr


def test_an_intact_checkpoint_still_resumes(saved):
    config, path = saved
    assert _resume(config, path).exit_status == 1


def test_the_content_digest_covers_keys_values_shapes_and_dtypes():
    base = {"iters": 1, "x": torch.zeros(2, 3), "config": {"seed": 0}}
    variants = [{**base, "iters": 2}, {**base, "x": torch.zeros(3, 2)}, {**base, "x": torch.zeros(2, 3, dtype=torch.float64)},
                {**base, "config": {"seed": 1}}, {**base, "extra": None}, {"iters": 1, "x": torch.zeros(2, 3), "config": {"sed": 0}}]
    digests = {content_digest(d) for d in variants}
    assert len(digests) == len(variants) and content_digest(base) not in digests
    assert content_digest(seal(base)) == content_digest(base)  # the digest leaves itself out


def test_the_target_digest_covers_shape_and_dtype():
    values = torch.arange(6, dtype=torch.float32)
    assert target_digest(values) != target_digest(values.reshape(2, 3))
    assert target_digest(values) != target_digest(values.view(torch.int32))  # same bytes, another dtype
    assert target_digest(values) == target_digest(values.clone())


def _linear(tmp_path: Path) -> Path:
    for name in ("linear.yaml", "linear-inputs.csv", "linear-targets.csv"):
        shutil.copy(ROOT / "configs" / name, tmp_path / name)
    return tmp_path / "linear.yaml"


@pytest.mark.parametrize("changed,key", [("linear-inputs.csv", "model.inputs.file"), ("linear-targets.csv", "target.file")])
def test_a_changed_input_file_is_refused_by_name(tmp_path, changed, key):
    config, ckpt = str(_linear(tmp_path)), str(tmp_path / "c.ckpt")
    assert run_cli("run", config, "--checkpoint", ckpt, "--max-iters", "3", "--json").exit_status == 1
    lines = (tmp_path / changed).read_text().splitlines()
    (tmp_path / changed).write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # the same rows in another order
    result = run_cli("run", config, "--resume", ckpt, "--max-iters", "5")
    assert result.exit_status == 2
    assert f"the input file {key}" in result.stderr and "changed since it was saved" in result.stderr


def test_a_sweep_resume_after_the_target_changed_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("0.1,0.2\n0.3,0.4\n")
    (tmp_path / "s.yaml").write_text("target: {file: t.csv}\nmax_iters: 50\n")
    folder = tmp_path / "sweep"
    args = ["sweep", str(tmp_path / "s.yaml"), "--grid", "learning_rate=0.5,1", "--output", str(folder), "--json"]
    assert run_cli(*args).exit_status == 0
    (folder / "runs.jsonl").write_text("")  # as if killed before any run finished
    (tmp_path / "t.csv").write_text("0.1,0.2\n0.3,0.5\n")
    result = run_cli("sweep", "--resume", str(folder))
    assert result.exit_status == 2 and "the input file target.file" in result.stderr
    assert (folder / "runs.jsonl").read_text() == ""

"""Bad, hostile and malformed input: always exit 2, a located message, never a traceback."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdfit.config import build_config, load_config
from gdfit.errors import GdfitError

T = "target: [[1, 2], [3, 4]]\n"

# (config text, a fragment the message must contain)
BAD_CONFIGS = [
    (T + "learning_rate: -1\n", "learning_rate: must be a number > 0, got -1"),
    (T + "learning_rate: 0\n", "learning_rate: must be a number > 0"),
    (T + "learning_rate: fast\n", "learning_rate: expected a number, got the text 'fast'"),
    (T + "learning_rate: true\n", "learning_rate: expected a number, got a boolean"),
    (T + "learning_rate: .nan\n", "learning_rate: expected a finite number"),
    (T + "threshold: -0.1\n", "threshold: must be >= 0"),
    (T + "max_iters: -3\n", "max_iters: must be an integer >= 0"),
    (T + "max_iters: 2.5\n", "max_iters: expected an integer"),
    (T + "seed: abc\n", "seed: expected an integer"),
    (T + "learnin_rate: 1\n", "did you mean 'learning_rate'"),
    (T + "optimiser: adam\n", "did you mean 'optimizer'"),
    ("target: [[1, 2, 3], [4, 5]]\n", "row 2 has 2 values, row 1 has 3"),
    ("target: [[1, 2], [3, yes]]\n", "row 2, column 2: expected a number, got a boolean"),
    ("target: [[1, 2], [3, four]]\n", "expected a number, got the text 'four'"),
    ("target: [[1, .nan], [3, 4]]\n", "expected a finite number"),
    ("target: [[1, .inf], [3, 4]]\n", "expected a finite number"),
    ("target: []\n", "target: the matrix is empty"),
    ("target: [[]]\n", "empty"),
    ("learning_rate: 1\n", "target: is required"),
    ("target:\n", "target: expected a number, got nothing"),
    (T + "init: [[1, 2, 3]]\n", "init: shape [1, 3] differs from the target's shape [2, 2]"),
    (T + "init: [[1, .nan], [3, 4]]\n", "init: row 1, column 2: expected a finite number"),
    (T + "init: zero\n", "unknown init 'zero' (did you mean 'zeros'?)"),
    (T + "loss: mae\n", "choose one of: mse, l1, huber, smooth_l1"),
    (T + "optimizer: sgd\n", "unknown optimizer 'sgd' (did you mean 'gd'?); choose one of: gd, momentum, nesterov, adam, rmsprop"),
    (T + "optimizer: {name: adam, beta: [0.9, 0.9]}\n", "did you mean 'betas'"),
    (T + "optimizer: {name: momentum, momentum: 1.5}\n", "optimizer.momentum: must be in [0, 1)"),
    (T + "optimizer: {momentum: 0.5}\n", "needs `name:`"),
    (T + "device: tpu\n", "unknown device 'tpu'; choose one of: auto, cpu, cuda, cuda:N, mps"),
    (T + "dtype: int8\n", "unknown dtype 'int8'; choose one of: float32, float64, float16, bfloat16"),
    (T + "engine: turbo\n", "unknown engine 'turbo'"),
    (T + "schedule: {name: step, step_size: 0}\n", "schedule.step_size: must be an integer > 0"),
    (T + "schedule: linear\n", "unknown schedule 'linear'"),
    (T + "divergence_factor: 0.5\n", "divergence_factor: must be a number > 1"),
    ("target: {random: {shape: [0, 3]}}\n", "shape must be 1 to 8 positive integers"),
    ("target: {random: {shape: [3], low: 1, high: 0}}\n", "high must be greater than low"),
    ("target: {fil: x.npy}\n", "expected a matrix, {file: PATH}, {random"),
    ("target: [[1, 2]\n", "invalid YAML"),
    ("target: [1, 2]\n  bad: indent\n", "invalid YAML"),
    ("- 1\n- 2\n", "the config must be a mapping"),
    ("just text\n", "the config must be a mapping"),
    ("", "the config is empty"),
    ("# only a comment\n", "the config is empty"),
    (T + "target: [1]\n", "appears twice"),
    ("target: !!python/object/apply:os.system ['echo pwned']\n", "is not allowed"),
    ("target: !!python/name:os.system\n", "is not allowed"),
    ("target: !!binary aGVsbG8=\n", "is not allowed"),
    ("target: 2001-12-14\n", "is not allowed"),
    ("? [1, 2]\n: 3\n", "keys must be plain names"),
]


@pytest.mark.parametrize("text,fragment", BAD_CONFIGS, ids=[f"bad{i}" for i in range(len(BAD_CONFIGS))])
def test_bad_config_exits_2_with_a_located_message(cli, write_config, text, fragment):
    path = write_config(text)
    result = cli("run", path, "--json")
    assert result.exit_status == 2, result.stderr
    assert fragment in result.stderr
    assert result.stderr.startswith(f"gdfit: error: {path}")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert result.lines[-1]["event"] == "error"


def test_messages_carry_line_and_column(write_config):
    path = write_config("target: [[1, 2], [3, 4]]\nseed: 1\nlearning_rate: -1\n")
    with pytest.raises(GdfitError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:3:16: learning_rate: must be a number > 0, got -1"


def test_nested_keys_point_at_their_own_line(write_config):
    path = write_config("target: [[1, 2], [3, 4]]\noptimizer:\n  name: adam\n  eps: -1\n")
    with pytest.raises(GdfitError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:4:8: optimizer.eps:")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "/nonexistent/config.yaml"], "no such config file"),
        (["run", "."], "is a directory"),
        (["run", "configs/seed.yaml", "--set", "learning_rate"], "expected KEY=VALUE"),
        (["run", "configs/seed.yaml", "--set", "learning_rate=[1"], "invalid YAML"),
        (["run", "configs/seed.yaml", "--set", "optimizer.betas=[0.9]"], "unknown key 'betas'"),
        (["run", "configs/seed.yaml", "--device", "cuda:7"], "device 'cuda:7'"),
        (["run", "configs/seed.yaml", "--device", "mps"], "device 'mps' is not available"),
    ],
)
def test_bad_paths_flags_and_devices(cli, args, fragment, monkeypatch):
    import os

    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    result = cli(*args)
    assert result.exit_status == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert os.getcwd() == str(ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_a_gpu_says_why(cli, write_config):
    result = cli("run", write_config(T + "device: cuda\n"))
    assert result.exit_status == 2
    assert "not available" in result.stderr and ("CPU-only" in result.stderr or "no usable GPU" in result.stderr)


def test_auto_device_falls_back_and_says_which(cli, write_config):
    result = cli("run", write_config(T), "--json", "--every", "0")
    assert result.lines[0]["device"] in ("cpu",) or result.lines[0]["device"].startswith(("cuda", "mps"))


def test_resource_guard_refuses_huge_targets(cli, write_config):
    result = cli("run", write_config("target: {random: {shape: [200000, 200000]}}\ndevice: cpu\n"))
    assert result.exit_status == 2
    assert "needs about" in result.stderr and "GiB" in result.stderr


# ------------------------------------------------------------------ hostile YAML


def test_alias_bomb_is_refused_fast(cli, write_config):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("target: *a11")
    started = time.monotonic()
    result = cli("run", write_config("\n".join(lines) + "\n"))
    assert time.monotonic() - started < 10
    assert result.exit_status == 2
    assert "more than 100,000 values" in result.stderr


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deep_nesting_is_refused(cli, write_config, depth):
    result = cli("run", write_config("target: " + "[" * depth + "1" + "]" * depth + "\n"))
    assert result.exit_status == 2
    assert "nested" in result.stderr


def test_huge_inline_matrix_points_to_files(cli, write_config):
    row = "[" + ", ".join(["0.5"] * 200) + "]"
    text = "target: [" + ", ".join([row] * 100) + "]\n"  # 20,000 numbers
    result = cli("run", write_config(text))
    assert result.exit_status == 2
    assert "{file: PATH}" in result.stderr


def test_oversized_document_is_refused(cli, write_config):
    result = cli("run", write_config("target: 1\n# " + "x" * 3_000_000 + "\n"))
    assert result.exit_status == 2
    assert "characters" in result.stderr


def test_binary_garbage_is_refused(cli, tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    result = cli("run", str(path))
    assert result.exit_status == 2
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ target and init files


def _run_with_target(cli, tmp_path, filename, writer, key="target"):
    writer(tmp_path / filename)
    config = tmp_path / "c.yaml"
    if key == "target":
        config.write_text(f"target: {{file: {filename}}}\nmax_iters: 5\nthreshold: 0\n")
    else:
        config.write_text(f"target: [[1, 2], [3, 4]]\ninit: {{file: {filename}}}\nmax_iters: 5\nthreshold: 0\n")
    return cli("run", str(config), "--json", "--every", "0")


@pytest.mark.parametrize(
    "name,writer",
    [
        ("t.csv", lambda p: p.write_text("1,2,3\n4,5,6\n")),
        ("t.txt", lambda p: p.write_text("1 2 3\n4 5 6\n")),
        ("t.npy", lambda p: np.save(p, np.arange(6, dtype=np.float32).reshape(2, 3))),
        ("t.pt", lambda p: torch.save(torch.arange(6.0).reshape(2, 3), p)),
    ],
)
def test_good_target_files_load_relative_to_the_config(cli, tmp_path, name, writer):
    result = _run_with_target(cli, tmp_path, name, writer)
    assert result.exit_status == 1, result.stderr  # max_iters with threshold 0
    assert result.lines[0]["shape"] == [2, 3]


def _pickled_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


class Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


@pytest.mark.parametrize(
    "name,writer,fragment",
    [
        ("bad.csv", lambda p: p.write_text("1,2,3\n4,5\n"), "cannot read .csv"),
        ("bad2.csv", lambda p: p.write_text("1,2\n3,x\n"), "cannot read .csv"),
        ("empty.csv", lambda p: p.write_text(""), "holds no numbers"),
        ("nan.csv", lambda p: p.write_text("1,nan\n3,4\n"), "NaN or infinite"),
        ("obj.npy", _pickled_npy, "cannot read .npy"),
        ("junk.npy", lambda p: p.write_bytes(b"not numpy at all"), "cannot read .npy"),
        ("cplx.npy", lambda p: np.save(p, np.ones(3, dtype=np.complex64)), "expected real numbers"),
        ("dict.pt", lambda p: torch.save({"w": torch.ones(2)}, p), "holds a dict, expected a single tensor"),
        ("evil.pt", lambda p: torch.save(Evil(), p), "cannot read .pt"),
        ("junk.pt", lambda p: p.write_bytes(b"\x00" * 64), "cannot read .pt"),
        ("data.json", lambda p: p.write_text("[1, 2]"), "unsupported file type '.json'"),
        ("missing.npy", lambda p: None, "no such file"),
    ],
)
def test_bad_target_files(cli, tmp_path, capfd, name, writer, fragment):
    result = _run_with_target(cli, tmp_path, name, writer)
    assert result.exit_status == 2
    assert fragment in result.stderr
    assert name in result.stderr
    assert "pickle code ran" not in result.stdout + capfd.readouterr().out


def test_init_file_with_the_wrong_shape(cli, tmp_path):
    result = _run_with_target(cli, tmp_path, "i.csv", lambda p: p.write_text("1,2,3\n"), key="init")
    assert result.exit_status == 2
    assert "differs from the target's shape" in result.stderr


# ------------------------------------------------------------------ properties

yamlish = st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#% \n\tabc019.eE+target_rnfix")), max_size=200)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(), st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
keys = st.sampled_from(["target", "init", "seed", "loss", "optimizer", "learning_rate", "schedule", "threshold",
                        "max_iters", "device", "dtype", "engine", "patience", "name", "file", "random", "shape"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yamlish)
def test_random_yamlish_text_only_raises_gdfit_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("y") / "c.yaml"
    path.write_text(text)
    try:
        load_config(str(path))
    except GdfitError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(keys, values, max_size=6))
def test_random_config_dicts_only_raise_gdfit_errors(data):
    from pathlib import Path

    try:
        build_config(data, source="prop", base_dir=Path("."))
    except GdfitError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=300))
def test_random_bytes_only_raise_gdfit_errors(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("b") / "c.yaml"
    path.write_bytes(blob)
    try:
        load_config(str(path))
    except GdfitError:
        pass

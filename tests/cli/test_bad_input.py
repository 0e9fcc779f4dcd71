"""Bad, hostile and malformed input: always exit 2, a located message, never a traceback."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import ROOT, run_process

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
    ("target: [[1, 2], [3, true]]\n", "row 2, column 2: expected a number, got a boolean"),
    ("target: [[1, 2], [3, yes]]\n", "row 2, column 2: expected a number, got the text 'yes'"),  # YAML 1.2
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
    ("target: 2001-12-14\n", "expected a number, got the text '2001-12-14'"),  # YAML 1.2: no timestamps
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
    assert "the limit is 2,000,000 bytes" in result.stderr


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


# ------------------------------------------------------------------ bounded reads (README: "Limits")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_devices_as_config_are_refused_at_the_limit(cli, device):
    result = cli("config", device)
    assert result.exit_status == 2
    assert "holds more than 2,000,000 bytes; the limit is 2,000,000 bytes" in result.stderr


def test_a_huge_sparse_config_is_refused_unread(cli, tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(3 * 2**30)  # 3 GB of holes: reading it would take seconds and 3 GB
    result = cli("config", str(path))
    assert result.exit_status == 2
    assert "is 3,221,225,472 bytes; the limit is 2,000,000 bytes" in result.stderr


def test_stdin_over_the_limit_is_refused(cli):
    result = cli("config", "-", stdin="target: 1\n" + "#" * 2_000_000 + "\n")
    assert result.exit_status == 2
    assert "<stdin>: the config holds more than 2,000,000 bytes" in result.stderr


def test_stdin_at_the_limit_is_read(cli):
    text = "target: 1\n#"
    result = cli("config", "-", stdin=text + "x" * (2_000_000 - len(text) - 1) + "\n")
    assert result.exit_status == 0, result.stderr


@pytest.mark.parametrize("name,limit", [("t.csv", 256 * 2**20), ("t.txt", 256 * 2**20), ("t.npy", 2 * 2**30),
                                        ("t.pt", 2 * 2**30)])
def test_data_files_over_their_limit_are_refused_unread(cli, tmp_path, name, limit):
    def sparse(path):
        with open(path, "wb") as handle:
            handle.truncate(limit + 1)

    result = _run_with_target(cli, tmp_path, name, sparse)
    assert result.exit_status == 2
    assert f"the file is {limit + 1:,} bytes; the limit is {limit:,} bytes" in result.stderr
    assert name in result.stderr


def test_a_huge_range_is_refused_before_it_is_built(cli):
    result = cli("sweep", "configs/seed.yaml", "--grid", "seed=0..10000000000")
    assert result.exit_status == 2
    assert "has 10,000,000,001 values; at most 100,000 runs" in result.stderr


# ------------------------------------------------------------------ data files in the user's words


def test_a_csv_with_a_byte_order_mark_is_read(cli, tmp_path):
    result = _run_with_target(cli, tmp_path, "bom.csv", lambda p: p.write_bytes(b"\xef\xbb\xbf1,2\n3,4\n"))
    assert result.exit_status == 1, result.stderr
    assert result.lines[0]["shape"] == [2, 2]


@pytest.mark.parametrize("text,fragment", [("1,2,3\n4,5\n", "row 2 has 2 values, row 1 has 3"),
                                           ("1,2\n3,x\n", "row 2, column 2: 'x' is not a number")])
def test_csv_problems_in_plain_words(cli, tmp_path, text, fragment):
    result = _run_with_target(cli, tmp_path, "bad.csv", lambda p: p.write_text(text))
    assert result.exit_status == 2
    assert fragment in result.stderr and "usecols" not in result.stderr


@pytest.mark.parametrize("text,fragment", [
    ("x,y\n1,2\n3,\n", "line 3, column 2 ('y') is empty: write nan for a missing value"),
    ("# units: s, m\nx,y\n1,2\n\n# a gap\n3,abc\n", "line 6, column 2 ('y'): 'abc' is not a number"),
    ("x,y\n1,2\n3,4,5\n", "line 3 has 3 values, the rows before it 2"),
])
def test_data_csv_problems_name_the_files_line_and_column(cli, tmp_path, text, fragment):
    (tmp_path / "d.csv").write_text(text)
    config = tmp_path / "fit.yaml"
    config.write_text('data: {file: d.csv}\ntarget: {column: y}\nmodel: {expr: "a * x", params: {a: 1}}\noptimizer: lm\n')
    result = cli("run", str(config))
    assert result.exit_status == 2
    assert result.stderr.strip() == f"gdfit: error: {tmp_path / 'd.csv'}: data.file: {fragment}"


def _odd_tensors():
    return {
        "sparse": lambda: torch.eye(3).to_sparse(),
        "sparse_csr": lambda: torch.eye(3).to_sparse_csr(),
        "nested": lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "meta": lambda: torch.empty(3, device="meta"),
        "quantized": lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8),
        "float8_e4m3fn": lambda: torch.ones(3).to(torch.float8_e4m3fn),
        "uint32": lambda: torch.ones(3, dtype=torch.uint32),
        "complex64": lambda: torch.ones(3, dtype=torch.complex64),
    }


@pytest.mark.parametrize("kind", list(_odd_tensors()))
def test_pt_files_of_odd_tensors_are_refused_quietly(cli, tmp_path, capfd, kind):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tensor = _odd_tensors()[kind]()
    result = _run_with_target(cli, tmp_path, "odd.pt", lambda p: torch.save(tensor, p))
    captured = capfd.readouterr()
    assert result.exit_status == 2, result.stderr
    assert f"holds a {kind.split('_')[0]}" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert "Warning" not in captured.err + result.stderr and "dispatch" not in result.stderr.lower()


def test_a_pt_file_of_objects_says_so_without_torch_advice(cli, tmp_path):
    result = _run_with_target(cli, tmp_path, "evil.pt", lambda p: torch.save(Evil(), p))
    assert result.exit_status == 2
    assert "holds objects other than tensors" in result.stderr and "weights_only" not in result.stderr


# ------------------------------------------------------------------ numbers outside the dtype


@pytest.mark.parametrize("text,fragment", [
    ("target: [[1e39, 1]]\n", "target: value 1e+39 is beyond the range of float32"),
    ("target: [[70000, 1]]\ndtype: float16\n", "target: value 70000 is beyond the range of float16"),
    ("target: [[1, 2]]\ndtype: bfloat16\ninit: [[1, 1e39]]\n", "init: value 1e+39 is beyond the range of bfloat16"),
    ("target: {random: {shape: [2], high: 1e39}}\n", "target.random.high: high 1e+39 is beyond the range of float32"),
    ("target: {random: {shape: [100]}}\ninit: {name: normal, mean: 3e38, std: 1e38}\n",
     "init: its values are beyond the range"),
    ("target: {file: big.csv}\n", "target.file: value 1e+39 is beyond the range of float32"),
    ("target: {file: big.csv, dtype: float16}\ndtype: float64\n", "value 1e+39 is beyond the range of float16"),
])
def test_values_beyond_the_dtype_are_input_errors(cli, tmp_path, text, fragment):
    (tmp_path / "big.csv").write_text("1e39,1\n")
    config = tmp_path / "c.yaml"
    config.write_text(text)
    result = cli("run", str(config), "--json", "--every", "0")
    assert result.exit_status == 2, result.stderr
    assert fragment in result.stderr
    assert ("big.csv" in result.stderr) == ("file" in text)


def test_grad_demo_x_beyond_float32(cli):
    result = cli("grad-demo", "--x", "[[1e39, 1]]")
    assert result.exit_status == 2
    assert "value 1e+39 is beyond the range of float32" in result.stderr


@pytest.mark.parametrize("args", [("--set", "seed=18446744073709551616"), ("--seed", "-9223372036854775809"),
                                  ("--set", "target={random: {shape: [2], seed: 18446744073709551616}}")])
def test_seeds_outside_torchs_range(cli, args):
    result = cli("run", "configs/seed.yaml", *args)
    assert result.exit_status == 2, result.stderr
    assert "from -2**63 to 2**64 - 1" in result.stderr


@pytest.mark.parametrize("seed", ["18446744073709551615", "-9223372036854775808"])
def test_seeds_at_the_ends_of_torchs_range_run(cli, seed):
    result = cli("run", "configs/seed.yaml", "--seed", seed, "--max-iters", "1", "--json", "--every", "0")
    assert result.exit_status in (0, 1), result.stderr


# ------------------------------------------------------------------ silent surprises


@pytest.mark.parametrize("text,fragment", [
    (T + "init: {name: random, mean: 1}\n", "init: mean does not apply to init 'random'"),
    (T + "init: {name: zeros, std: 2}\n", "init: std does not apply to init 'zeros'"),
    (T + "init: {name: ones, dtype: float16}\n", "init: dtype does not apply to init 'ones'"),
])
def test_settings_that_do_not_apply_are_errors(cli, write_config, text, fragment):
    result = cli("config", write_config(text))
    assert result.exit_status == 2
    assert fragment in result.stderr


@pytest.mark.parametrize("text", [T + "init: {name: normal, mean: 1, std: 2, dtype: float16}\n",
                                  T + "patience: 5\nmin_rel_improvement: 0.01\n"])
def test_settings_that_apply_are_accepted(cli, write_config, text):
    assert cli("config", write_config(text)).exit_status == 0


def test_a_random_target_and_init_of_one_seed_draw_from_one_stream_in_turn():
    from helpers import resolved

    from gdfit.engine.descent import prepare

    problem = prepare(resolved(target={"random": {"shape": [4, 3], "seed": 5}}, init="random", seed=5))
    gen = torch.Generator().manual_seed(5)
    target, after = torch.rand(4, 3, generator=gen), torch.rand(4, 3, generator=gen)
    assert torch.equal(problem.target, target)
    assert torch.equal(problem.x0, after)  # the init takes the numbers after the target's
    other = prepare(resolved(target={"random": {"shape": [4, 3], "seed": 5}}, init="random", seed=6))
    assert torch.equal(other.x0, torch.rand(4, 3, generator=torch.Generator().manual_seed(6)))  # unchanged


def test_a_file_targets_dtype_is_the_runs(cli, tmp_path):
    np.save(tmp_path / "t.npy", np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float64))
    config = tmp_path / "c.yaml"
    config.write_text("target: {file: t.npy, dtype: float64}\ndtype: float32\nmax_iters: 3\nthreshold: 0\n")
    from gdfit.engine.descent import prepare

    problem = prepare(load_config(str(config), flags={"device": "cpu"}))
    assert problem.target.dtype == problem.x0.dtype == torch.float32
    assert cli("run", str(config), "--json", "--every", "0").lines[0]["dtype"] == "float32"


def test_a_start_whose_loss_overflows_blames_the_range_not_the_rate(cli, write_config):
    result = cli("run", write_config("target: [[1e38, 1]]\ninit: [[-1e38, 0]]\n"))
    assert result.exit_status == 3
    assert "beyond float32's range" in result.stderr and "smaller learning_rate" not in result.stderr


def test_a_curve_fit_whose_start_overflows_blames_its_start_values_in_a_few_words(write_config):
    # exp(460) is finite, its square is not: the loss and the statistics overflow, quietly (a real
    # process: numpy's warnings go to its stderr)
    result = run_process("run", write_config('target: [[1, 2, 3]]\nmodel: {expr: "a * exp(b) + c", params: {a: 1, b: 460, c: 0}}\n'
                                     "optimizer: lm\ndtype: float64\n"))
    assert result.exit_status == 3
    assert "not finite in float64" in result.stderr and "choose start values" in result.stderr
    assert "dtype: float64" not in result.stderr  # it is float64 already
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "setting,message",
    [
        ("data=3", "data: expected a mapping, got the number 3"),
        ("sigma=3", "sigma: expected a mapping, got the number 3"),
        ("target={file: 3}", "target.file: expected text, got the number 3"),
        ("seed=abc", "seed: expected an integer, got the text 'abc'"),
        ("target=[[1, 2], [3]]", "row 2 has 1 value, row 1 has 2"),
    ],
)
def test_messages_use_the_users_words_and_grammar(cli, setting, message):
    result = cli("config", str(ROOT / "configs" / "seed.yaml"), "--set", setting)
    assert result.exit_status == 2 and message in result.stderr
    assert "Input should be" not in result.stderr and "instance of" not in result.stderr


def test_one_update_is_singular(cli):
    result = cli("run", str(ROOT / "configs" / "seed.yaml"), "--max-iters", "1", "--set", "learning_rate=100",
                 "--set", "divergence_factor=1.0001")
    assert "after 1 update " in result.stderr or "after 1 update (" in result.stderr, result.stderr

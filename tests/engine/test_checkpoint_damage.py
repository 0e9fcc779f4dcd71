"""Any damage to a checkpoint's bytes is either refused as bad input (exit 2, InputFileError) or
leaves its content exactly as written: never an internal error, never a warning on stderr."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SEED_TARGET, run_cli
from gdfit.engine.checkpoint import load
from gdfit.errors import InputFileError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A real checkpoint of an adam run (optimizer state, rules, history), its bytes and its fields
    as torch reads them (the oracle for "loads with identical content")."""
    folder = tmp_path_factory.mktemp("damage")
    config = folder / "seed.yaml"
    config.write_text(f"target: {SEED_TARGET}\noptimizer: adam\nlearning_rate: 0.05\n")
    path = folder / "run.ckpt"
    assert run_cli("run", str(config), "--checkpoint", str(path), "--max-iters", "4", "--every", "0").exit_status == 1
    return folder, path.read_bytes(), torch.load(path, weights_only=True)


def _same(loaded, original: dict) -> bool:
    state = loaded.state
    tensors_equal = all(torch.equal(state.params[k], v) for k, v in original["params"].items()) and all(
        torch.equal(state.optimizer[n][k], v) for n, s in original["optimizer"].items() for k, v in s.items()
    ) and all(torch.equal(state.rules[k], v) for k, v in original["rules"].items())
    return (tensors_equal and set(state.params) == set(original["params"])
            and state.iters == original["iters"] and state.elapsed_s == original["elapsed_s"]
            and torch.equal(state.initial, original["initial"])
            and loaded.history == original["history"].tolist() and loaded.config == original["config"]
            and loaded.target_sha256 == original["target_sha256"] and loaded.versions == original["versions"]
            and loaded.inputs == original["inputs_sha256"])


def _position(size: int):
    anywhere = st.integers(0, size - 1)
    trailer = st.integers(max(0, size - 200), size - 1)  # the ZIP's end records: central directory, ZIP64
    return st.one_of(anywhere, trailer)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_bytes_are_refused_or_change_nothing(small, data):
    folder, raw, original = small
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        damaged[data.draw(_position(len(raw)), label="at")] ^= data.draw(st.integers(1, 255), label="mask")
    path = folder / "damaged.ckpt"
    path.write_bytes(bytes(damaged))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = load(path)
        except InputFileError as err:
            assert int(err.exit_code) == 2 and "--resume" in err.located()
            loaded = None
    assert not caught, [str(w.message) for w in caught]
    if loaded is not None:
        assert _same(loaded, original)


def test_the_original_loads_whole(small):
    folder, raw, original = small
    path = folder / "whole.ckpt"
    path.write_bytes(raw)
    assert _same(load(path), original)


def test_a_damaged_zip64_locator_is_bad_input_on_the_command_line(small, tmp_path):
    """zipfile.is_zipfile itself raises on this one (BadZipFile: multiple disks)."""
    folder, raw, _ = small
    damaged = bytearray(raw)
    at = damaged.rfind(b"PK\x06\x07")  # ZIP64 end-of-central-directory locator; +4: its disk number
    damaged[at + 4] ^= 1
    path = tmp_path / "disk.ckpt"
    path.write_bytes(bytes(damaged))
    result = run_cli("run", str(folder / "seed.yaml"), "--resume", str(path), "--json")
    assert result.exit_status == 2
    assert [e["event"] for e in result.lines] == ["error"] and result.lines[0]["kind"] == "input_file"
    assert "cannot read the checkpoint" in result.stderr and "internal error" not in result.stderr


def test_an_unknown_pickle_protocol_warns_nobody(small, tmp_path):
    """torch says "Detected pickle protocol N" as a UserWarning; the content is whole, so it loads quietly."""
    import zipfile

    folder, raw, original = small
    path = tmp_path / "protocol.ckpt"
    with zipfile.ZipFile(folder / "run.ckpt") as archive, zipfile.ZipFile(path, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename.endswith("data.pkl"):
                data = data[:1] + bytes([18]) + data[2:]  # PROTO opcode 0x80, then the protocol number
            out.writestr(info, data)
    with warnings.catch_warnings(record=True) as caught:  # in-process, a warning would reach pytest, not stderr
        warnings.simplefilter("always")
        result = run_cli("run", str(folder / "seed.yaml"), "--resume", str(path), "--max-iters", "6", "--every", "0")
    assert result.exit_status == 1 and not [str(w.message) for w in caught] and "pickle" not in result.stderr

"""Limits that hold for every way in, and the environment's refusals said plainly with exit 2:
archives that declare more than they hold, address-space and cgroup memory limits, a closed stdin,
an output encoding that cannot write the report, a Dask address with no scheduler behind it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli, run_process
from gdfit.errors import GdfitError, ResourceError
from gdfit.files import tensors

SEED = str(ROOT / "configs" / "seed.yaml")


def _npz_declaring(path: Path, columns: dict[str, int]) -> None:
    """An .npz whose members' headers declare `n` float64 values each but hold only 8 bytes."""
    from numpy.lib import format as npy

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, n in columns.items():
            buffer = io.BytesIO()
            npy.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
            archive.writestr(f"{name}.npy", buffer.getvalue() + bytes(8))


def _fit_of(tmp_path: Path, data: str) -> str:
    config = tmp_path / "fit.yaml"
    config.write_text(f"data: {{file: {data}}}\ntarget: {{column: y}}\nmodel: {{expr: 'a * t', params: {{a: 1}}}}\n")
    return str(config)


def test_an_npz_declaring_more_than_the_limit_is_refused_from_its_headers(tmp_path):
    _npz_declaring(tmp_path / "bomb.npz", {"t": 200_000_000, "y": 200_000_000})  # 3.0 GiB declared, ~1 kB stored
    result = run_cli("run", _fit_of(tmp_path, "bomb.npz"))
    assert result.exit_status == 2
    assert "its arrays would unpack to 2.98 GiB; at most 2 GiB of .npz data is read" in result.stderr


def test_an_npz_within_the_size_limit_meets_the_memory_guard_before_it_is_read(tmp_path, monkeypatch):
    _npz_declaring(tmp_path / "big.npz", {"t": 10_000_000, "y": 10_000_000})
    monkeypatch.setattr(tensors, "available_bytes", lambda device: 64 * 2**20)
    result = run_cli("run", _fit_of(tmp_path, "big.npz"))
    assert result.exit_status == 2 and "needs about" in result.stderr and "20,000,000 elements" in result.stderr


def test_an_npz_with_a_2d_array_is_refused_from_its_header(tmp_path):
    np.savez(tmp_path / "m.npz", t=np.zeros((3, 3)), y=np.zeros(3))
    result = run_cli("run", _fit_of(tmp_path, "m.npz"))
    assert result.exit_status == 2 and "array 't' is float64 of shape [3, 3]" in result.stderr


def test_the_address_space_limit_is_free_memory(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * 2**30, resource.RLIM_INFINITY))
    monkeypatch.setattr(tensors, "_proc_field",
                        lambda path, name: 2**30 if name == "VmSize:" else 64 * 2**30)
    assert tensors._address_space_left() == 2 * 2**30
    with pytest.raises(ResourceError, match=r"only 2.00 GiB is free under this process's address-space limit"):
        tensors.guard_memory(2**28, torch.float32, torch.device("cpu"), 2.0, "target")  # 2 GiB wanted
    tensors.guard_memory(2**26, torch.float32, torch.device("cpu"), 2.0, "target")  # 0.5 GiB passes


@pytest.mark.parametrize("files", [{"memory.max": "1073741824", "memory.current": "268435456"},
                                   {"memory/memory.limit_in_bytes": "1073741824",
                                    "memory/memory.usage_in_bytes": "268435456"}])
def test_the_cgroup_limit_less_its_usage_is_free_memory(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert tensors._cgroup_left(str(tmp_path)) == 3 * 2**28


def test_an_unlimited_cgroup_is_no_limit(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")
    assert tensors._cgroup_left(str(tmp_path)) == tensors.UNLIMITED


def test_a_failed_allocation_is_a_resource_error_not_a_bug(monkeypatch):
    import gdfit.cli.run as run_module

    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(run_module, "_descend", refuse)
    result = run_cli("run", SEED)
    assert result.exit_status == 2 and "not enough memory: an allocation failed" in result.stderr


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(monkeypatch, debug):
    import gdfit.cli.run as run_module

    monkeypatch.setattr(run_module, "_descend", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
    monkeypatch.setenv("GDFIT_DEBUG", "0")  # off; --debug turns it on, and the teardown puts back what was
    result = run_cli(*debug, "run", SEED)
    assert result.exit_status == 70
    assert ("Traceback" in result.stderr) == bool(debug)


def test_an_ascii_stdout_gives_exit_2_and_a_hint():
    result = run_process("run", "configs/decay.yaml", env={"PYTHONIOENCODING": "ascii"})
    assert result.exit_status == 2
    assert "the output's encoding (ascii) cannot write" in result.stderr and "PYTHONIOENCODING=utf-8" in result.stderr


def test_a_closed_stdin_is_a_plain_error():
    proc = subprocess.run(["sh", "-c", f'exec "{sys.executable}" -m gdfit run - <&-'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "standard input is closed" in proc.stderr


def test_a_holdout_seed_beyond_torchs_range_is_refused():
    result = run_cli("run", str(ROOT / "configs" / "lowrank.yaml"), "--set",
                     "holdout={fraction: 0.1, seed: 100000000000000000000}")
    assert result.exit_status == 2 and "holdout.seed: must be an integer from -2**63 to 2**64 - 1" in result.stderr


@pytest.mark.parametrize("address,words", [
    ("tcp://[::1", "is not a scheduler address; expected tcp://HOST:PORT"),
    ("foo bar", "is not a scheduler address"),
    ("inproc://x", "is not a scheduler address"),
    ("udp://127.0.0.1:8786", "not udp"),
    ("127.0.0.1:70000", "port 70000 is not between 1 and 65535"),
])
def test_a_malformed_address_is_refused_before_anything_runs(address, words):
    pytest.importorskip("distributed")
    result = run_cli("sweep", SEED, "--grid", "learning_rate=0.5,1", "--backend", "dask", "--address", address)
    assert result.exit_status == 2 and words in result.stderr


def _listener(reply: bytes | None) -> tuple[socket.socket, int]:
    """A loopback server that accepts and then sends `reply` (or nothing) and holds the connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        try:
            conn, _ = server.accept()
            if reply:
                conn.sendall(reply)
            conn.recv(1)  # hold until the client goes away
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


DASK_JOBS = {"sweep": ["sweep", SEED, "--grid", "learning_rate=0.5,1"], "many fits": ["run", "configs/dose-response.yaml"]}


@pytest.mark.parametrize("job", DASK_JOBS)
def test_an_address_with_nothing_listening_is_refused(job):
    pytest.importorskip("distributed")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    result = run_cli(*DASK_JOBS[job], "--backend", "dask", "--address", f"127.0.0.1:{port}")
    assert result.exit_status == 2 and "cannot reach a Dask scheduler" in result.stderr


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4])
def test_a_server_that_is_not_a_scheduler_is_refused(reply):
    pytest.importorskip("distributed")
    from gdfit.sweeps.dask_env import check_address

    server, port = _listener(reply)
    try:
        with pytest.raises(GdfitError, match="does not answer as a Dask scheduler does"):
            check_address(f"tcp://127.0.0.1:{port}", timeout_s=1.0)
    finally:
        server.close()


@pytest.mark.parametrize("job", DASK_JOBS)
def test_address_without_the_dask_backend_is_refused(job):
    result = run_cli(*DASK_JOBS[job], "--address", "tcp://127.0.0.1:8786")
    assert result.exit_status == 2 and "give --backend dask with it" in result.stderr

"""Bounded reads and safe writes, as properties: random bytes of random sizes through files, FIFOs
and devices into every reader; every writer pointed at devices, FIFOs, symlinks and folders."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdfit import reading
from gdfit.reading import TooLarge, read_file, read_stream

SEED = str(ROOT / "configs" / "seed.yaml")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(data=st.binary(max_size=3000), limit=st.integers(0, 3500), block=st.integers(1, 700), text=st.booleans())
def test_read_stream_returns_all_up_to_the_limit_and_refuses_past_it(data, limit, block, text):
    stream = io.StringIO(data.decode("latin-1")) if text else io.BytesIO(data)
    with mock.patch.object(reading, "BLOCK", block):  # small blocks: the limit falls inside, between, at ends
        if len(data) <= limit:
            assert read_stream(stream, limit) == (data.decode("latin-1") if text else data)
        else:
            with pytest.raises(TooLarge) as caught:
                read_stream(stream, limit)
            assert caught.value.size is None and caught.value.limit == limit
            assert stream.tell() <= limit + 1  # stopped at the limit, the rest unread


def _fifo_with(tmp_path: Path, data: bytes) -> tuple[Path, threading.Thread]:
    """A FIFO that a thread fills with `data` (at most a pipe's buffer, so the writer never waits)."""
    fifo = tmp_path / "fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return fifo, writer


@PROPERTY
@given(data=st.binary(max_size=4000), limit=st.integers(0, 4500))
def test_read_file_from_a_fifo_is_bounded_like_a_file(tmp_path, data, limit):
    fifo, writer = _fifo_with(tmp_path, data)
    try:
        assert read_file(fifo, limit) == data
        assert len(data) <= limit
    except TooLarge as err:
        assert len(data) > limit and err.size is None
    writer.join(timeout=10)


@PROPERTY
@given(data=st.binary(max_size=4000), limit=st.integers(0, 4500))
def test_read_file_of_a_regular_file_is_measured_first(tmp_path, data, limit):
    path = tmp_path / "blob"
    path.write_bytes(data)
    try:
        assert read_file(path, limit) == data and len(data) <= limit
    except TooLarge as err:
        assert len(data) > limit and err.size == len(data)  # by fstat, before a byte is read


@pytest.mark.parametrize("limit", [0, 1, 4096, 3 << 20])
def test_read_file_of_dev_zero_stops_at_the_limit(limit):
    with pytest.raises(TooLarge):
        read_file("/dev/zero", limit)


# ------------------------------------------------------------ every reader, through the real CLI

def _outcome(result) -> None:
    """What any input may do: run, or refuse with a gdfit error; never an internal error."""
    assert result.exit_status in (0, 1, 2, 3), (result.exit_status, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


READERS = {
    # name: (file name, arguments given the file's path)
    "config": ("c.yaml", lambda p: ["config", p]),
    "target csv": ("t.csv", None),
    "target npy": ("t.npy", None),
    "target pt": ("t.pt", None),
    "init csv": ("i.csv", None),
    "plot json": ("r.json", lambda p: ["plot", p, "-o", str(Path(p).parent / "o.svg")]),
    "plot jsonl": ("r.jsonl", lambda p: ["plot", p, "-o", str(Path(p).parent / "o.svg")]),
    "resume": ("run.ckpt", lambda p: ["run", SEED, "--resume", p, "--max-iters", "3"]),
}


def _args(reader: str, path: Path) -> list[str]:
    name, args = READERS[reader]
    if args is not None:
        return args(str(path))
    config = path.parent / "uses.yaml"
    key = "init" if reader.startswith("init") else "target"
    head = "target: [[1, 2], [3, 4]]\n" if key == "init" else ""
    config.write_text(f"{head}{key}: {{file: {path.name}}}\nmax_iters: 3\nthreshold: 0\n")
    return ["run", str(config), "--json", "--every", "0"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.one_of(st.binary(max_size=2000), st.binary(min_size=5000, max_size=20000)),
       reader=st.sampled_from(sorted(READERS)))
def test_every_reader_takes_random_bytes_without_an_internal_error(cli, tmp_path, blob, reader):
    path = tmp_path / READERS[reader][0]
    path.write_bytes(blob)
    _outcome(cli(*_args(reader, path)))


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("special", ["/dev/null", "/dev/zero", "folder", "fifo"])
def test_every_reader_refuses_special_files(cli, tmp_path, monkeypatch, reader, special):
    if special == "/dev/zero" and reader.startswith("plot"):
        # the same limit code at 1 MiB: reading 256 MiB of zeros would only make the test slow
        monkeypatch.setattr("gdfit.reading.SAVED_RESULT_BYTES", 2**20)
    path = tmp_path / READERS[reader][0]
    if special == "folder":
        path.mkdir()
    elif special == "fifo":  # filled by a writer, for the readers that read a pipe
        os.mkfifo(path)
        threading.Thread(target=lambda: _fill(path, b"target: [[1]]\n"), daemon=True).start()
    else:
        path.symlink_to(special)
    result = cli(*_args(reader, path))
    _outcome(result)
    if not (special == "fifo" and reader == "config"):  # a config may come from a pipe: <(cat c.yaml)
        assert result.exit_status == 2, (reader, special, result.stderr)


def _fill(fifo: Path, data: bytes) -> None:
    try:
        fd = os.open(fifo, os.O_WRONLY)  # waits for a reader; gdfit may refuse the FIFO unread
    except OSError:
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------ every writer

WRITERS = {
    "run --output": lambda p: ["run", SEED, "--every", "0", "--output", p],
    "run --plot": lambda p: ["run", SEED, "--every", "0", "--plot", p + ".svg" if not p.endswith(".svg") else p],
    "run --checkpoint": lambda p: ["run", SEED, "--every", "0", "--checkpoint", p],
    "grad-demo --dot": lambda p: ["grad-demo", "--dot", p],
    "plot --output": None,
    "sweep --output": lambda p: ["sweep", SEED, "--grid", "learning_rate=1,2", "--output", p],
}


def _writer_args(writer: str, path: Path, tmp_path: Path, cli) -> list[str]:
    if writer == "plot --output":
        saved = tmp_path / "saved.json"
        if not saved.exists():
            assert cli("run", SEED, "--every", "0", "--output", str(saved)).exit_status == 0
        return ["plot", str(saved), "-o", str(path)]
    return WRITERS[writer](str(path))


def _named(writer: str, tmp_path: Path, stem: str) -> Path:
    suffix = ".svg" if "plot" in writer else ".json"
    return tmp_path / f"{stem}{suffix}"


@pytest.mark.parametrize("writer", sorted(WRITERS))
# Devices are refused by the same check as FIFOs (render.document._target); nothing is written
# to here: a broken writer under test would replace the machine's /dev/null (it did, once).
@pytest.mark.parametrize("special", ["fifo", "link to fifo"])
def test_no_writer_replaces_a_fifo(cli, tmp_path, writer, special):
    if "plot" in writer:
        pytest.importorskip("matplotlib")
    path = _named(writer, tmp_path, "out")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    if special == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(fifo)
    result = cli(*_writer_args(writer, path, tmp_path, cli))
    _outcome(result)
    assert result.exit_status == 2 and "is not a regular file" in result.stderr, result.stderr
    assert fifo.is_fifo()
    assert path.is_fifo() if special == "fifo" else path.is_symlink()


def test_every_writer_checks_refuse_a_device_before_writing():
    from gdfit.errors import OutputError
    from gdfit.files.writing import check_writable

    for key in ("--output", "--plot", "--checkpoint", "--dot"):
        with pytest.raises(OutputError, match="is not a regular file"):
            check_writable(Path("/dev/null"), key=key)


@pytest.mark.parametrize("writer", sorted(w for w in WRITERS if w != "sweep --output"))  # a sweep folder is a folder
def test_writers_write_through_symlinks_and_refuse_folders(cli, tmp_path, writer):
    if "plot" in writer:
        pytest.importorskip("matplotlib")
    real = _named(writer, tmp_path, "real")
    old = b"" if writer == "run --checkpoint" else b"old"  # --checkpoint keeps a file that holds something
    real.write_bytes(old)
    link = _named(writer, tmp_path, "link")
    link.symlink_to(real)
    assert cli(*_writer_args(writer, link, tmp_path, cli)).exit_status in (0, 1)
    assert link.is_symlink() and real.read_bytes() != old
    folder = _named(writer, tmp_path, "folder")
    folder.mkdir()
    result = cli(*_writer_args(writer, folder, tmp_path, cli))
    assert result.exit_status == 2 and "is a directory" in result.stderr
    flag = writer.split()[-1]
    assert f": {flag}: " in result.stderr or (flag == "--output" and ": --output: " in result.stderr), result.stderr
